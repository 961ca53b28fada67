"""Process lineage against real processes: detaching, pid reuse, ptrace, CLONE_PARENT, overflows.

Root is needed for the proc connector (CI runs as root); the sampled fallback is tested too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from agent.capture import procfs
from agent.capture.lineage import PROC_CONNECTOR, SAMPLED, Lineage, LineageEvent, ProcessRef
from tests.conftest import wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the proc connector needs root")


@pytest.fixture
def lineage():
    lin = Lineage(prefer=PROC_CONNECTOR)
    lin.start()
    yield lin
    lin.stop()


class Login:
    """A stand-in for a technician's login: a session leader that waits, is marked, then runs ``script``.
    Its output goes to a file: what it detaches keeps the descriptor, and a pipe would not close."""

    def __init__(self, script: str, *, loginuid: bool = False):
        prelude = "echo 0 > /proc/self/loginuid; exec sh -c \"$0\"" if loginuid else 'exec sh -c "$0"'
        body = f"read go; {script}"
        self._out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(["setsid", "sh", "-c", prelude, body], stdin=subprocess.PIPE, stdout=self._out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> str:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self._out.seek(0)
        return self._out.read().decode()


def execs(events: list[LineageEvent], name: str) -> list[LineageEvent]:
    return [e for e in events if e.kind == "exec" and e.proc and e.proc.exe and os.path.basename(e.proc.exe) == name]


def collect(sub, until, timeout: float = 15.0) -> list[LineageEvent]:
    got: list[LineageEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += sub.get(timeout=0.1)
        if until(got):
            break
    return got


@needs_root
def test_detached_and_millisecond_processes_stay_the_technicians(lineage, tmp_path):
    marker = tmp_path / "pids"
    programs = {}
    for name in ("setsid-child", "nohup-child", "double-fork"):  # one copy of /bin/true per way of detaching
        programs[name] = tmp_path / name
        programs[name].write_bytes(Path("/bin/true").read_bytes())
        programs[name].chmod(0o755)
    login = Login(textwrap.dedent(f"""
        setsid -f sh -c 'sleep 0.001; exec {programs["setsid-child"]}'
        nohup sh -c 'exec {programs["nohup-child"]}' >/dev/null 2>&1 &
        (sh -c 'exec {programs["double-fork"]}' &)
        setsid -f sh -c 'echo $$ >> {marker}; exec sleep 30'
        (sh -c 'echo $$ >> {marker}; exec sleep 30' &) &
        sleep 0.2
    """))
    customer = subprocess.Popen(["sleep", "30"])
    sub = lineage.subscribe(argv_of_all=False)
    try:
        assert lineage.mark(login.pid, "S1")
        login.go()
        events = collect(sub, lambda ev: sum(len(execs(ev, name)) for name in programs) >= 3)
        for name in programs:  # each lived about a millisecond, and is known with its program
            found = execs(events, name)
            assert len(found) == 1 and found[0].proc.label == "S1", name
        assert wait_for(lambda: marker.exists() and len(marker.read_text().split()) == 2)
        detached = [int(p) for p in marker.read_text().split()]
        for pid in detached:
            assert lineage.is_technician(pid)
            assert procfs.read_stat(pid).ppid != login.pid  # re-parented: only fork history knows
        living = {ref.pid for ref in lineage.living("S1")}
        assert set(detached) <= living
        assert not lineage.is_technician(customer.pid)
        assert not lineage.is_technician(os.getpid())
        record = lineage.describe(detached[0])
        assert record["technician"] and record["label"] == "S1" and record["how"] == "proc-connector"
        assert record["exe"].endswith("sleep") and record["user"] == "root"
        assert any(link["pid"] == login.pid for link in record["chain"])
    finally:
        sub.close()
        result = lineage.end_lineage("S1", grace_s=2)
        customer.kill()
        customer.wait()
    assert {d["pid"] for d in result.ended} >= set(detached)
    assert result.survivors == []
    for pid in detached:
        assert wait_for(lambda p=pid: procfs.read_stat(p) is None or procfs.read_stat(p).state == "Z")
    assert customer.returncode == -signal.SIGKILL  # ours, not the lineage's ending


@needs_root
def test_a_process_forked_before_the_mark_is_the_technicians_too(lineage):
    login = Login("sleep 30")
    child_pid = None
    try:
        holder = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
        wait_for(lambda: any(p.ppid == holder.pid for p in map(procfs.read_stat, procfs.list_pids()) if p))
        child_pid = next(s.pid for s in map(procfs.read_stat, procfs.list_pids()) if s and s.ppid == holder.pid)
        assert lineage.mark(holder.pid, "S2")
        assert lineage.is_technician(child_pid)
        assert lineage.describe(child_pid)["via"] == "fork"
    finally:
        lineage.end_lineage("S2", grace_s=1)
        login.proc.kill()
        login.proc.wait()
        holder.wait()


@needs_root
def test_a_reused_pid_is_never_the_technicians(lineage):
    """pid_max is small (32768 here): ns_last_pid makes the kernel hand a dead technician's pid to a
    customer's process, which must not inherit the technician's label."""
    login = Login("sleep 0.05")
    assert lineage.mark(login.pid, "S3")
    old = lineage.identify(login.pid)
    login.go()
    login.proc.wait()
    assert lineage.owner(old.pid, old.start_ticks) == "S3"  # a late question about it still finds it
    reused = None
    for _ in range(200):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(old.pid - 1))
        child = subprocess.Popen(["sleep", "30"])
        if child.pid == old.pid:
            reused = child
            break
        child.kill()
        child.wait()
    if reused is None:
        pytest.fail("the kernel did not reuse the pid in 200 attempts (another process took it each time)")
    try:
        new = lineage.identify(reused.pid)
        assert new.start_ticks != old.start_ticks or new == old
        assert lineage.is_technician(reused.pid) is False
        assert lineage.is_technician(reused.pid, new.start_ticks) is False
        assert lineage.owner(old.pid, old.start_ticks) == "S3"  # the dead one, named in full, is still theirs
        assert reused.pid not in {r.pid for r in lineage.living("S3")}
    finally:
        reused.kill()
        reused.wait()


@needs_root
def test_a_customer_process_the_technician_ptraces_becomes_the_technicians(lineage):
    victim = subprocess.Popen(["sleep", "30"])
    login = Login(f"{sys.executable} -c 'import ctypes,time; "
                  f"libc=ctypes.CDLL(None); print(libc.ptrace(0x4206, {victim.pid}, 0, 0)); time.sleep(0.2)'")
    try:
        assert not lineage.is_technician(victim.pid)
        assert lineage.mark(login.pid, "S4")
        assert login.go().strip() == "0"
        assert lineage.is_technician(victim.pid)
        assert lineage.describe(victim.pid)["via"] == "ptrace"
    finally:
        victim.kill()
        victim.wait()


CLONE_PARENT_SCRIPT = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if os.fork():
    os._exit(0)                      # the orphan: re-parented to init (or a subreaper)
time.sleep(0.2)
pid = libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0)   # clone(CLONE_PARENT | SIGCHLD): the reaper is the parent
if pid == 0:
    if sys.argv[1] == "setsid":
        os.setsid()                  # and leave the technician's session at once
    os.execv("/bin/sleep", ["sleep", "30"])
print(pid, flush=True)
"""


