"""Interop with an implementation no one here wrote: Go's golang.org/x/mod/sumdb/note and sumdb/tlog
(Debian's golang-golang-x-mod-dev), through the small program in tests/interop/ledgerinterop.

Go checks our checkpoint notes (with a witness's cosignature beside the log's signature, which it must
ignore), our inclusion proofs (tlog.CheckRecord) and our consistency proofs (tlog.CheckTree); and we
check the notes and proofs Go makes. Mutated proofs are rejected on both sides."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.ledger import (
    Checkpoint,
    CosignatureSigner,
    Ledger,
    ProofError,
    leaf_hash,
    open_note,
    parse_note,
    verify_consistency,
    verify_inclusion,
    vkey_verifier,
)
from agent.ledger.merkle import consistency_proof, inclusion_proof, tree_hash
from tests.conftest import ROOT, require_program
from tests.unit.test_ledger_merkle import MemoryTree

pytestmark = pytest.mark.e2e
GOPATH = "/usr/share/gocode"


@pytest.fixture(scope="module")
def interop(tmp_path_factory) -> Path:
    require_program("go")
    if not (Path(GOPATH) / "src/golang.org/x/mod/sumdb/tlog/tlog.go").exists():
        require_program(f"{GOPATH}/src/golang.org/x/mod/sumdb/tlog/tlog.go")
    out = tmp_path_factory.mktemp("go") / "ledgerinterop"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": "",
           "GOCACHE": str(out.parent / "cache"), "HOME": str(out.parent)}
    build = subprocess.run(["go", "build", "-o", str(out), "./tests/interop/ledgerinterop"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=False, timeout=300)
    assert build.returncode == 0, build.stderr
    return out


def call(program: Path, mode: str, request: dict) -> dict:
    out = subprocess.run([str(program), mode], input=json.dumps(request), capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def b64(hashes) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def flipped(hashes: list[bytes], i: int) -> list[bytes]:
    out = list(hashes)
    out[i] = bytes([out[i][0] ^ 1]) + out[i][1:]
    return out


def test_go_verifies_our_notes_and_proofs(interop, home):
    entries = [b'{"data":{"count":%d},"type":"checkpoint"}' % i for i in range(37)]
    witness = CosignatureSigner("witness.test/go", ed25519.Ed25519PrivateKey.generate())
    with Ledger.open(home) as ledger:
        for e in entries:
            ledger.append(e)
        head = ledger.sign_head()
        cosigned = ledger.record_cosignatures(
            head.note, [witness.cosign(parse_note(head.note).text.encode())], [witness.verifier])
        inclusion = [(i, s) for s in (1, 2, 7, 8, 16, 31, 37) for i in {0, s // 2, s - 1}]
        consistency = [(o, n) for n in (2, 8, 13, 32, 37) for o in {1, n // 3 or 1, n - 1, n}]
        good_inc = [{"index": i, "size": s, "proof": b64(ledger.inclusion_proof(i, s))} for i, s in inclusion]
        good_con = [{"old": o, "new": n, "proof": b64(ledger.consistency_proof(o, n))} for o, n in consistency]
        bad_inc = [{"index": 20, "size": 37, "proof": b64(flipped(ledger.inclusion_proof(20, 37), 2))},
                   {"index": 21, "size": 37, "proof": b64(ledger.inclusion_proof(20, 37))},
                   {"index": 20, "size": 37, "proof": b64(ledger.inclusion_proof(20, 37)[:-1])}]
        bad_con = [{"old": 13, "new": 37, "proof": b64(flipped(ledger.consistency_proof(13, 37), 0))},
                   {"old": 12, "new": 37, "proof": b64(ledger.consistency_proof(13, 37))}]
        vkey = ledger.vkey
    result = call(interop, "verify", {
        "vkey": vkey, "note": cosigned.note.decode(), "entries": [e.decode() for e in entries],
        "inclusion": good_inc + bad_inc, "consistency": good_con + bad_con})
    assert result["note_ok"], result.get("note_error")
    assert (result["size"], result["root"]) == (37, base64.b64encode(head.checkpoint.root).decode())
    assert result["origin"] == head.checkpoint.origin
    assert result["roots_match"] is True
    assert result["inclusion"] == [True] * len(good_inc) + [False] * len(bad_inc)
    assert result["consistency"] == [True] * len(good_con) + [False] * len(bad_con)
    # A note whose size was changed is refused by Go's note.Open.
    tampered = cosigned.note.decode().replace("\n37\n", "\n36\n")
    assert call(interop, "verify", {"vkey": vkey, "note": tampered, "entries": []})["note_ok"] is False


def test_we_verify_gos_notes_and_proofs(interop):
    entries = [f"go entry {i}" for i in range(45)]
    inclusion = [(i, s) for s in (1, 3, 16, 45) for i in {0, s // 2, s - 1}]
    consistency = [(o, n) for n in (3, 16, 45) for o in {1, n // 2, n}]
    made = call(interop, "make", {"name": "go.example/log", "entries": entries,
                                  "inclusion": [{"index": i, "size": s} for i, s in inclusion],
                                  "consistency": [{"old": o, "new": n} for o, n in consistency]})
    verifier = vkey_verifier(made["vkey"])
    note, found = open_note(made["note"].encode(), [verifier])
    assert found == [verifier]
    cp = Checkpoint.from_note(note)
    assert (cp.origin, cp.size) == ("go.example/log", 45)
    tree = MemoryTree([e.encode() for e in entries])
    roots = {int(s): base64.b64decode(r) for s, r in made["roots"].items()}
    assert all(tree_hash(s, tree.read) == r for s, r in roots.items()) and roots[45] == cp.root
    for item in made["inclusion"]:
        proof = [base64.b64decode(h) for h in item["proof"]]
        i, s = item["index"], item["size"]
        assert proof == inclusion_proof(i, s, tree.read)  # the same proof, byte for byte
        verify_inclusion(proof, i, s, leaf_hash(entries[i].encode()), roots[s])
        if proof:
            with pytest.raises(ProofError):
                verify_inclusion(flipped(proof, len(proof) - 1), i, s, leaf_hash(entries[i].encode()), roots[s])
    for item in made["consistency"]:
        proof = [base64.b64decode(h) for h in item["proof"]]
        o, n = item["old"], item["new"]
        assert proof == consistency_proof(o, n, tree.read)
        verify_consistency(proof, o, roots[o], n, roots[n])
        if proof:
            with pytest.raises(ProofError):
                verify_consistency(flipped(proof, 0), o, roots[o], n, roots[n])
