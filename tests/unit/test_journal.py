"""The journal writer: canonical chained lines, group commit, checkpoints, seal, errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.canonical import canonical_bytes, reference_bytes
from agent.errors import BadLine, JournalError, NotCanonical
from agent.journal import Journal, checkpoint_message, line_hash, verify_journal
from agent.journal.format import ZERO_HASH
from agent.journal.reader import parse_record
from agent.journal.writer import _encode_data
from tests.conftest import require_program, wait_for

FILE_DATA = {
    "op": "modified", "path": "/etc/ssh/sshd_config", "kind": "file", "size": 3301,
    "sha256_before": "a" * 64, "sha256_after": "b" * 64, "secret": False,
    "attribution": {"pid": 4242, "exe": "/usr/bin/vim", "user": "alice", "how": "fanotify"},
    "diff": "--- a\n+++ b\n@@ -1 +1 @@\n-PermitRootLogin no\n+PermitRootLogin yes\n",
}


def lines_of(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records_of(path) -> list[dict]:
    return [json.loads(line) for line in lines_of(path)]


@pytest.fixture
def jpath(home):
    return home.journal_path("s-1")


def test_create_append_seal_gives_a_canonical_chain(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key) as j:
        assert j.append("note", {"author": "tech", "text": "hello ✓"}) == 2
        assert j.append("file", FILE_DATA) == 3
        assert j.seal({"reason": "customer"}) == 4
        assert j.sealed and j.seq == 5
    lines = lines_of(jpath)
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["journal-start", "checkpoint", "note", "file", "seal"]
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["prev"] == ZERO_HASH
    for before, record in zip(lines, records[1:]):
        assert record["prev"] == line_hash(before)
    for line, record in zip(lines, records):
        assert canonical_bytes(record) + b"\n" == line
        assert record["v"] == 1 and record["session"] == "s-1"
        assert record["ts"].endswith("Z") and len(record["ts"]) == 27
    assert records[0]["data"]["device"] == device_key.fingerprint
    assert records[4]["data"]["reason"] == "customer"
    assert records[3]["data"] == FILE_DATA
    assert jpath.stat().st_mode & 0o777 == 0o600
    assert jpath.parent.stat().st_mode & 0o777 == 0o700
    check = verify_journal(jpath)
    assert check.ok, check.reason
    assert (check.records, check.checkpoints, check.unsealed, check.session) == (5, 2, 0, "s-1")


def test_checkpoint_signs_the_documented_bytes(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key) as j:
        j.append("note", {"author": "t", "text": "x"})
        j.checkpoint()
    cp = records_of(jpath)[-1]
    expected = canonical_bytes({"count": 3, "head": cp["prev"], "session": "s-1", "seq": 3,
                                "ts": cp["ts"], "type": "checkpoint"})
    assert checkpoint_message(cp) == expected
    assert cp["data"]["sig"] == device_key.sign(expected)
    assert cp["data"]["key"] == device_key.fingerprint and cp["data"]["count"] == 3


def test_ssh_keygen_accepts_a_checkpoint_signature(tmp_path, home, jpath, device_key):
    require_program("ssh-keygen")
    with Journal.create(jpath, "s-1", device_key) as j:
        j.append("note", {"author": "t", "text": "x"})
        j.seal({"reason": "technician"})
    signers = tmp_path / "allowed_signers"
    signers.write_text(device_key.allowed_signers_line() + "\n")
    for record in records_of(jpath):
        if record["type"] not in ("checkpoint", "seal"):
            continue
        sig = tmp_path / "cp.sig"
        sig.write_text(record["data"]["sig"])
        cmd = ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", device_key.principal,
               "-n", "chaperone-session", "-s", str(sig)]
        good = subprocess.run(cmd, input=checkpoint_message(record), capture_output=True)
        assert good.returncode == 0, good.stderr
        record["data"]["count"] += 1
        bad = subprocess.run(cmd, input=checkpoint_message(record), capture_output=True)
        assert bad.returncode != 0


def test_sync_types_and_seal_rules(jpath, device_key):
    assert {"journal-start", "request", "decision", "session-start", "session-end", "recovery",
            "checkpoint", "seal"} == Journal.SYNC_TYPES
    with Journal.create(jpath, "s-1", device_key) as j:
        with pytest.raises(ValueError):
            j.append("seal", {})
        with pytest.raises(ValueError, match="cannot carry"):
            j.seal({"sig": "forged"})
        j.seal()
        with pytest.raises(JournalError, match="sealed"):
            j.append("note", {"text": "late"})
        with pytest.raises(JournalError, match="sealed"):
            j.checkpoint()
    with pytest.raises(JournalError, match="sealed"):
        Journal.open(jpath, "s-1", device_key)
    with pytest.raises(JournalError, match="already exists"):
        Journal.create(jpath, "s-1", device_key)


def test_opening_another_sessions_journal_is_refused_and_changes_nothing(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key):
        pass
    before = jpath.read_bytes()
    with pytest.raises(JournalError, match="belongs to session 's-1', not 's-2'"):
        Journal.open(jpath, "s-2", device_key)
    assert jpath.read_bytes() == before and not list(jpath.parent.glob("*.torn-*"))


def test_sync_types_are_synced_before_append_returns_and_others_in_groups(jpath, device_key, monkeypatch):
    import agent.journal.writer as writer

    calls = []
    real = writer._datasync

    def recording(fd):
        calls.append(threading.current_thread() is threading.main_thread())
        real(fd)

    monkeypatch.setattr(writer, "_datasync", recording)
    with Journal.create(jpath, "s-1", device_key, sync_interval=3600, checkpoint_interval=3600) as j:
        calls.clear()
        for _ in range(50):
            j.append("file", FILE_DATA)
        assert calls == []  # grouped: left to the background thread
        j.append("decision", {"decision": "allow", "reason": "x" * 10000})  # more than a page
        assert calls == [True]  # synced at once, by the caller
        j.append("note", {"text": "x"}, sync=True)
        assert calls == [True, True]
    with Journal.create(jpath.with_name("other.jsonl"), "s-2", device_key, sync_interval=0.01) as j:
        calls.clear()
        j.append("file", FILE_DATA)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls and calls[0] is False  # the group sync ran on the background thread


@pytest.mark.parametrize("bad", [
    {"x": 1.5}, {"x": [1, {"y": 0.1}]}, {"x": 2**60}, {"x": "lone \udc80"}, {1: "int key"},
    {"é": "non-ascii key"}, {"x": b"bytes"}, {"x": {"y": object()}},
    # orjson would write these; the journal must not (no floats, no types outside JSON)
    {"x": __import__("datetime").datetime(2026, 1, 1)}, {"x": __import__("uuid").UUID(int=1)}, {"x": (1.5,)},
])
def test_values_outside_canonical_json_are_refused_and_nothing_is_written(jpath, device_key, bad):
    with Journal.create(jpath, "s-1", device_key) as j:
        before = jpath.read_bytes()
        with pytest.raises((ValueError, TypeError)):
            j.append("note", bad)
        assert jpath.read_bytes() == before and j.seq == 2
        j.seal()
    assert verify_journal(jpath).ok


def test_concurrent_appends_never_interleave(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key, checkpoint_interval=0.01, sync_interval=0.005) as j:
        def worker(n):
            for i in range(300):
                j.append("file", {**FILE_DATA, "size": n * 1000 + i})

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        j.seal()
    records = records_of(jpath)
    sizes = sorted(r["data"]["size"] for r in records if r["type"] == "file")
    assert sizes == sorted(n * 1000 + i for n in range(4) for i in range(300))
    check = verify_journal(jpath)
    assert check.ok, check.reason


def test_background_thread_checkpoints_while_records_flow(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key, checkpoint_interval=0.05, sync_interval=0.01) as j:
        deadline = time.monotonic() + 10
        while sum(r["type"] == "checkpoint" for r in records_of(jpath)) < 3 and time.monotonic() < deadline:
            j.append("note", {"author": "t", "text": "tick"})
            time.sleep(0.01)
        count = sum(r["type"] == "checkpoint" for r in records_of(jpath))
        assert count >= 3
        # no records flowing: no new checkpoints
        time.sleep(0.2)
        idle = sum(r["type"] == "checkpoint" for r in records_of(jpath))
        time.sleep(0.2)
        assert sum(r["type"] == "checkpoint" for r in records_of(jpath)) == idle
        j.seal()
    assert verify_journal(jpath).ok


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs, to fill the disk for real."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(path) -> None:
    """Write ``path`` until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def _fill(j, n=1000) -> list[int]:
    """Append ``n`` bulky file records (more than the 64 KiB disk holds); their seqs."""
    filler = {**FILE_DATA, "diff": "x" * 3000}
    return [j.append("file", filler) for _ in range(n)]


