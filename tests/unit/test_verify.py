"""``chaperone verify``: what it catches, what it says, and its exit codes (0 / 1 / 2)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import warnings
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import sshsig
from agent.bundle import export_bundle, verify_bundle
from agent.bundle.layout import NAMESPACE
from agent.bundle.source import snapshot
from agent.canonical import canonical_bytes
from agent.cli import main
from agent.devicekey import DeviceKey
from agent.journal import Journal, line_hash, verify_journal
from agent.review.examine import examine
from agent.sshkeys import blob_to_line, fingerprint
from agent.sshwire import ssh_string
from tests.conftest import require_program
from tests.samples import SyntheticJournal, realistic_session, write_bundle
from tests.unit.test_bundle import write_session

SUMMED = ("session.jsonl", "report.html", "VERIFY.txt", "allowed_signers")


def other_key(name="chaperone@other") -> DeviceKey:
    return DeviceKey(private_key=ed25519.Ed25519PrivateKey.generate(), principal=name)


def resign(folder, key: DeviceKey) -> None:
    """What someone holding ``key`` can do: rewrite allowed_signers, SHA256SUMS and its signature."""
    (folder / "allowed_signers").write_text(key.allowed_signers_line() + "\n")
    sums = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in SUMMED).encode()
    (folder / "SHA256SUMS").write_bytes(sums)
    (folder / "SHA256SUMS.sig").write_text(key.sign(sums))


def journal_lines(folder) -> list[bytes]:
    return (folder / "session.jsonl").read_bytes().splitlines(keepends=True)


@pytest.fixture
def bundle(home, device_key, tmp_path):
    write_session(home, device_key, records=[("note", {"author": "bob", "text": f"n{i}"}) for i in range(5)])
    return export_bundle(home, "s-1", f"{tmp_path}/bundle/")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["verify", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- cannot read: exit 2 ---------------------------------------------------------------------

def test_missing_path_not_a_zip_and_truncated_zip_exit_2(tmp_path, bundle, capsys):
    assert run(capsys, tmp_path / "nope.zip")[0] == 2
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    code, out, err = run(capsys, junk)
    assert code == 2 and out == "" and err.count("\n") == 1 and "not a zip file" in err
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as zf:
        for p in bundle.iterdir():
            zf.write(p, p.name)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size - 30])
    assert run(capsys, cut)[0] == 2
    assert run(capsys, whole)[0] == 0


def test_damaged_compressed_journal_cannot_be_read_and_the_review_says_so(tmp_path, bundle, capsys):
    """A zip whose journal's deflated bytes are damaged: exit 2 with one sentence, from ``verify`` and in a
    review's entry (the journal is inflated once into memory and read from there; nothing half-read passes)."""
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(bundle.iterdir()):
            zf.write(p, p.name)
    with zipfile.ZipFile(whole) as zf:
        info = zf.getinfo("session.jsonl")
    data = bytearray(whole.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for at in range(start + 8, start + info.compress_size - 4, 7):  # flip bits all through the deflate stream
        data[at] ^= 0x5A
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    code, out, err = run(capsys, damaged)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "cannot be read to its end" in err
    with snapshot(damaged) as bundle:
        entry = examine(bundle)
    assert entry["genuine"] is False and entry["readable"] is False and "cannot be read" in entry["reason"]
    assert "summary_error" not in entry and "technician" not in entry


def test_enormous_line_and_invalid_utf8_cannot_be_read(bundle, device_key, capsys):
    lines = journal_lines(bundle)
    (bundle / "session.jsonl").write_bytes(b"".join(lines[:3]) + b'{"data":"' + b"x" * (4 << 20) + b'"}\n')
    resign(bundle, device_key)
    code, _, err = run(capsys, bundle)
    assert code == 2 and "line 4 cannot be read: it is longer than 4 MiB" in err
    bad = lines[2].replace(b"bob@", b"b\xffb@")
    assert bad != lines[2]
    (bundle / "session.jsonl").write_bytes(b"".join(lines[:2]) + bad + b"".join(lines[3:]))
    resign(bundle, device_key)
    code, _, err = run(capsys, bundle)
    assert code == 2 and "line 3 (seq 2) is not valid UTF-8" in err


def test_deeply_nested_json_is_a_bad_record_not_a_crash(bundle, device_key, capsys):
    lines = journal_lines(bundle)
    (bundle / "session.jsonl").write_bytes(b"[" * 100_000 + b"\n" + b"".join(lines))
    resign(bundle, device_key)
    code, out, _ = run(capsys, bundle)
    assert code == 1 and "line 1 (seq 0) is not a journal record: it is nested too deeply" in out
    report = bundle.parent / "r.html"
    assert main(["report", str(bundle), "-o", str(report)]) == 1  # written, and not genuine
    assert "nested too deeply" in report.read_text()


def test_zip_bomb_is_not_inflated(tmp_path, capsys):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("session.jsonl", b"\0" * (8 << 20))
    code, _, err = run(capsys, bomb)
    assert code == 2 and "inflates" in err


# --- not genuine: exit 1 ---------------------------------------------------------------------

def test_a_record_turned_into_a_new_type_and_rechained_is_caught(bundle, device_key, capsys):
    """The technician rewrites a note into a record of a type the journal never had (a line the verifier
    reads on its fast path the first time it sees that type), fixes every later line's prev so the chain
    holds, and re-signs the bundle's manifest even with the device key: the checkpoints and the seal
    signed the old heads, so the journal is still refused."""
    lines = journal_lines(bundle)
    at = next(i for i, line in enumerate(lines) if b'"type":"note"' in line)
    lines[at] = lines[at].replace(b'"type":"note"', b'"type":"note-x"').replace(b'"n0"', b'"ok"')
    for i in range(at + 1, len(lines)):
        old_prev = lines[i].split(b'"prev":"', 1)[1][:64]
        lines[i] = lines[i].replace(b'"prev":"' + old_prev, b'"prev":"' + line_hash(lines[i - 1]).encode(), 1)
    (bundle / "session.jsonl").write_bytes(b"".join(lines))
    resign(bundle, device_key)
    code, out, _ = run(capsys, bundle)
    assert code == 1 and "NOT GENUINE" in out.upper()
    assert "does not commit to the chain" in out or "bad signature" in out, out


def test_a_changed_journal_byte_names_the_line_and_seq(bundle, capsys):
    data = bytearray((bundle / "session.jsonl").read_bytes())
    at = data.index(b'"n2"') + 2
    data[at] ^= 0x01
    (bundle / "session.jsonl").write_bytes(bytes(data))
    code, out, _ = run(capsys, bundle, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["exit_code"] == 1 and not verdict["genuine"] and verdict["readable"]
    assert verdict["file"] == "session.jsonl" and (verdict["line"], verdict["seq"]) == (9, 8)
    assert verdict["reason"].startswith("session.jsonl does not match SHA256SUMS")
    assert "line 9 (seq 8) does not chain" in verdict["reason"]


@pytest.mark.parametrize("change, expected", [
    (lambda b: (b / "SHA256SUMS").write_text((b / "SHA256SUMS").read_text().replace("  VERIFY", " *VERIFY")),
     "SHA256SUMS.sig is not a valid signature"),
    (lambda b: (b / "SHA256SUMS.sig").write_text(sshsig.armor(sshsig.dearmor((b / "SHA256SUMS.sig").read_text()))
                                                  .replace("\n", "\r\n")),
     "SHA256SUMS.sig is not a valid signature"),
    (lambda b: (b / "report.html").write_text("<p>nothing to see</p>"), "report.html does not match SHA256SUMS"),
    (lambda b: (b / "VERIFY.txt").unlink(), "The bundle lacks VERIFY.txt."),
    (lambda b: (b / "notes.txt").write_text("extra"), "The bundle holds notes.txt, which SHA256SUMS does not list."),
    (lambda b: (b / "allowed_signers").write_text("garbage\n"), "allowed_signers is not one line"),
    (lambda b: (b / "sub").mkdir(), "The bundle holds 'sub', which is not a plain file."),
])
def test_changed_or_missing_files(bundle, capsys, change, expected):
    change(bundle)
    code, out, _ = run(capsys, bundle)
    assert code == 1 and out.startswith("NOT GENUINE: ") and expected in out and out.count("\n") == 1


def test_a_bundle_resigned_with_another_key_fails_when_pinned(bundle, device_key, capsys):
    forger = other_key()
    resign(bundle, forger)
    code, out, _ = run(capsys, bundle, "--fingerprint", device_key.fingerprint)
    assert code == 1 and f"signed by the key {forger.fingerprint}, not by the pinned device key" in out
    # unpinned, the journal's own signatures still give it away
    code, out, _ = run(capsys, bundle)
    assert code == 1 and "names the device key" in out


def test_a_complete_forgery_is_caught_only_by_pinning(home, device_key, tmp_path, capsys):
    forger = other_key()
    path = tmp_path / "forged" / "session.jsonl"
    with Journal.create(path, "s-1", forger) as j:
        j.seal()
    folder = tmp_path / "forged"
    for name in ("report.html", "VERIFY.txt"):
        (folder / name).write_text("forged")
    resign(folder, forger)
    code, out, _ = run(capsys, folder)
    assert code == 0 and "not pinned" in out and forger.fingerprint in out
    code, out, _ = run(capsys, folder, "--fingerprint", device_key.fingerprint.removeprefix("SHA256:"))
    assert code == 1 and "pinned" in out


def test_checkpoints_signed_by_another_key_are_caught(home, device_key, tmp_path, capsys):
    path = write_session(home, device_key, seal=False)
    with Journal.open(path, "s-1", other_key()) as j:  # someone else's key continues the journal
        j.seal()
    check = verify_journal(path)
    assert not check.ok and "not by the device" in check.reason
    check = verify_journal(path, device_key.public_blob)
    assert not check.ok and "not by the bundle's key" in check.reason and check.seq == 6


def test_cut_right_after_a_checkpoint_or_with_records_after_the_seal(bundle, device_key, capsys):
    lines = journal_lines(bundle)
    checkpoint_at = max(i for i, line in enumerate(lines) if b'"type":"checkpoint"' in line)
    (bundle / "session.jsonl").write_bytes(b"".join(lines[: checkpoint_at + 1]))
    resign(bundle, device_key)
    code, out, _ = run(capsys, bundle)
    assert code == 1 and "has no seal" in out and f"its {checkpoint_at + 1} records are unsealed" in out
    verdict = verify_bundle(bundle)
    assert verdict.unsealed == checkpoint_at + 1

    (bundle / "session.jsonl").write_bytes(b"".join(lines))
    resign(bundle, device_key)
    assert verify_bundle(bundle).genuine


def test_records_after_the_seal_are_unsealed(tmp_path, device_key):
    path = tmp_path / "j.jsonl"
    with Journal.create(path, "s", device_key) as j:
        j.seal()
    sealed = path.read_bytes()
    assert verify_journal(path).ok
    # a record chained after the seal, as a writer ignoring the seal would add it
    extra = canonical_bytes({"data": {"text": "late"}, "prev": line_hash(sealed.splitlines(keepends=True)[-1]),
                             "seq": 3, "session": "s", "ts": "2026-11-22T03:04:05.000000Z", "type": "note",
                             "v": 1}) + b"\n"
    path.write_bytes(sealed + extra)
    check = verify_journal(path)
    assert not check.ok and check.unsealed == 1 and (check.line, check.seq) == (4, 3)
    assert "comes after the seal on line 3: records after a seal are unsealed" in check.reason


def test_the_first_bad_record_is_named_by_line_and_seq(bundle):
    lines = journal_lines(bundle)
    swapped = lines[:4] + [lines[5], lines[4]] + lines[6:]
    check = verify_journal(io.BytesIO(b"".join(swapped)))
    assert (check.line, check.seq) == (5, 5) and not check.ok
    assert check.reason == ("session.jsonl line 5 (seq 5) is out of order, seq 4 was expected there: "
                            "a record was removed, inserted, duplicated or moved.")
    dropped = lines[:4] + lines[5:]
    check = verify_journal(io.BytesIO(b"".join(dropped)))
    assert (check.line, check.seq) == (5, 5) and "seq 4 was expected" in check.reason
    check = verify_journal(io.BytesIO(b"".join(lines[:-1]) + lines[-1][:-5]))
    assert check.line == len(lines) and "is cut short: the journal was truncated" in check.reason


def _zip_with(tmp_path, entries) -> str:
    out = tmp_path / "odd.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return out


@pytest.mark.parametrize("name", ["../evil", "dir/session.jsonl", "..", "a\\b"])
def test_zip_names_that_could_escape_are_refused(tmp_path, bundle, capsys, name):
    entries = [(p.name, p.read_bytes()) for p in bundle.iterdir()] + [(name, b"x")]
    code, out, _ = run(capsys, _zip_with(tmp_path, entries))
    assert code == 1 and "no genuine bundle has" in out


def test_a_file_twice_in_a_zip_is_refused(tmp_path, bundle, capsys):
    entries = [(p.name, p.read_bytes()) for p in bundle.iterdir()]
    code, out, _ = run(capsys, _zip_with(tmp_path, entries + [entries[0]]))
    assert code == 1 and "twice" in out


def test_a_bad_fingerprint_argument_is_a_usage_error(bundle, capsys):
    code, _, err = run(capsys, bundle, "--fingerprint", "MD5:00:11")
    assert code == 2 and "is not a key fingerprint" in err


def test_verify_json_for_a_genuine_bundle(bundle, device_key, capsys):
    code, out, _ = run(capsys, bundle, "--json", "--fingerprint", device_key.fingerprint)
    verdict = json.loads(out)
    assert code == 0 and verdict["genuine"] and verdict["pinned"] and verdict["records"] == 12
    assert {"genuine", "readable", "reason", "fingerprint", "pinned", "session", "records", "unsealed"} <= set(verdict)


def test_report_of_a_tampered_bundle_says_not_verified(bundle, tmp_path, capsys):
    (bundle / "report.html").write_text("x")
    out = tmp_path / "r.html"
    assert main(["report", str(bundle), "-o", str(out)]) == 1
    html = out.read_text()
    assert "NOT GENUINE</b>report.html does not match" in html and "Genuine:" not in html
    assert main(["report", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert "There is no bundle" in capsys.readouterr().err


def test_exit_codes_from_a_real_process(bundle, tmp_path, chaperone_cmd):
    import subprocess

    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"\xff\xfe not a zip")
    genuine = subprocess.run([*chaperone_cmd, "verify", str(bundle)], capture_output=True, text=True, timeout=60)
    (bundle / "VERIFY.txt").write_text("changed")
    tampered = subprocess.run([*chaperone_cmd, "verify", str(bundle)], capture_output=True, text=True, timeout=60)
    unreadable = subprocess.run([*chaperone_cmd, "verify", str(junk)], capture_output=True, text=True, timeout=60)
    assert (genuine.returncode, tampered.returncode, unreadable.returncode) == (0, 1, 2)
    for done in (genuine, tampered, unreadable):
        assert "Traceback" not in done.stderr and (done.stdout + done.stderr).count("\n") <= 4  # verdict, key, witnesses, mode


class _NeutralPointKey:
    """A forger's "key": the neutral point of Ed25519, with the signature R = neutral point, S = 0, which
    OpenSSL (and ssh-keygen) accept for every message. Nobody holds a private key for it."""

    principal = "chaperone@pc-forged"
    public = bytes([1]) + bytes(31)
    signature = public + bytes(32)

    @property
    def public_blob(self) -> bytes:
        return sshsig.ed25519_public_blob(ed25519.Ed25519PublicKey.from_public_bytes(self.public))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_blob)

    def allowed_signers_line(self) -> str:
        return f'{self.principal} namespaces="{NAMESPACE}" {blob_to_line(self.public_blob)}'

    def sign(self, message: bytes) -> str:
        return sshsig.armor(sshsig.MAGIC + sshsig.VERSION.to_bytes(4, "big") + ssh_string(self.public_blob)
                            + ssh_string(NAMESPACE.encode()) + ssh_string(b"") + ssh_string(b"sha512")
                            + ssh_string(ssh_string(b"ssh-ed25519") + ssh_string(self.signature)))


def test_a_bundle_signed_throughout_by_a_key_of_small_order_is_refused(tmp_path, capsys):
    """The forger writes any journal they like and "signs" every checkpoint, the seal and SHA256SUMS with
    the one signature that verifies for every message under the neutral point. ssh-keygen accepts the bundle
    (the fingerprint is what tells an auditor it is not the device's); Chaperone refuses it outright."""
    forger = _NeutralPointKey()
    journal = SyntheticJournal("s-forged", forger)
    realistic_session(journal, customer_processes=5)
    folder = write_bundle(tmp_path / "forged", forger, journal.bytes(), as_folder=True)
    verdict = verify_bundle(folder)
    assert not verdict.genuine and verdict.file == "SHA256SUMS.sig", verdict.reason
    assert main(["verify", str(folder)]) == 1
    assert "is not a valid signature" in capsys.readouterr().out
    require_program("ssh-keygen", "sha256sum")
    keygen = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", "allowed_signers", "-I", forger.principal, "-n",
                             NAMESPACE, "-s", "SHA256SUMS.sig"], cwd=folder,
                            input=(folder / "SHA256SUMS").read_bytes(), capture_output=True)
    assert keygen.returncode == 0 and b"Good" in keygen.stdout  # why the fingerprint must always be checked
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder).returncode == 0