@needs_root
@pytest.mark.parametrize("variant", ["stay", "setsid"])
def test_clone_parent_from_an_orphan_is_still_the_technicians(lineage, tmp_path, variant):
    """The fork event names the *official* parent, which CLONE_PARENT makes the orphan's reaper: the
    lineage checks what such a child inherited from whoever really forked it (Unix session, audit
    session). The ``setsid`` variant wins the race against the Unix session: the audit sessionid that
    pam_loginuid sets at an sshd login (simulated here) still names it."""
    script = tmp_path / "clone.py"
    script.write_text(CLONE_PARENT_SCRIPT)
    login = Login(f"{sys.executable} {script} {variant} > {tmp_path}/out; sleep 0.5", loginuid=variant == "setsid")
    time.sleep(0.1)
    assert lineage.mark(login.pid, "S5")
    login.go()
    assert wait_for(lambda: (tmp_path / "out").read_text().strip())
    cloned = int((tmp_path / "out").read_text())
    try:
        assert procfs.read_stat(cloned).ppid not in (login.pid,)
        assert lineage.is_technician(cloned), lineage.describe(cloned)
        assert lineage.describe(cloned)["via"] in ("session", "sessionid")
    finally:
        lineage.end_lineage("S5", grace_s=1)


@needs_root
def test_an_overflow_is_counted_and_the_table_is_reseeded(tmp_path):
    survivor = subprocess.Popen(["sleep", "30"])  # before the start: found by the seeding, whatever is lost
    late = None
    lin = Lineage(prefer=PROC_CONNECTOR, rcvbuf=4096)
    lin.start()
    sub = lin.subscribe()
    try:
        assert lin.mark(survivor.pid, "S6")
        with lin._lock:  # the reader cannot apply what it reads: the socket's small buffer overflows
            subprocess.run(["sh", "-c", "for i in $(seq 300); do /bin/true; done"], check=True)
            late = subprocess.Popen(["sleep", "30"])
        events = collect(sub, lambda ev: any(e.kind == "reseed" for e in ev))
        lost = [e for e in events if e.kind == "lost"]
        reseed = [e for e in events if e.kind == "reseed"]
        assert lost and lost[0].count >= 1 and lin.overflows >= 1
        assert reseed and lin.reseeds >= 1
        assert lin.is_technician(survivor.pid)  # labels survive a reseed
        assert lin.describe(late.pid) is not None  # started during the loss: found by the reseed
        flood_left = [p for p in lin._table.live.values() if p.exe and p.exe.endswith("/true")]
        assert flood_left == []  # the exits it missed are not left behind as living processes
    finally:
        sub.close()
        survivor.kill()
        if late is not None:
            late.kill()
        lin.stop()


