"""The guard and end_access with real processes: a stand-in "agent" (our pipes and a process to stop),
a stand-in "technician" (a process tree named in access.json or logins.json), the real guard process.

The whole path with a real agent and a real sshd is in tests/e2e/test_fail_closed.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent.home import Home
from agent.service.access import end_access
from agent.service.watchdog import SdNotify
from agent.session.access import read_access, read_reports, write_access
from agent.ssh.state import LoginRecord, LoginState, ProcessRef
from tests.conftest import wait_for

SID = "s-20260101-ABCDEF"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard reads /proc")


def spawn_tree() -> subprocess.Popen:
    """A shell with a child, a grandchild, and a detached (setsid) child: a technician's login."""
    script = "sleep 300 & (sleep 300 & wait) & setsid sleep 300 & echo ready; wait"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    assert wait_for(lambda: len(psutil.Process(proc.pid).children(recursive=True)) >= 4)
    return proc


def tree_of(proc: subprocess.Popen) -> list[psutil.Process]:
    return [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]


def gone(procs: list[psutil.Process]) -> bool:
    def dead(p):
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return all(dead(p) for p in procs)


@pytest.fixture
def session_home(tmp_path) -> Home:
    home = Home(tmp_path / "home")
    home.session_dir(SID).mkdir(parents=True)
    return home


@pytest.fixture
def technician(session_home):
    proc = spawn_tree()
    procs = tree_of(proc)
    write_access(session_home.session_dir(SID), SID, [(proc.pid, psutil.Process(proc.pid).create_time())])
    yield proc, procs
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait()


# --- end_access ------------------------------------------------------------------------------------

def test_end_access_ends_the_named_processes_and_all_their_descendants(session_home, technician):
    proc, procs = technician
    result = end_access(session_home, SID)
    proc.wait(10)
    assert gone(procs)
    assert {p["pid"] for p in result["ended"]} == {p.pid for p in procs} and result["survivors"] == []
    assert all(p["started"].endswith("Z") for p in result["ended"])


def test_end_access_ends_the_ssh_logins_ssh_authorize_recorded(session_home):
    proc = spawn_tree()
    procs = tree_of(proc)
    login = ProcessRef.of(proc.pid)
    with LoginState(session_home).open() as book:
        book.records.append(LoginRecord(id=SID, user="root", fingerprint="SHA256:x", state="allowed",
                                        at=time.time(), sshd=[login]))
        book.records.append(LoginRecord(id="s-other", user="root", fingerprint="SHA256:y", state="allowed",
                                        at=time.time(), sshd=[ProcessRef.of(os.getpid())]))
    result = end_access(session_home, SID)
    proc.wait(10)
    assert gone(procs) and result["logins"] == 1
    assert psutil.Process(os.getpid()).is_running()  # another session's login is not touched


def test_end_access_leaves_a_reused_pid_and_protected_pids_alone(session_home):
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        write_access(session_home.session_dir(SID), SID, [(bystander.pid, psutil.Process(bystander.pid).create_time()
                                                          - 100)])
        assert end_access(session_home, SID)["ended"] == []  # same pid, another start time: not the technician's
        write_access(session_home.session_dir(SID), SID, [(bystander.pid, psutil.Process(bystander.pid).create_time())])
        assert end_access(session_home, SID, protect={bystander.pid})["ended"] == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_end_access_never_touches_the_callers_ancestors_even_if_access_json_names_them(session_home):
    # a lineage that took in too much: access.json names the test runner (our parent) and ourselves
    me, parent = os.getpid(), os.getppid()
    write_access(session_home.session_dir(SID), SID, [(pid, psutil.Process(pid).create_time()) for pid in (me, parent)])
    child = subprocess.Popen(["sleep", "300"])
    try:
        result = end_access(session_home, SID, spare={child.pid})
        assert result["ended"] == [] and child.poll() is None
        assert psutil.Process(parent).status() != psutil.STATUS_STOPPED
    finally:
        child.kill()
        child.wait()


def test_end_access_without_any_record_ends_nothing(session_home, tmp_path):
    assert end_access(session_home, "s-unknown", sudoers=tmp_path) == {
        "logins": 0, "ended": [], "survivors": [], "sudo_revoked": False}


def test_end_access_takes_back_the_sessions_sudo(session_home, tmp_path):
    folder = tmp_path / "sudoers.d"
    folder.mkdir()
    (folder / f"chaperone-{SID}").write_text("bob ALL=(ALL:ALL) NOPASSWD: ALL\n")
    (folder / "chaperone-s-other").write_text("eve ALL=(ALL:ALL) NOPASSWD: ALL\n")
    assert end_access(session_home, SID, sudoers=folder)["sudo_revoked"] is True
    assert sorted(p.name for p in folder.iterdir()) == ["chaperone-s-other"]  # only this session's


# --- the guard process --------------------------------------------------------------------------------

