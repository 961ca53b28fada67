"""The process sampler, against real short-lived processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from agent.capture.processes import ProcessSampler
from tests.conftest import wait_for


class ListSink:
    def __init__(self):
        self.records: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict) -> None:
        with self._lock:
            self.records.append((type, dict(data)))

    def processes(self, pid: int, op: str) -> list[dict]:
        with self._lock:
            return [d for t, d in self.records if t == "process" and d["pid"] == pid and d["op"] == op]


def test_a_process_living_200_ms_is_caught_with_start_end_and_a_redacted_command_line():
    sink = ListSink()
    sampler = ProcessSampler(sink, interval=0.1)
    sampler.start()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(0.2)", "--password", "hunter2"]
        )
        child.wait()
        assert wait_for(lambda: sink.processes(child.pid, "ended"))
    finally:
        sampler.stop()
    started = sink.processes(child.pid, "started")[0]
    ended = sink.processes(child.pid, "ended")[0]
    assert started["ppid"] == os.getpid()
    assert started["exe"] and started["user"]
    assert started["cmdline"][:2] == [sys.executable, "-c"]
    assert "hunter2" not in repr(started["cmdline"]) and "--password" in started["cmdline"]
    assert started["started"].endswith("Z") and ended["ended"] >= ended["started"]
    assert started["technician"] is False and started["how"] == "sampled"


def test_processes_from_before_the_session_are_baseline_not_records():
    before = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    sink = ListSink()
    sampler = ProcessSampler(sink, interval=0.05)
    sampler.start()
    try:
        before.kill()
        before.wait()
        marker = subprocess.Popen(["sleep", "0.3"])
        marker.wait()
        assert wait_for(lambda: sink.processes(marker.pid, "ended"))
    finally:
        sampler.stop()
    assert sink.processes(before.pid, "started") == [] and sink.processes(before.pid, "ended") == []


def test_the_technicians_processes_and_their_children_are_marked():
    # The technician's login (sshd's session process) exists before what it starts: it is known
    # to technician_pids() before the sampler can see its children.
    shell = subprocess.Popen(["sh", "-c", "read line; sleep 0.3"], stdin=subprocess.PIPE)
    sink = ListSink()
    sampler = ProcessSampler(sink, technician_pids=lambda: [shell.pid], interval=0.05)
    sampler.start()
    try:
        shell.stdin.write(b"go\n")
        shell.stdin.close()
        other = subprocess.Popen(["sleep", "0.3"])
        shell.wait()
        other.wait()
        assert wait_for(lambda: sink.processes(other.pid, "ended"))
        assert wait_for(lambda: [d for t, d in list(sink.records) if t == "process" and d["ppid"] == shell.pid
                                 and d["op"] == "ended"])
    finally:
        sampler.stop()
    with sink._lock:
        children = [d for t, d in sink.records if t == "process" and d["ppid"] == shell.pid and d["op"] == "started"]
    assert [c["technician"] for c in children] == [True]
    assert children[0]["cmdline"] == ["sleep", "0.3"]
    assert sink.processes(other.pid, "started")[0]["technician"] is False


def test_a_broken_technician_callback_means_unknown_not_a_crash():
    def broken():
        raise RuntimeError("session gone")

    sink = ListSink()
    sampler = ProcessSampler(sink, technician_pids=broken, interval=0.05)
    sampler.start()
    try:
        child = subprocess.Popen(["sleep", "0.3"])
        child.wait()
        assert wait_for(lambda: sink.processes(child.pid, "ended"))
    finally:
        sampler.stop()
    assert sink.processes(child.pid, "started")[0]["technician"] is False
