"""The device ledger (agent.ledger.ledger): its key and origin, signed heads, cosignatures, proofs,
export, and what happens when its files are cut or changed while the agent is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.devicekey import DeviceKey
from agent.errors import LedgerError
from agent.ledger import (
    Checkpoint,
    CosignatureSigner,
    Ledger,
    NoteError,
    TlogProof,
    default_origin,
    leaf_hash,
    ledger_identity,
    open_note,
    parse_note,
    verify_inclusion,
    vkey_verifier,
)
from agent.ledger.ledger import CHECKPOINT, ledger_dir
from agent.ledger.store import ENTRIES, HASHES, INDEX, LedgerStore
from tests.unit.test_ledger_merkle import reference_root


def lines(n: int, start: int = 0) -> list[bytes]:
    return [b'{"data":{"count":%d},"type":"checkpoint"}' % i for i in range(start, start + n)]


def witness(name: str = "witness.example/w1") -> CosignatureSigner:
    return CosignatureSigner(name, ed25519.Ed25519PrivateKey.generate())


def test_identity_origin_and_key(home):
    origin, vkey = ledger_identity(home)
    fingerprint = DeviceKey.load(home).fingerprint
    assert origin == default_origin(fingerprint)
    assert origin.startswith("chaperone.local/device/") and "+" not in origin and origin.count("/") == 2
    assert vkey.startswith(origin + "+") and vkey_verifier(vkey).name == origin
    key = ledger_dir(home) / "key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert ledger_identity(home) == (origin, vkey)  # made once
    (home.path / "settings.json").write_text(json.dumps({"ledger": {"origin": "example.org/fleet/pc-7"}}))
    origin2, vkey2 = ledger_identity(home)
    assert origin2 == "example.org/fleet/pc-7" and vkey2.startswith("example.org/fleet/pc-7+")


def test_a_key_others_can_read_is_refused(home):
    ledger_identity(home)
    os.chmod(ledger_dir(home) / "key", 0o644)
    with pytest.raises(LedgerError, match="chmod 600"):
        ledger_identity(home)


def test_signed_heads_are_c2sp_checkpoints_over_synced_entries(home):
    items = lines(10)
    with Ledger.open(home) as ledger:
        for e in items:
            ledger.append(e)
        head = ledger.sign_head()
        assert ledger.store.synced_size == 10
        note, _found = open_note(head.note, [ledger.verifier])
        cp = Checkpoint.from_note(note)
        assert (cp.origin, cp.size, cp.root) == (ledger.origin, 10, reference_root(items))
        assert ledger.sign_head() is head  # nothing new: the same head
        assert (ledger_dir(home) / CHECKPOINT).read_bytes() == head.note
    with Ledger.open(home) as again:
        assert again.last_signed.checkpoint == head.checkpoint


def test_cosignatures_are_kept_and_give_a_tlog_proof(home):
    w1, w2 = witness("w.example/one"), witness("w.example/two")
    items = lines(5)
    with Ledger.open(home) as ledger:
        for e in items:
            ledger.append(e)
        head = ledger.sign_head()
        text = parse_note(head.note).text.encode()
        ledger.record_cosignatures(head.note, [w1.cosign(text)], [w1.verifier, w2.verifier])
        both = ledger.record_cosignatures(head.note, [w2.cosign(text)], [w1.verifier, w2.verifier])
        assert both.witnesses == ("w.example/one", "w.example/two")
        _, found = open_note(both.note, [ledger.verifier, w1.verifier, w2.verifier])
        assert len(found) == 3
        # A cosignature by a witness we do not know is not kept; one that fails is refused.
        with pytest.raises(NoteError):
            ledger.record_cosignatures(head.note, [witness("w.example/stranger").cosign(text)], [w1.verifier])
        forged = w1.cosign(text)
        forged = type(forged)(forged.name, forged.key_id, forged.signature[:-1] + bytes([forged.signature[-1] ^ 1]))
        with pytest.raises(NoteError):
            ledger.record_cosignatures(head.note, [forged], [w1.verifier])
        assert ledger.cosigned_covering(4, [w1.verifier, w2.verifier], quorum=2) == both
        assert ledger.cosigned_covering(5) is None  # entry 5 does not exist yet
        proof = TlogProof.parse(ledger.tlog_proof(3, both))
        note, _ = open_note(proof.checkpoint, [ledger.verifier, w1.verifier])
        cp = Checkpoint.from_note(note)
        verify_inclusion(proof.proof, 3, cp.size, leaf_hash(items[3]), cp.root)
    with Ledger.open(home) as again:  # kept on disk
        assert again.last_cosigned.note == both.note
        assert len(again.cosigned_heads()) == 2


def test_a_torn_cosigned_line_is_skipped(home):
    w = witness()
    with Ledger.open(home) as ledger:
        ledger.append(b"x")
        head = ledger.sign_head()
        ledger.record_cosignatures(head.note, [w.cosign(parse_note(head.note).text.encode())], [w.verifier])
    with open(ledger_dir(home) / "cosigned.jsonl", "ab") as fh:
        fh.write(b'{"at":"2026-01-01T00:00:00.000000Z","note":"tor')
    with Ledger.open(home) as ledger:
        assert ledger.last_cosigned.size == 1 and len(ledger.cosigned_heads()) == 1


def test_entries_cut_while_the_agent_was_stopped_are_detected(home, tmp_path):
    """The attack: stop the agent, cut the ledger's three files back consistently (a valid smaller
    ledger), restart. The last signed head says how many entries there were."""
    items = lines(12)
    with Ledger.open(home) as ledger:
        for e in items:
            ledger.append(e)
        ledger.sign_head()
    folder = ledger_dir(home)
    keep = 8
    data = (folder / ENTRIES).read_bytes()
    os.truncate(folder / ENTRIES, sum(len(e) + 1 for e in items[:keep]))
    os.truncate(folder / INDEX, keep * 8)
    os.truncate(folder / HASHES, (2 * keep - (keep).bit_count()) * 32)
    with pytest.raises(LedgerError, match="entries were removed"):
        Ledger.open(home)
    # Rewriting an entry and rebuilding every file (a forked history of the same size) is caught too.
    forged = [e.replace(b'"count":3}', b'"count":9}') for e in items]
    assert forged != items and len(data) == sum(len(e) + 1 for e in forged)
    with LedgerStore.open(tmp_path / "forged") as store:
        for e in forged:
            store.append(e)
    for name in (ENTRIES, INDEX, HASHES):
        (folder / name).write_bytes((tmp_path / "forged" / name).read_bytes())
    with pytest.raises(LedgerError, match="no longer matches its last signed head"):
        Ledger.open(home)


def test_a_forged_signed_head_is_refused(home):
    with Ledger.open(home) as ledger:
        ledger.append(b"x")
        ledger.sign_head()
    path = ledger_dir(home) / CHECKPOINT
    path.write_bytes(path.read_bytes().replace(b"\n1\n", b"\n0\n"))
    with pytest.raises(LedgerError, match="not signed by the ledger key"):
        Ledger.open(home)


def test_export_writes_entries_and_heads_for_a_client(home, tmp_path):
    w = witness()
    items = lines(7)
    with Ledger.open(home) as ledger:
        for e in items:
            ledger.append(e)
        head = ledger.sign_head()
        cosigned = ledger.record_cosignatures(head.note, [w.cosign(parse_note(head.note).text.encode())], [w.verifier])
        ledger.append(b"after the head")
        out = tmp_path / "export"
        exported = ledger.export(out)
    assert exported.size == 8  # the writer signs a head over everything first
    assert (out / "entries").read_bytes() == b"".join(e + b"\n" for e in items) + b"after the head\n"
    assert (out / "origin").read_text().strip() == ledger.origin
    assert (out / "vkey").read_text().strip() == ledger.vkey
    assert (out / "cosigned" / "7").read_bytes() == cosigned.note
    note, _ = open_note((out / "checkpoint").read_bytes(), [vkey_verifier((out / "vkey").read_text().strip())])
    assert Checkpoint.from_note(note).root == reference_root(items + [b"after the head"])


def test_cli_ledger_and_init_show_origin_and_key(home, chaperone_cmd, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(chaperone_cmd + ["init", "--json", "--home", str(home.path)], capture_output=True,
                         text=True, check=True, env=env)
    info = json.loads(out.stdout)
    origin, vkey = ledger_identity(home)
    assert info["ledger"] == {"origin": origin, "vkey": vkey}
    with Ledger.open(home) as ledger:
        ledger.append(b"one")
        ledger.sign_head()
        # While the agent holds the ledger, the command reads it without writing.
        out = subprocess.run(chaperone_cmd + ["ledger", "--json", "--home", str(home.path)], capture_output=True,
                             text=True, check=True, env=env)
        shown = json.loads(out.stdout)
        assert shown["origin"] == origin and shown["vkey"] == vkey and shown["size"] == 1
        assert shown["signed"]["size"] == 1 and shown["cosigned"] is None
        text = subprocess.run(chaperone_cmd + ["ledger", "--home", str(home.path)], capture_output=True,
                              text=True, check=True, env=env).stdout
        assert "has not left the machine" in text
        out = subprocess.run(chaperone_cmd + ["ledger", "export", "-o", str(tmp_path / "x"), "--home", str(home.path)],
                             check=False, capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "x" / "entries").read_bytes() == b"one\n"
    bad = subprocess.run(chaperone_cmd + ["ledger", "--home", str(tmp_path / "nohome")], capture_output=True,
                         text=True, env=env, check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "chaperone init" in bad.stderr
    assert sys.executable  # the commands ran with this interpreter
