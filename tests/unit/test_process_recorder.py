"""The process recorder over the real lineage: every exec, the technician's in full, the customer's as counts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil
import pytest

from agent.capture.lineage import PROC_CONNECTOR, SAMPLED, Lineage
from agent.capture.processes import ProcessRecorder
from tests.conftest import wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the proc connector needs root")


class ListSink:
    def __init__(self):
        self.records: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict) -> None:
        with self._lock:
            self.records.append((type, data))

    def of(self, type: str) -> list[dict]:
        with self._lock:
            return [d for t, d in self.records if t == type]


@pytest.fixture
def lineage():
    lin = Lineage(prefer=PROC_CONNECTOR)
    lin.start()
    yield lin
    lin.stop()


def technician_shell(script: str) -> subprocess.Popen:
    return subprocess.Popen(["setsid", "sh", "-c", f"read go; {script}"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)


def go(shell: subprocess.Popen) -> None:
    shell.stdin.write(b"go\n")
    shell.stdin.close()
    shell.wait(timeout=120)


@needs_root
def test_the_technicians_programs_in_full_the_customers_as_names_and_counts(lineage, tmp_path):
    secret_file = tmp_path / "customer-private-notes.txt"
    target = tmp_path / "technician-file"
    target.write_text("x")
    # (A file of the test's own: a chmod of a shared file such as /dev/null breaks the machine for others.)
    shell = technician_shell(f"chmod 600 {target}; "
                             f"{sys.executable} -c 'import time; time.sleep(0.3)' --password hunter2")
    sink = ListSink()
    recorder = ProcessRecorder(sink, lineage, label="S1", summary_s=3600)
    assert lineage.mark(shell.pid, "S1")
    recorder.start()
    try:
        go(shell)
        customer = subprocess.run(["cat", str(secret_file)], capture_output=True)  # the customer's own program
        assert customer.returncode != 0
        assert wait_for(lambda: [d for d in sink.of("process") if d["op"] == "ended" and "python" in (d["exe"] or "")])
    finally:
        recorder.stop()
    technician = [d for d in sink.of("process") if d["op"] == "started"]
    assert technician and all(d["technician"] for d in technician)
    assert all(d["lineage"]["label"] == "S1" and d["how"] == "proc-connector" for d in technician)
    chmod = next(d for d in technician if (d["exe"] or "").endswith("chmod"))
    assert chmod["user"] == "root" and chmod["started"].endswith("Z")
    assert chmod["lineage"]["chain"][0]["pid"] == shell.pid
    python = next(d for d in technician if "python" in (d["exe"] or ""))
    assert python["cmdline"][-2] == "--password" and "hunter2" not in repr(python["cmdline"])
    ended = next(d for d in sink.of("process") if d["op"] == "ended" and d["pid"] == python["pid"])
    assert ended["ended"] >= ended["started"] and ended["exit_code"] == 0
    # the customer's cat: a name and a count, nothing else, anywhere in the records
    assert not [d for d in sink.of("process") if (d["exe"] or "").endswith("/cat")]
    summary = sink.of("process-summary")
    assert summary and summary[-1]["programs"].get("cat", 0) >= 1
    assert "customer-private-notes" not in repr(sink.records)


@needs_root
def test_without_a_technician_lineage_everything_is_recorded_as_before(lineage):
    sink = ListSink()
    recorder = ProcessRecorder(sink, lineage, label="GUI-session", summary_s=3600)
    recorder.start()
    try:
        child = subprocess.run(["sh", "-c", "exec sleep 0.01"], check=True)
        assert child.returncode == 0
        assert wait_for(lambda: [d for d in sink.of("process") if (d["exe"] or "").endswith("sleep")])
    finally:
        recorder.stop()
    sleep = next(d for d in sink.of("process") if (d["exe"] or "").endswith("sleep"))
    assert sleep["technician"] is False and sleep["how"] == "proc-connector"
    assert sink.of("process-summary") == []


@needs_root
def test_a_lost_burst_is_an_overflow_record_with_a_count():
    lin = Lineage(prefer=PROC_CONNECTOR, rcvbuf=4096)
    lin.start()
    sink = ListSink()
    recorder = ProcessRecorder(sink, lin, summary_s=3600)
    recorder.start()
    try:
        with lin._lock:
            subprocess.run(["sh", "-c", "for i in $(seq 300); do /bin/true; done"], check=True)
        assert wait_for(lambda: sink.of("overflow"))
    finally:
        recorder.stop()
        lin.stop()
    loss = sink.of("overflow")[0]
    assert loss["source"] == "proc-connector" and loss["count"] >= 1 and loss["rescanned"] is True


def test_sampling_is_labelled_as_such():
    lin = Lineage(prefer=SAMPLED, sample_interval=0.05)
    lin.start()
    sink = ListSink()
    recorder = ProcessRecorder(sink, lin, summary_s=3600)
    recorder.start()
    try:
        child = subprocess.Popen(["sleep", "0.5"])
        assert wait_for(lambda: [d for d in sink.of("process") if d["pid"] == child.pid])
        child.wait()
    finally:
        recorder.stop()
        lin.stop()
    assert {d["how"] for d in sink.of("process")} == {"sampled"}


@needs_root
@pytest.mark.e2e
def test_ten_thousand_short_execs_are_all_recorded_with_their_lineage(lineage):
    shell = technician_shell("i=0; while [ $i -lt 10000 ]; do /bin/true; i=$((i+1)); done")
    sink = ListSink()
    recorder = ProcessRecorder(sink, lineage, label="S9", summary_s=3600)
    assert lineage.mark(shell.pid, "S9")
    recorder.start()
    try:
        go(shell)
        assert wait_for(lambda: len([d for d in sink.of("process") if d["op"] == "started"]) >= 10_000, timeout=120)
    finally:
        recorder.stop()
    started = [d for d in sink.of("process") if d["op"] == "started" and d["exe"] == os.path.realpath("/bin/true")]
    assert len(started) == 10_000
    assert {d["lineage"]["label"] for d in started} == {"S9"}
    assert all(d["lineage"]["chain"][0]["pid"] == shell.pid for d in started)
    assert len({(d["pid"], d["started"]) for d in started}) == 10_000
    assert sink.of("overflow") == []


@needs_root
def test_a_second_login_marked_late_still_has_its_first_commands_recorded_as_the_technicians(lineage, tmp_path):
    """The login source names a login that joined the session up to a second after it started: the
    mark reaches back to what it already ran, and the recorder decides only after that delay."""
    first = technician_shell("sleep 30")
    second = technician_shell(f"chmod 600 {tmp_path}; sleep 1.5")
    known = [first.pid]
    sink = ListSink()
    recorder = ProcessRecorder(sink, lineage, label="S10", summary_s=3600, technician_roots=lambda: list(known))
    recorder.start()
    try:
        assert lineage.has_label("S10")  # the first login: the session splits the customer's programs off
        second.stdin.write(b"go\n")  # its chmod runs and ends before anything names this login
        second.stdin.close()
        assert wait_for(lambda: [p for p in psutil.Process(second.pid).children() if p.name() == "sleep"])
        known.append(second.pid)
        assert wait_for(lambda: [d for d in sink.of("process") if (d["exe"] or "").endswith("chmod")])
    finally:
        recorder.stop()
        first.kill()
        first.wait()
    chmod = [d for d in sink.of("process") if (d["exe"] or "").endswith("chmod")]
    assert {d["op"] for d in chmod} == {"started", "ended"}
    assert all(d["technician"] and d["lineage"]["label"] == "S10" for d in chmod)
    assert {d["pid"] for d in chmod} and all(d["lineage"]["chain"][0]["pid"] == second.pid for d in chmod)