class GuardUnderTest:
    """The guard as the watchdog starts it, with a sleeping process standing in for the agent."""

    def __init__(self, home: Home, timeout: float = 2.0):
        self.agent = subprocess.Popen(["sleep", "300"])
        beat_r, self.beat_w = os.pipe()
        self.back_r, back_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.service.guard", "--home", str(home.path), "--agent-pid", str(self.agent.pid),
             "--beat-fd", str(beat_r), "--back-fd", str(back_w), "--timeout", str(timeout)],
            pass_fds=(beat_r, back_w), start_new_session=True, stderr=subprocess.PIPE, text=True)
        os.close(beat_r)
        os.close(back_w)
        self.lines: list[str] = []
        assert wait_for(lambda: "G" in self.read())

    def beat(self, session: str = SID) -> None:
        os.write(self.beat_w, f"H {session}\n".encode())

    def read(self) -> list[str]:
        while select.select([self.back_r], [], [], 0)[0]:
            data = os.read(self.back_r, 65536)
            if not data:
                break
            self.lines += data.decode().split()
        return self.lines

    def close(self) -> None:
        for fd in (self.beat_w, self.back_r):
            try:
                os.close(fd)
            except OSError:
                pass
        for p in (self.proc, self.agent):
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def guard(session_home):
    g = GuardUnderTest(session_home)
    yield g
    g.close()


def test_the_guard_lives_in_a_session_of_its_own_and_is_not_dumpable(guard):
    assert os.getsid(guard.proc.pid) == guard.proc.pid != os.getsid(0)
    status = Path(f"/proc/{guard.proc.pid}/status").read_text()
    assert "SigBlk:" in status and int(status.split("SigBlk:")[1].split()[0], 16) & (1 << (signal.SIGTERM - 1))


def test_when_the_agent_dies_the_guard_ends_the_technicians_access_and_exits(guard, technician, session_home):
    proc, procs = technician
    guard.beat()
    time.sleep(0.2)
    os.close(guard.beat_w)  # the agent is gone: its end of the pipe closes with it
    assert wait_for(lambda: gone(procs), timeout=10)
    assert guard.proc.wait(10) == 0
    ((_, report),) = read_reports(session_home.session_dir(SID))
    assert report["cause"] in ("killed", "exited") and report["session"] == SID
    assert {p["pid"] for p in report["access"]["ended"]} == {p.pid for p in procs}
    assert "A" in guard.read()


def test_an_agent_that_exits_on_an_error_is_told_apart_from_a_killed_one(guard, technician, session_home):
    proc, procs = technician
    guard.beat()
    os.write(guard.beat_w, b"X\n")  # its last word (atexit), then its end
    os.close(guard.beat_w)
    assert guard.proc.wait(10) == 0 and gone(procs)  # it did not end its sessions: the guard does
    ((_, report),) = read_reports(session_home.session_dir(SID))
    assert report["cause"] == "exited"


def test_a_clean_stop_ends_nothing(guard, technician, session_home):
    proc, procs = technician
    guard.beat()
    os.write(guard.beat_w, b"S\n")
    os.close(guard.beat_w)
    assert guard.proc.wait(10) == 0
    assert not gone(procs) and read_reports(session_home.session_dir(SID)) == []


def test_no_live_session_means_nothing_to_end(guard, technician):
    proc, procs = technician
    guard.beat("-")
    os.close(guard.beat_w)
    assert guard.proc.wait(10) == 0
    assert not gone(procs)


def test_a_stopped_agent_makes_the_guard_act_and_keep_watching(guard, technician, session_home):
    proc, procs = technician
    guard.beat()
    guard.agent.send_signal(signal.SIGSTOP)
    try:
        assert wait_for(lambda: gone(procs), timeout=10)
        ((_, report),) = wait_for(lambda: read_reports(session_home.session_dir(SID)))  # written just after
        assert report["cause"] == "stopped" and "SIGSTOP" in report["detail"]
    finally:
        guard.agent.send_signal(signal.SIGCONT)
    guard.beat()  # the agent runs again
    assert guard.proc.poll() is None


def test_a_silent_agent_is_hung_after_the_timeout(guard, technician, session_home):
    proc, procs = technician
    guard.beat()  # and then nothing, while the "agent" process runs
    assert wait_for(lambda: gone(procs), timeout=10)
    ((_, report),) = wait_for(lambda: read_reports(session_home.session_dir(SID)))  # written just after
    assert report["cause"] == "hung" and "no heartbeat for 2 s" in report["detail"]


def test_sigterm_to_the_guard_is_reported_and_does_not_stop_it(guard, technician):
    proc, procs = technician
    guard.beat()
    guard.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: any(line == "T" for line in guard.read()) and str(os.getpid()) in guard.lines)
    guard.beat()
    time.sleep(0.3)
    assert guard.proc.poll() is None and not gone(procs)
    guard.proc.send_signal(signal.SIGINT)
    guard.beat()
    assert guard.proc.poll() is None


# --- sd_notify --------------------------------------------------------------------------------------

def test_sd_notify_sends_datagrams_to_the_notify_socket(tmp_path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "notify"))
    server.settimeout(5)
    sd = SdNotify({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "5000000",
                   "WATCHDOG_PID": str(os.getpid())})
    assert sd.active and sd.watchdog_s == 5.0
    sd.notify("READY=1")
    sd.notify("WATCHDOG=1")
    assert [server.recv(100), server.recv(100)] == [b"READY=1", b"WATCHDOG=1"]
    sd.close()
    assert SdNotify({}).active is False and SdNotify({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}).watchdog_s is None
    abstract = SdNotify({"NOTIFY_SOCKET": "@chaperone-test"})
    assert abstract.address == "\0chaperone-test"
    server.close()


def test_the_access_file_is_private_and_only_for_its_session(session_home):
    write_access(session_home.session_dir(SID), SID, [(123, 1.5)])
    path = session_home.session_dir(SID) / "access.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["processes"] == [[123, 1.5]]
    assert read_access(session_home.session_dir(SID), SID) == [(123, 1.5)]
    assert read_access(session_home.session_dir(SID), "s-other") == []