def test_full_disk_holds_records_keeps_the_file_valid_and_says_so(tiny_tmpfs, device_key):
    path = tiny_tmpfs / "s" / "session.jsonl"
    j = Journal.create(path, "s-1", device_key, hold_bytes=8 << 20)
    seqs = _fill(j)  # nothing raises: what the disk refuses is held in memory
    assert seqs == list(range(2, 1002))  # every record kept its place in the chain
    failing = j.failing
    assert failing is not None and failing["error"] == "the disk is full" and failing["lost"] == 0
    on_disk = len(lines_of(path))
    assert failing["held"] == 1002 - on_disk and path.read_bytes().endswith(b"\n")
    with pytest.raises(JournalError) as err:  # a checkpoint must be durable: it says why it cannot be
        j.checkpoint()
    message = str(err.value)
    assert "disk is full" in message and message.count(".") <= 2 and "\n" not in message
    j.close()  # the held records are lost with the process (logged); the file is valid up to its last good one
    check = verify_journal(path)
    assert not check.ok and check.unsealed == on_disk and "no seal" in check.reason
    subprocess.run(["mount", "-o", "remount,size=1m", str(tiny_tmpfs)], check=True)
    with Journal.open(path, "s-1", device_key) as j2:
        assert j2.recovered["set_aside"] is None and j2.recovered["last_seq"] == on_disk - 1
        j2.seal()
    assert verify_journal(path).ok


