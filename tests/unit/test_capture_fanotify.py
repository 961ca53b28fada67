"""Attribution of file changes: fanotify for real when this kernel allows it, and the labelled guess."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

from agent.capture.fanotify import (
    FAN_CLOSE_WRITE,
    FanotifyAttributor,
    FanotifyUnavailable,
    GuessAttributor,
    make_attributor,
    parse_events,
)
from agent.capture.processes import SeenProcess
from tests.conftest import wait_for


def fanotify_or_skip(roots):
    try:
        return FanotifyAttributor(roots)
    except FanotifyUnavailable as exc:
        pytest.skip(f"fanotify is not available here: {exc}")


def test_fanotify_names_the_writing_process(tmp_path):
    attributor = fanotify_or_skip([os.fsencode(tmp_path)])
    target = tmp_path / "written.txt"
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys, time\nopen(sys.argv[1], 'w').write('x')\ntime.sleep(1)", str(target)]
        )
        found = wait_for(lambda: attributor.attribute(os.fsencode(target)))
        child.wait()
    finally:
        attributor.close()
    assert found["how"] == "fanotify"
    assert found["pid"] == child.pid
    assert found["exe"] and found["user"]


def test_fanotify_ignores_files_outside_the_roots_and_our_own_writes(tmp_path):
    (tmp_path / "in").mkdir()
    attributor = fanotify_or_skip([os.fsencode(tmp_path / "in")])
    try:
        (tmp_path / "in" / "ours.txt").write_text("by the agent itself")
        subprocess.run(["sh", "-c", f"echo x > {tmp_path}/outside.txt; echo y > {tmp_path}/in/theirs.txt"], check=True)
        assert wait_for(lambda: attributor.attribute(os.fsencode(tmp_path / "in" / "theirs.txt")))
        assert attributor.attribute(os.fsencode(tmp_path / "outside.txt")) is None
        assert attributor.attribute(os.fsencode(tmp_path / "in" / "ours.txt")) is None
    finally:
        attributor.close()


def test_without_root_the_guess_is_used_and_the_reason_given(tmp_path):
    """Drop to 'nobody' in a forked child: fanotify refuses, make_attributor falls back cleanly."""
    if os.geteuid() != 0:
        attributor, why = make_attributor([os.fsencode(tmp_path)], None)
        assert isinstance(attributor, GuessAttributor) and why
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            attributor, why = make_attributor([os.fsencode(tmp_path)], None)
            os.write(write_end, json.dumps([type(attributor).__name__, why]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        name, why = json.loads(f.read())
    os.waitpid(pid, 0)
    assert name == "GuessAttributor"
    assert why == "fanotify needs root."


class FakeSampler:
    """The sampler's view of recent processes (its own tests run it for real)."""

    def __init__(self, procs):
        self._procs = procs

    def recent(self):
        return self._procs


def test_the_guess_prefers_the_technicians_newest_process_and_says_it_is_a_guess():
    newest = SeenProcess(30, 1, 300.0, False, {"exe": "/usr/bin/cron", "user": "root"})
    technician = SeenProcess(20, 1, 200.0, True, {"exe": "/usr/bin/vim", "user": "tech"})
    guess = GuessAttributor(FakeSampler([newest, technician]))
    assert guess.attribute(b"/etc/hosts") == {"pid": 20, "exe": "/usr/bin/vim", "user": "tech", "how": "guess"}
    assert GuessAttributor(FakeSampler([])).attribute(b"/etc/hosts") is None


def test_event_parsing_walks_variable_length_records():
    first = struct.pack("=IBBHQii", 24, 3, 0, 24, FAN_CLOSE_WRITE, 7, 1234)
    second = struct.pack("=IBBHQii", 32, 3, 0, 24, FAN_CLOSE_WRITE, -1, 99) + b"\0" * 8
    assert parse_events(first + second + b"\1\2") == [(FAN_CLOSE_WRITE, 7, 1234), (FAN_CLOSE_WRITE, -1, 99)]
    assert parse_events(struct.pack("=IBBHQii", 0, 3, 0, 24, 0, 0, 0)) == []