def test_sampled_fallback_is_labelled_and_still_follows_a_slow_lineage():
    lin = Lineage(prefer=SAMPLED, sample_interval=0.05)
    lin.start()
    try:
        assert lin.how == SAMPLED and lin.why_sampled
        shell = subprocess.Popen(["sh", "-c", "read go; sleep 30"], stdin=subprocess.PIPE)
        assert wait_for(lambda: lin.describe(shell.pid))
        assert lin.mark(shell.pid, "S7")
        shell.stdin.write(b"go\n")
        shell.stdin.flush()
        child = wait_for(lambda: next((s.pid for s in map(procfs.read_stat, procfs.list_pids())
                                       if s and s.ppid == shell.pid), None))
        assert wait_for(lambda: lin.is_technician(child))
        assert lin.describe(child)["how"] == "sampled"
    finally:
        lin.end_lineage("S7", grace_s=1)
        lin.stop()
        shell.wait()


@needs_root
def test_marking_init_or_the_agent_is_refused(lineage):
    with pytest.raises(ValueError):
        lineage.mark(1, "S8")
    with pytest.raises(ValueError):
        lineage.mark(os.getpid(), "S8")
    assert lineage.mark(999_999_999, "S8") is False


def test_process_refs_are_pid_and_start():
    assert ProcessRef(5, 7) == (5, 7)