def test_consent_records_are_refused_not_held(tiny_tmpfs, device_key):
    path = tiny_tmpfs / "s" / "session.jsonl"
    j = Journal.create(path, "s-1", device_key)
    fill_disk(tiny_tmpfs / "filler")  # the disk is full before the journal ever failed
    seq = j.seq
    with pytest.raises(JournalError, match="disk is full"):
        j.append("decision", {"decision": "allow", "reason": "x" * 10000})  # more than a page
    assert j.seq == seq and j.failing is None  # nothing changed: the decision is refused, not held
    j.close()


def test_writing_resumes_when_space_comes_back_with_a_gap_record(tiny_tmpfs, device_key):
    path = tiny_tmpfs / "s" / "session.jsonl"
    with Journal.create(path, "s-1", device_key, checkpoint_interval=0.05, sync_interval=0.01) as j:
        seqs = _fill(j)
        held = j.failing["held"]
        assert held > 0
        j.append("session-end", {"reason": "customer", "by": None})  # held too, in its place
        subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
        assert wait_for(lambda: j.failing is None)
        j.seal()
    records = records_of(path)
    assert [r["seq"] for r in records] == list(range(len(records)))
    files = [r for r in records if r["type"] == "file"]
    assert [r["seq"] for r in files] == seqs  # every one written, in order, with its first seq
    end = next(i for i, r in enumerate(records) if r["type"] == "session-end")
    gap = next(r for r in records if r["type"] == "gap")
    assert records[end + 1]["type"] == "gap" and gap["seq"] > seqs[-1]
    assert gap["data"]["cause"] == "disk" and gap["data"]["held"] == held + 1 and gap["data"]["lost"] == 0
    assert gap["data"]["from"] <= files[-1]["ts"] <= gap["data"]["to"] <= gap["ts"]
    assert not any(r["type"] == "loss" for r in records)
    assert records[end + 2]["type"] == "checkpoint"  # what was held is signed at once
    assert verify_journal(path).ok


