"""The ledger's evidence in bundles (ledger.proof, ledger.checkpoints) and ``verify --witness``, with the
attacks of issue 12: a bundle with records removed, rebuilt and re-signed with the device key and the
ledger key after it was witnessed is rejected; so is one whose tail was moved to the forgery's time, one
witnessed in another device's ledger, and one stripped of its proof."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.bundle import verify_bundle
from agent.bundle.export import export_bundle_with_evidence
from agent.bundle.layout import LEDGER_CHECKPOINTS, LEDGER_PROOF, SIG, SUMS
from agent.bundle.witnessing import envelope
from agent.cli import main
from agent.clock import parse_rfc3339
from agent.devicekey import DeviceKey
from agent.history import History
from agent.home import Home
from agent.ledger import CosignatureSigner, Ledger, TlogProof, parse_note
from tests.conftest import require_program
from tests.unit.journal_forge import forge

SESSION = "s-20261122-LEDGER"
REQUEST = {"technician": "Mallory", "org": "Scam Support", "ticket": "T-1", "reason": "virus removal",
           "duration_s": 1800, "capabilities": ["shell"], "watch": ["/etc"], "source": "cli", "flags": []}


def session_records(t0: float, events: int = 6) -> list[tuple[str, dict, float]]:
    """A session like the agent records: a checkpoint after each decision and every few seconds of events."""
    recs = [("journal-start", {}, t0), ("checkpoint", {}, t0 + 0.01), ("request", REQUEST, t0 + 1),
            ("decision", {"decision": "allow", "how": "click"}, t0 + 2), ("checkpoint", {}, t0 + 2.01),
            ("session-start", {"until": "later"}, t0 + 3)]
    for i in range(events):
        recs.append(("file", {"op": "modified", "path": f"/etc/file{i}"}, t0 + 10 + 20 * i))
        recs.append(("checkpoint", {}, t0 + 15 + 20 * i))
    end = t0 + 20 * events + 20
    recs += [("session-end", {"reason": "customer"}, end), ("seal", {"reason": "customer"}, end + 0.5)]
    return recs


@pytest.fixture
def witness():
    return CosignatureSigner("witness.test/w1", ed25519.Ed25519PrivateKey.generate())


def install(home: Home, journal: bytes) -> None:
    path = home.journal_path(SESSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(journal)
    with History(home) as history:
        history.upsert(SESSION, state="sealed", technician="Mallory", org="Scam Support", ticket="T-1",
                       requested="2026-11-22T03:00:00.000000Z", journal=str(path))


def log_and_witness(home: Home, journal: bytes, witness: CosignatureSigner, *, at=None, delay: float = 2) -> None:
    """What the agent does: each checkpoint and the seal into the ledger, each head sent to the witness,
    who stamps its cosignature ``delay`` s after the line's time (or at ``at``, a fixed time)."""
    with Ledger.open(home) as ledger:
        for line in journal.splitlines(keepends=True):
            seq, ts, kind = envelope(line)
            if kind not in ("checkpoint", "seal"):
                continue
            ledger.append(line.rstrip(b"\n"))
            head = ledger.sign_head()
            when = int(at if at is not None else parse_rfc3339(ts).timestamp() + delay)
            sig = witness.cosign(parse_note(head.note).text.encode(), timestamp=when)
            ledger.record_cosignatures(head.note, [sig], [witness.verifier])


def two_hours_ago() -> float:
    return float(int(time.time()) - 7200)  # whole seconds: the same times give the same lines again


def honest_bundle(home, device_key, witness, tmp_path, name="honest.zip"):
    journal = forge(SESSION, device_key, session_records(two_hours_ago()))
    install(home, journal)
    log_and_witness(home, journal, witness)
    path, evidence = export_bundle_with_evidence(home, SESSION, tmp_path / name)
    return journal, path, evidence