@needs_root
def test_ending_a_lineage_that_keeps_forking_and_ignores_sigterm(lineage, tmp_path):
    """The attack: a detached loop that ignores SIGTERM and forks all the time. Frozen first, it cannot
    fork away; every member ends, none survives."""
    login = Login(f"setsid -f sh -c 'trap \"\" TERM; while true; do sleep 5 & sleep 0.01; done'; "
                  f"touch {tmp_path}/started; sleep 30")
    assert lineage.mark(login.pid, "S11")
    login.proc.stdin.write(b"go\n")
    login.proc.stdin.close()
    assert wait_for(lambda: len(lineage.living("S11")) >= 10)
    result = lineage.end_lineage("S11", grace_s=0.5)
    assert result.survivors == [] and lineage.living("S11") == []
    assert len(result.ended) >= 10
    assert any((d.get("exe") or "").endswith("sleep") for d in result.ended)
    login.proc.wait(timeout=10)


@needs_root
def test_marking_the_parent_of_a_login_helper_marks_the_login_before_its_shell(lineage):
    """sshd runs ssh-authorize from the login's own process: marking its parent marks the login."""
    login = subprocess.Popen(["sh", "-c", "sleep 0.5 & wait; read go; sleep 30"], stdin=subprocess.PIPE)
    helper = wait_for(lambda: next((s.pid for s in map(procfs.read_stat, procfs.list_pids())
                                    if s and s.ppid == login.pid), None))
    try:
        ref = lineage.mark_parent(helper, "S12")
        assert ref is not None and ref.pid == login.pid
        login.stdin.write(b"go\n")
        login.stdin.flush()
        shell_child = wait_for(lambda: next((s.pid for s in map(procfs.read_stat, procfs.list_pids())
                                             if s and s.ppid == login.pid and s.pid != helper), None))
        assert lineage.is_technician(shell_child) and lineage.is_technician(login.pid)
    finally:
        login.kill()
        login.wait()


@needs_root
def test_with_nothing_to_follow_the_events_rest_and_a_mark_wakes_them():
    """A busy machine's processes cost CPU to follow; with no session and no technician's process
    alive the kernel is asked to stop sending them, and a mark (or a subscription) resumes, re-reading
    the table first so nothing is answered from a stale one."""
    lin = Lineage(prefer=PROC_CONNECTOR)
    lin.rest_after_s, lin.rest_check_ms = 0.2, 50
    lin.start()
    try:
        assert wait_for(lambda: lin.resting)
        quiet = lin.events
        subprocess.run(["sh", "-c", "for i in 1 2 3 4 5; do /bin/true; done"], check=True)
        assert lin.resting and lin.events == quiet  # nothing was read meanwhile
        shell = subprocess.Popen(["sh", "-c", "read go; sleep 30"], stdin=subprocess.PIPE)
        assert lin.mark(shell.pid, "S13")  # started while resting: found by the re-read
        assert not lin.resting
        shell.stdin.write(b"go\n")
        shell.stdin.flush()
        child = wait_for(lambda: next((s.pid for s in map(procfs.read_stat, procfs.list_pids())
                                       if s and s.ppid == shell.pid), None))
        assert lin.is_technician(child) and lin.describe(child)["via"] == "fork"
        assert not lin.resting  # a technician's process is alive: it keeps following
    finally:
        lin.end_lineage("S13", grace_s=1)
        lin.stop()


def test_what_started_the_agent_is_never_a_technicians_login(lineage):
    """Marking the agent's own ancestor would put the agent in the technician's lineage, and ending that
    lineage at the session's end would stop the agent itself (found in the whole suite: a frozen agent)."""
    with pytest.raises(ValueError, match="started this agent"):
        lineage.mark(os.getppid(), "s-ancestor")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert lineage.mark_parent(child.pid, "s-parent") is None  # its parent is this process's: not marked
        assert not lineage.has_label("s-parent")
        assert lineage.mark(child.pid, "s-child")
        result = lineage.end_lineage("s-child", grace_s=1.0)
        assert [p["pid"] for p in result.ended] == [child.pid] and result.survivors == []
    finally:
        child.kill()
        child.wait()