def test_past_the_memory_bound_records_are_counted_in_a_loss_record(tiny_tmpfs, device_key):
    path = tiny_tmpfs / "s" / "session.jsonl"
    with Journal.create(path, "s-1", device_key, hold_bytes=64 << 10, sync_interval=0.01) as j:
        seqs = _fill(j, 200)
        seqs += [j.append("process", {"op": "started", "pid": i}) for i in range(7)]
        lost = seqs.count(-1)
        kept = [s for s in seqs if s != -1]
        assert lost >= 7 and kept == list(range(2, 2 + len(kept)))  # the kept ones are a prefix: no hole
        assert j.failing["lost"] == lost
        subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
        assert wait_for(lambda: j.failing is None)
        j.seal()
    records = records_of(path)
    (gap,) = [r["data"] for r in records if r["type"] == "gap"]
    (loss,) = [r["data"] for r in records if r["type"] == "loss"]
    assert gap["lost"] == lost == loss["records"]
    assert loss["by_type"] == {"file": lost - 7, "process": 7} and loss["from"] <= loss["to"]
    assert [r["seq"] for r in records if r["type"] == "file"] == [s for s in kept]
    assert verify_journal(path).ok


def test_reopen_sets_a_torn_tail_aside_and_recovers(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key) as j:
        for i in range(5):
            j.append("note", {"author": "t", "text": f"n{i}"})
    good = jpath.read_bytes()
    torn = b'{"data":{"author":"t","text":"half'
    with open(jpath, "ab") as fh:
        fh.write(torn)
    with Journal.open(jpath, "s-1", device_key) as j:
        rec = j.recovered
        assert rec["set_aside"]["file"] == "session.jsonl.torn-1"
        assert rec["set_aside"]["bytes"] == len(torn)
        assert rec["last_seq"] == 6
        j.seal({"reason": "recovery"})
    assert (jpath.parent / "session.jsonl.torn-1").read_bytes() == torn
    assert jpath.read_bytes().startswith(good)
    types = [r["type"] for r in records_of(jpath)]
    assert types[-3:] == ["recovery", "checkpoint", "seal"]
    assert verify_journal(jpath).ok


def test_reopen_sets_aside_a_tail_that_does_not_chain(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key) as j:
        j.append("note", {"author": "t", "text": "kept"})
    lines = lines_of(jpath)
    jpath.write_bytes(b"".join(lines + [lines[-1]]))  # a duplicated record
    with open(jpath.with_name("session.jsonl.torn-1"), "wb") as fh:
        fh.write(b"an older torn file")
    with Journal.open(jpath, "s-1", device_key) as j:
        assert j.recovered["set_aside"]["file"] == "session.jsonl.torn-2"
        j.seal()
    assert jpath.with_name("session.jsonl.torn-1").read_bytes() == b"an older torn file"
    assert jpath.with_name("session.jsonl.torn-2").read_bytes() == lines[-1]
    assert verify_journal(jpath).ok


def test_reopen_of_a_cleanly_closed_journal_records_the_gap(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key) as j:
        j.append("note", {"author": "t", "text": "before"})
    last_ts = records_of(jpath)[-1]["ts"]
    with Journal.open(jpath, "s-1", device_key, recovery={"resumed": False}) as j:
        assert j.recovered == {"set_aside": None, "last_seq": 2, "last_ts": last_ts, "resumed": False}
        j.seal()
    assert records_of(jpath)[3]["data"] == j.recovered
    assert not list(jpath.parent.glob("*.torn-*"))
    assert verify_journal(jpath).ok