@pytest.mark.parametrize("as_folder", [False, True])
def test_a_bundle_swapped_after_its_verdict_cannot_borrow_it_for_its_report(tmp_path, monkeypatch, as_folder):
    """As the technician who can write where the client keeps the bundle: let ``chaperone report`` verify
    the genuine bundle, then swap in one whose journal says something else before the report is written.
    The report is written from the same read of the bundle as the verdict."""
    import agent.cli.journal_cmds as journal_cmds

    key = DeviceKey(ed25519.Ed25519PrivateKey.generate(), "chaperone@pc")
    journal = SyntheticJournal("s-swap", key)
    realistic_session(journal, customer_processes=5)
    genuine = journal.bytes()
    forged = genuine.replace(b"Driver reinstalled", b"Nothing was changed", 1)
    path = write_bundle(tmp_path / ("b" if as_folder else "b.zip"), key, genuine, as_folder=as_folder)
    tampered = write_bundle(tmp_path / ("t" if as_folder else "t.zip"), key, forged, as_folder=as_folder)
    real = journal_cmds.verify_bundle

    def verify_then_swap(*args, **kwargs):
        verdict = real(*args, **kwargs)
        if as_folder:
            (path / "session.jsonl").write_bytes((tampered / "session.jsonl").read_bytes())
        else:
            path.write_bytes(tampered.read_bytes())
        return verdict

    monkeypatch.setattr(journal_cmds, "verify_bundle", verify_then_swap)
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    html = out.read_text()
    assert "Driver reinstalled" in html and "Nothing was changed" not in html