def test_an_honest_witnessed_bundle_verifies_with_its_witness(home, device_key, witness, tmp_path):
    journal, path, evidence = honest_bundle(home, device_key, witness, tmp_path)
    assert evidence.witnessed_by == ("witness.test/w1",) and evidence.found == evidence.lines == 9
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        sums = zf.read(SUMS).decode()
        proof = TlogProof.parse(zf.read(LEDGER_PROOF))
        cps = json.loads(zf.read(LEDGER_CHECKPOINTS))
        verify_txt = zf.read("VERIFY.txt").decode()
    assert {LEDGER_PROOF, LEDGER_CHECKPOINTS} <= names
    assert f"  {LEDGER_PROOF}\n" in sums and f"  {LEDGER_CHECKPOINTS}\n" in sums
    assert proof.index == 8 and len(cps["lines"]) == 8
    assert "witness.test/w1" in verify_txt and "lie in real time" in verify_txt
    verdict = verify_bundle(path, device_key.fingerprint, witnesses=[witness.vkey])
    assert verdict.genuine, verdict.reason
    assert verdict.witness["complete"] and verdict.witness["witnessed_through"] == verdict.witness["last_seq"]
    assert verdict.witness["origin_is_device"]
    # Without --witness: genuine, and it says who the bundle claims witnessed it (unchecked).
    plain = verify_bundle(path)
    assert plain.genuine and plain.witness["cosigners"] == ["witness.test/w1"] and plain.witness["checked"] == []
    # Another witness's key: not genuine, and why.
    other = CosignatureSigner("witness.test/w2", ed25519.Ed25519PrivateKey.generate())
    refused = verify_bundle(path, witnesses=[witness.vkey, other.vkey])
    assert not refused.genuine and refused.exit_code == 1 and "not cosigned by the witness witness.test/w2" in refused.reason