def test_a_long_lived_journal_can_be_reopened_quietly(jpath, device_key):
    with Journal.create(jpath, "s-1", device_key) as j:
        j.append("alarm", {"tool": "ssh", "detail": "refused"})
    before = jpath.read_bytes()
    with Journal.open(jpath, "s-1", device_key, mark_restart=False) as j:
        assert j.recovered is None and j.seq == 3
        j.append("alarm", {"tool": "ssh", "detail": "refused again"})
    assert jpath.read_bytes().startswith(before)
    assert [r["type"] for r in records_of(jpath)] == ["journal-start", "checkpoint", "alarm", "alarm"]
    with open(jpath, "ab") as fh:
        fh.write(b'{"torn')
    with Journal.open(jpath, "s-1", device_key, mark_restart=False) as j:
        assert j.recovered["set_aside"]["bytes"] == 6  # something was set aside: that is recorded
        j.seal()
    assert verify_journal(jpath).ok


def test_reopen_of_an_empty_or_garbage_file_restarts_the_chain(jpath, device_key):
    jpath.parent.mkdir(parents=True)
    jpath.write_bytes(b"not a journal\n")
    with Journal.open(jpath, "s-1", device_key) as j:
        assert j.recovered["set_aside"]["bytes"] == 14 and j.recovered["last_seq"] is None
        j.seal()
    assert [r["type"] for r in records_of(jpath)][:2] == ["journal-start", "recovery"]
    assert verify_journal(jpath).ok


def test_missing_journal_and_unwritable_place_are_one_sentence(tmp_path, device_key):
    with pytest.raises(JournalError, match="There is no journal"):
        Journal.open(tmp_path / "nope" / "session.jsonl", "s", device_key)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="Cannot write the journal"):
        Journal.create(blocker / "s" / "session.jsonl", "s", device_key)


_BURST_CHILD = r"""
import sys
from agent.devicekey import DeviceKey
from agent.home import Home
from agent.journal import Journal
home = Home.at(sys.argv[1])
j = Journal.create(home.journal_path("s-kill"), "s-kill", DeviceKey.load(home), checkpoint_interval=0.05)
print("ready", flush=True)
data = {"op": "created", "path": "/tmp/x", "kind": "file", "size": 1, "sha256_after": "c" * 64}
while True:
    j.append("file", data)
"""


def test_sigkill_mid_burst_then_recovery_seal_export_verify(home, device_key):
    path = home.journal_path("s-kill")
    child = subprocess.Popen([sys.executable, "-c", _BURST_CHILD, str(home.path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 30
        while path.stat().st_size < 200_000 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -9
    # SIGKILL cannot split one write(2); a power cut can. Leave the torn bytes
    # it would leave, so recovery has a tail to set aside.
    torn = lines_of(path)[-1][:37]
    with open(path, "ab") as fh:
        fh.write(torn)
    with Journal.open(path, "s-kill", device_key) as j:
        assert j.recovered["set_aside"]["bytes"] == len(torn)
        j.seal({"reason": "recovery"})
    assert path.with_name("session.jsonl.torn-1").read_bytes() == torn
    check = verify_journal(path)
    assert check.ok and check.records > 500 and check.checkpoints >= 3, check.reason

    from agent.bundle import export_bundle, verify_bundle

    out = export_bundle(home, "s-kill", home.path.parent / "kill.zip")
    verdict = verify_bundle(out, fingerprint=device_key.fingerprint)
    assert verdict.genuine and verdict.pinned, verdict.reason


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(data=st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=10), _json_values, max_size=8))
def test_the_hot_path_encoding_is_exactly_canonical(data):
    assert _encode_data(data) == canonical_bytes(data) == reference_bytes(data)


@settings(max_examples=400, deadline=None)
@given(value=_json_values | st.lists(_json_values, max_size=3) | st.text()
       | st.lists(st.tuples(st.text(max_size=4), _json_values), max_size=3))  # sorted items, as inventory hashes
def test_canonical_bytes_is_the_reference_encoding_or_refuses_as_it_does(value):
    """canonical_bytes (orjson) and the definition (the standard library) agree on every value, and refuse
    the same ones (lone surrogates among any text) with NotCanonical."""
    _same_outcome(reference_bytes, canonical_bytes, value, NotCanonical)


def _same_outcome(reference, actual, value, error) -> None:
    """``actual(value)`` gives what ``reference(value)`` gives, and refuses (``error``) where it does."""
    try:
        expected = reference(value)
    except error:
        with pytest.raises(error):
            actual(value)
        return
    assert actual(value) == expected


def test_nesting_deeper_than_the_writer_writes_is_not_canonical():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ValueError):
        _encode_data({"x": deep})  # what the journal's writer refuses, a verifier does not take as canonical
    with pytest.raises(NotCanonical, match="canonical JSON"):
        canonical_bytes({"x": deep})