def test_a_journal_swapped_between_its_check_and_its_ledger_evidence_is_not_read(tmp_path, monkeypatch):
    """As whoever can write the folder a large bundle lies in: a journal larger than what is kept in memory is
    read twice by ``verify`` (its chain, then its ledger evidence). Swap another journal in after the chain
    was checked: the evidence must still be read from the journal that was checked."""
    import agent.bundle.verify as verify_module

    key = DeviceKey(ed25519.Ed25519PrivateKey.generate(), "chaperone@pc")
    journal = SyntheticJournal("s-large", key)
    realistic_session(journal, customer_processes=5)
    checked = journal.bytes()
    folder = write_bundle(tmp_path / "b", key, checked, as_folder=True)
    monkeypatch.setattr(verify_module, "KEEP", 0)  # stream the journal, as for one above 64 MiB
    real_verify, real_evidence = verify_module.verify_journal, verify_module.check_evidence
    seen: list[bytes] = []

    def verify_then_swap(*args, **kwargs):
        result = real_verify(*args, **kwargs)
        (folder / "session.jsonl").write_bytes(checked.replace(b"Driver reinstalled", b"Nothing was changed", 1))
        return result

    def evidence(lines, *args, **kwargs):
        seen.append(b"".join(lines))
        return real_evidence(iter(seen[-1].splitlines(keepends=True)), *args, **kwargs)

    monkeypatch.setattr(verify_module, "verify_journal", verify_then_swap)
    monkeypatch.setattr(verify_module, "check_evidence", evidence)
    assert verify_bundle(folder).genuine
    assert seen == [checked]
