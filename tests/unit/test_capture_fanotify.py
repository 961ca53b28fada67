"""Attribution of file changes: fanotify for real when this kernel allows it (the filesystem-wide
capture names the writer), and the labelled guess without root."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import pytest

from agent.capture.fanotify import FAN_CLOSE_WRITE, FanotifyUnavailable, GuessAttributor, parse_events
from agent.capture.lineage import Lineage
from agent.capture.writes import WriteRecorder
from tests.conftest import wait_for


class NullSink:
    def emit(self, type: str, data: dict) -> None:
        pass


@pytest.fixture
def recorder(tmp_path):
    lineage = Lineage()
    lineage.start()
    rec = WriteRecorder(NullSink(), lineage, [tmp_path / "in"])
    (tmp_path / "in").mkdir()
    try:
        rec.start()
    except FanotifyUnavailable as exc:
        lineage.stop()
        pytest.skip(f"fanotify is not available here: {exc}")
    yield rec
    rec.stop()
    lineage.stop()


def test_fanotify_names_the_writing_process(recorder, tmp_path):
    target = tmp_path / "in" / "written.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nopen(sys.argv[1], 'w').write('x')\ntime.sleep(1)", str(target)]
    )
    found = wait_for(lambda: recorder.attribute(os.fsencode(target)))
    child.wait()
    assert found["how"] == "fanotify" and found["pid"] == child.pid
    assert found["exe"] and found["user"] and found["technician"] is False


def test_fanotify_ignores_files_outside_the_roots_and_our_own_writes(recorder, tmp_path):
    (tmp_path / "in" / "ours.txt").write_text("by the agent itself")
    subprocess.run(["sh", "-c", f"echo x > {tmp_path}/outside.txt; echo y > {tmp_path}/in/theirs.txt"], check=True)
    assert wait_for(lambda: recorder.attribute(os.fsencode(tmp_path / "in" / "theirs.txt")))
    assert recorder.attribute(os.fsencode(tmp_path / "outside.txt")) is None
    assert recorder.attribute(os.fsencode(tmp_path / "in" / "ours.txt")) is None


def test_without_root_fanotify_refuses_in_one_sentence(tmp_path):
    """Drop to 'nobody' in a forked child: the filesystem-wide capture cannot start, and says why."""
    if os.geteuid() != 0:
        with pytest.raises(FanotifyUnavailable, match="needs root"):
            WriteRecorder(NullSink(), None, [tmp_path]).start()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                WriteRecorder(NullSink(), None, [tmp_path]).start()
                why = None
            except FanotifyUnavailable as exc:
                why = str(exc)
            os.write(write_end, json.dumps(why).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        why = json.loads(f.read())
    os.waitpid(pid, 0)
    assert why == "fanotify needs root."


def test_the_guess_prefers_the_technicians_newest_process_and_says_it_is_a_guess():
    newest = {"pid": 30, "exe": "/usr/bin/cron", "user": "root", "technician": False, "label": None}
    technician = {"pid": 20, "exe": "/usr/bin/vim", "user": "tech", "technician": True, "label": "S1"}
    guess = GuessAttributor(lambda: [newest, technician])
    assert guess.attribute(b"/etc/hosts") == {"pid": 20, "exe": "/usr/bin/vim", "user": "tech", "how": "guess",
                                               "technician": True, "label": "S1"}
    assert GuessAttributor(lambda: []).attribute(b"/etc/hosts") is None


def test_the_guess_over_a_real_lineage_names_a_process_started_after_it(tmp_path):
    lineage = Lineage(prefer="sampled", sample_interval=0.05)
    lineage.start()
    sub = lineage.subscribe()  # sampling runs while someone listens
    try:
        since = time.monotonic_ns() - 20_000_000  # sampled start times are clock ticks (10 ms)
        child = subprocess.Popen(["sleep", "1"])
        guess = GuessAttributor(lambda: lineage.recent(since_ns=since))
        assert wait_for(lambda: child.pid in [c["pid"] for c in lineage.recent(since_ns=since)])
        found = guess.attribute(b"/x")  # the newest: the child, or whatever the machine started since
        candidates = lineage.recent(since_ns=since)
        child.kill()
        child.wait()
    finally:
        sub.close()
        lineage.stop()
    assert found["how"] == "guess" and found["pid"] in [c["pid"] for c in candidates]
    assert os.getpid() not in [c["pid"] for c in candidates]


def test_event_parsing_walks_variable_length_records():
    first = struct.pack("=IBBHQii", 24, 3, 0, 24, FAN_CLOSE_WRITE, 7, 1234)
    second = struct.pack("=IBBHQii", 32, 3, 0, 24, FAN_CLOSE_WRITE, -1, 99) + b"\0" * 8
    assert parse_events(first + second + b"\1\2") == [(FAN_CLOSE_WRITE, 7, 1234), (FAN_CLOSE_WRITE, -1, 99)]
    assert parse_events(struct.pack("=IBBHQii", 0, 3, 0, 24, 0, 0, 0)) == []