@settings(max_examples=15, deadline=None)
@given(records=st.lists(st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=10), _json_values,
                                        max_size=6), min_size=1, max_size=5))
def test_appended_lines_are_canonical_and_verify(tmp_path_factory, device_key_for_hypothesis, records):
    path = tmp_path_factory.mktemp("h") / "session.jsonl"
    with Journal.create(path, "s-h", device_key_for_hypothesis) as j:
        for data in records:
            j.append("note", data)
        j.seal()
    lines = lines_of(path)
    assert [json.loads(line)["data"] for line in lines[2:-1]] == records
    assert all(canonical_bytes(json.loads(line)) + b"\n" == line for line in lines)
    assert verify_journal(path).ok


@pytest.fixture(scope="module")
def device_key_for_hypothesis(tmp_path_factory):
    from agent.devicekey import DeviceKey
    from agent.home import Home

    key, _ = DeviceKey.init(Home(tmp_path_factory.mktemp("k") / "home"))
    return key


def test_read_records_yields_records_and_says_which_lines_are_not(jpath, device_key):
    from agent.journal import read_records

    with Journal.create(jpath, "s-1", device_key) as j:
        j.append("note", {"author": "t", "text": "one"})
    good = jpath.read_bytes()
    stream = io.BytesIO(good + b"not json\n" + b'{"data":{}')
    items = list(read_records(stream))
    assert [r["type"] for r in items[:3]] == ["journal-start", "checkpoint", "note"]
    assert isinstance(items[3], BadLine) and "not valid JSON" in str(items[3])
    assert isinstance(items[4], BadLine) and "cut short" in str(items[4])


def _reference_parse(line: bytes) -> dict:
    """parse_record as it was: the standard library reads every line (the definition orjson is held to)."""
    from agent.journal import reader

    record = reader._loads(line)
    if type(record) is not dict:
        raise BadLine("it is not a JSON object")
    return reader._checked(record, line, True)


_GOOD_LINE = canonical_bytes({"data": {"count": 3, "head": "a" * 64, "key": "SHA256:k", "n": -5, "s": "é\u2028\\\""},
                              "prev": "b" * 64, "seq": 3, "session": "s-1", "ts": "2026-11-22T03:04:05.123456Z",
                              "type": "checkpoint", "v": 1}) + b"\n"
_NUMBERS = [b"0", b"-0", b"1.0", b"1e2", b"9007199254740993", b"9223372036854775808", b"-9223372036854775809",
            b"18446744073709551616", b"NaN", b"Infinity", b"01", b'"\\ud800"', b'"\\u00e9"', b'"\xc3\xa9"', b'"\xff"',
            b"[]", b"{}", b'{"a":1,"a":2}', b"true", b"null", b'"\\/"', b" 1"]


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_parse_record_accepts_and_refuses_exactly_what_the_standard_library_path_does(data):
    """orjson reads lines now; on any line, canonical or mutated, the result is the one the standard library
    path gives: the same record, or a refusal."""
    line = bytearray(_GOOD_LINE)
    for _ in range(data.draw(st.integers(0, 3))):
        how = data.draw(st.sampled_from(["byte", "cut", "number", "insert"]))
        at = data.draw(st.integers(0, len(line) - 1))
        if how == "byte":
            line[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del line[at:at + data.draw(st.integers(1, 8))]
        elif how == "number":
            start = line.find(b'"n":')
            if start >= 0:
                end = line.find(b",", start)
                line[start + 4:end] = data.draw(st.sampled_from(_NUMBERS))
        else:
            line[at:at] = data.draw(st.sampled_from([b" ", b'"x":1,', b"\\", b'"', b"}", b"\n"]))
    _same_outcome(_reference_parse, parse_record, bytes(line), BadLine)
