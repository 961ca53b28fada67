"""Session hooks for SSH logins: which processes are the technician's, and ending them."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from agent.canonical import check_canonical
from agent.settings import Settings, parse_settings
from agent.ssh import lifecycle
from agent.ssh.state import LoginRecord, LoginState, ProcessRef

# A stand-in for a login's sshd process: it starts a child (the technician's shell) and waits.
LOGIN = ("import subprocess, sys, time; "
         "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
         "print(child.pid, flush=True); time.sleep(300)")
STUBBORN = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print(0, flush=True); time.sleep(300)")


@pytest.fixture
def logins():
    started = []

    def start(code: str = LOGIN) -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        child = int(proc.stdout.readline())
        return proc, child

    yield start
    for proc in started:
        for p in [proc.pid]:
            try:
                for c in psutil.Process(p).children(recursive=True):
                    c.kill()
            except psutil.Error:
                pass
        proc.kill()
        proc.wait()


def remember(home, session_id: str, *pids: int, user: str = "root") -> None:
    with LoginState(home).open() as book:
        book.records.append(LoginRecord(id=session_id, user=user, fingerprint="SHA256:k", state="allowed",
                                        at=time.time(), sshd=[ProcessRef.of(p) for p in pids]))


def session(home, session_id="s-1"):
    return {"id": session_id, "home": str(home.path), "source": "ssh",
            "ssh": {"user": "root", "key_fingerprint": "SHA256:k", "key_type": "ssh-ed25519"}}


class Journaled(list):
    """An emit() that, like the journal, takes only canonical JSON data."""

    def __call__(self, type: str, data: dict) -> None:
        check_canonical(data)
        self.append((type, data))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_technician_pids_are_the_logins_and_their_descendants(home, logins):
    login, child = logins()
    other, other_child = logins()  # someone else's login, not in this session
    remember(home, "s-1", login.pid)
    remember(home, "s-2", other.pid)
    assert lifecycle.technician_pids(session(home)) == {login.pid, child}


def test_a_reused_pid_is_not_the_technician(home, logins):
    login, _ = logins()
    with LoginState(home).open() as book:
        book.records.append(LoginRecord(id="s-1", user="root", fingerprint="SHA256:k", state="allowed",
                                        at=time.time(), sshd=[ProcessRef(login.pid, 12345.0)]))
    assert lifecycle.technician_pids(session(home)) == set()


def test_unknown_session_has_no_pids(home):
    assert lifecycle.technician_pids(session(home, "s-unknown")) == set()
    assert lifecycle.technician_pids({"home": str(home.path)}) == set()


def test_session_end_ends_the_connections(home, logins):
    login, child = logins()
    remember(home, "s-1", login.pid)
    records = Journaled()
    lifecycle.on_session_ended(session(home), Settings(), records)
    login.wait(10)
    assert gone(login.pid) and gone(child)
    ((kind, data),) = records
    assert kind == "ssh-connections"
    assert data["action"] == "ended" and data["survivors"] == []
    assert [c["pid"] for c in data["connections"]] == [login.pid]
    with LoginState(home).open(write=False) as book:
        assert book.for_session("s-1") is None  # the key needs a new consent


def test_processes_ignoring_sigterm_are_killed(home, logins, monkeypatch):
    monkeypatch.setattr(lifecycle, "TERMINATE_WAIT_S", 0.5)
    login, _ = logins(STUBBORN)
    remember(home, "s-1", login.pid)
    records = Journaled()
    lifecycle.on_session_ended(session(home), Settings(), records)
    login.wait(10)  # (psutil reaps our own child, so its exit status is not kept)
    assert gone(login.pid)  # it ignores SIGTERM: only the SIGKILL that follows ends it
    assert records[0][1]["action"] == "ended" and records[0][1]["survivors"] == []


def test_warn_leaves_them_and_raises_an_alarm(home, logins):
    login, child = logins()
    remember(home, "s-1", login.pid)
    records = Journaled()
    lifecycle.on_session_ended(session(home), parse_settings({"ssh": {"on_session_end": "warn"}}),
                               records)
    assert not gone(login.pid) and not gone(child)
    assert [t for t, _ in records] == ["ssh-connections", "alarm"]
    assert records[0][1]["action"] == "warned"
    assert records[1][1]["tool"] == "ssh" and "still open" in records[1][1]["detail"]


def test_no_live_connection_is_recorded_as_such(home):
    records = Journaled()
    lifecycle.on_session_ended(session(home), Settings(), records)
    assert records == [("ssh-connections", {"action": "none", "user": "root", "connections": [],
                                            "detail": "No SSH connection of the technician was open."})]