def test_openssh_and_sha256sum_still_check_a_bundle_with_ledger_files(home, device_key, witness, tmp_path):
    require_program("ssh-keygen", "sha256sum")
    _, path, _ = honest_bundle(home, device_key, witness, tmp_path)
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    principal = (folder / "allowed_signers").read_text().split()[0]
    ok = subprocess.run(f"ssh-keygen -Y verify -f allowed_signers -I {principal} -n chaperone-session "
                        "-s SHA256SUMS.sig < SHA256SUMS && sha256sum -c SHA256SUMS", shell=True, cwd=folder,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert f"{LEDGER_PROOF}: OK" in ok.stdout and f"{LEDGER_CHECKPOINTS}: OK" in ok.stdout


def test_records_removed_and_resigned_after_witnessing_are_rejected(home, device_key, witness, tmp_path):
    """The attack of the issue: the technician holds the device key and the ledger key. After the session
    was witnessed, they remove the incriminating record, rebuild the chain with the same times, re-sign
    every checkpoint and the seal, append the new lines to the ledger, sign new heads, and get them
    cosigned (the witness happily cosigns an append), then export."""
    original, honest, _ = honest_bundle(home, device_key, witness, tmp_path)
    t0 = parse_rfc3339(envelope(original.splitlines(True)[0])[1]).timestamp()
    records = [r for r in session_records(t0) if r[1].get("path") != "/etc/file3"]
    assert len(records) == len(session_records(0)) - 1
    forged = forge(SESSION, device_key, records)
    install(home, forged)
    log_and_witness(home, forged, witness, at=time.time())  # cosigned now, two hours after the times they claim
    path, evidence = export_bundle_with_evidence(home, SESSION, tmp_path / "forged.zip")
    assert evidence.witnessed_by == ("witness.test/w1",)
    # Everything a hash chain and a signature can check passes...
    assert verify_bundle(path, device_key.fingerprint).genuine
    # ...but not the witness's times.
    verdict = verify_bundle(path, device_key.fingerprint, witnesses=[witness.vkey])
    assert not verdict.genuine and verdict.exit_code == 1
    assert "first cosigned by witness.test/w1" in verdict.reason and "after it was written" in verdict.reason
    # The records before the removed one were witnessed in time; the removal is after that point.
    assert 0 < verdict.witness["witnessed_through"] < verdict.witness["last_seq"]
    assert verify_bundle(honest, device_key.fingerprint, witnesses=[witness.vkey]).genuine


def test_a_tail_moved_to_the_time_of_the_forgery_is_rejected(home, device_key, witness, tmp_path):
    """The same forger, smarter: they also move the times of everything after the removed record to the
    time of the forgery, so each new checkpoint is cosigned within seconds of its (new) time."""
    original, _, _ = honest_bundle(home, device_key, witness, tmp_path)
    t0 = parse_rfc3339(envelope(original.splitlines(True)[0])[1]).timestamp()
    now = time.time()
    records = []
    moved = False
    for kind, data, ts in session_records(t0):
        if data.get("path") == "/etc/file3":
            moved = True
            continue
        records.append((kind, data, now + (ts - t0) / 100 if moved else ts))
    forged = forge(SESSION, device_key, records)
    install(home, forged)
    log_and_witness(home, forged, witness, delay=1)
    path, _ = export_bundle_with_evidence(home, SESSION, tmp_path / "moved.zip")
    verdict = verify_bundle(path, device_key.fingerprint, witnesses=[witness.vkey])
    assert not verdict.genuine
    assert "not witnessed in time" in verdict.reason


def test_a_journal_witnessed_in_another_ledger_is_rejected(home, device_key, witness, tmp_path):
    """A shadow ledger: the forger records a sanitized journal, in real time, in a ledger of their own
    that the witness also serves. The proof is for another origin than this device's."""
    journal = forge(SESSION, device_key, session_records(two_hours_ago()))
    install(home, journal)
    shadow = Home(tmp_path / "shadow")
    DeviceKey.init(shadow)
    log_and_witness(shadow, journal, witness)
    with Ledger.open(shadow, readonly=True) as ledger:
        shadow_origin = ledger.origin
    shutil.copytree(shadow.path / "ledger", home.path / "ledger")
    (home.path / "settings.json").write_text(json.dumps({"ledger": {"origin": shadow_origin}}))
    path, _ = export_bundle_with_evidence(home, SESSION, tmp_path / "shadow.zip")
    verdict = verify_bundle(path, device_key.fingerprint, witnesses=[witness.vkey])
    assert not verdict.genuine and "not chaperone.local/device/" in verdict.reason


def test_a_bundle_stripped_of_its_proof_is_not_witnessed(home, device_key, witness, tmp_path):
    """Drop ledger.proof and ledger.checkpoints, rewrite SHA256SUMS and re-sign it with the device key."""
    _, path, _ = honest_bundle(home, device_key, witness, tmp_path)
    folder = tmp_path / "stripped"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    (folder / LEDGER_PROOF).unlink()
    (folder / LEDGER_CHECKPOINTS).unlink()
    sums = "".join(line + "\n" for line in (folder / SUMS).read_text().splitlines() if "ledger." not in line)
    (folder / SUMS).write_text(sums)
    (folder / SIG).write_text(device_key.sign(sums.encode()))
    assert verify_bundle(folder, device_key.fingerprint).genuine
    verdict = verify_bundle(folder, device_key.fingerprint, witnesses=[witness.vkey])
    assert not verdict.genuine and "has no ledger.proof" in verdict.reason
    # A proof file the signed SHA256SUMS does not list is refused outright.
    shutil.copy(tmp_path / "stripped" / SUMS, tmp_path / "sums")
    with zipfile.ZipFile(path) as zf:
        (folder / LEDGER_PROOF).write_bytes(zf.read(LEDGER_PROOF))
    assert not verify_bundle(folder).genuine


def test_a_checkpoint_witnessed_late_limits_what_is_proved(home, device_key, witness, tmp_path):
    """An honest journal whose witness was down for ten minutes in the middle: the records after that are
    not proved, and verify says from where."""
    journal = forge(SESSION, device_key, session_records(two_hours_ago()))
    install(home, journal)
    lines = journal.splitlines(keepends=True)
    with Ledger.open(home) as ledger:
        for line in lines:
            seq, ts, kind = envelope(line)
            if kind not in ("checkpoint", "seal"):
                continue
            ledger.append(line.rstrip(b"\n"))
            head = ledger.sign_head()
            lag = 600 if seq == 11 else 2
            sig = witness.cosign(parse_note(head.note).text.encode(), timestamp=int(parse_rfc3339(ts).timestamp() + lag))
            ledger.record_cosignatures(head.note, [sig], [witness.verifier])
    path, _ = export_bundle_with_evidence(home, SESSION, tmp_path / "late.zip")
    verdict = verify_bundle(path, witnesses=[witness.vkey])
    assert not verdict.genuine and "seq 11" in verdict.reason and verdict.witness["witnessed_through"] == 9
    assert verify_bundle(path, witnesses=[witness.vkey], max_lag=900).genuine


def test_export_without_a_witness_says_not_yet_witnessed(home, device_key, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("agent.cli.journal_cmds.DEFAULT_WAIT_S", 1.0)  # the witness is down: wait 1 s, not 10
    journal = forge(SESSION, device_key, session_records(time.time() - 60))
    install(home, journal)
    with Ledger.open(home) as ledger:
        for line in journal.splitlines():
            if b'"type":"checkpoint"' in line or b'"type":"seal"' in line:
                ledger.append(line)
        ledger.sign_head()
    (home.path / "settings.json").write_text(json.dumps(
        {"witness": {"witnesses": [{"url": "http://127.0.0.1:9", "vkey": CosignatureSigner(
            "witness.test/down", ed25519.Ed25519PrivateKey.generate()).vkey}]}}))
    code = main(["export", SESSION, "-o", str(tmp_path / "b.zip"), "--home", str(home.path)])
    out = capsys.readouterr().out
    assert code == 0 and "Not yet witnessed" in out
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert LEDGER_PROOF in zf.namelist()  # signed by the ledger, not cosigned
        assert "no witness had cosigned" in zf.read("VERIFY.txt").decode()
    assert main(["verify", str(tmp_path / "b.zip")]) == 0
    assert "Not yet witnessed" in capsys.readouterr().out
