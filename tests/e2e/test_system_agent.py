"""The real deployment: a system agent (root) and the customer's tray in their own account.

The agent serves the desktop user through its customer socket; the tray, run
as a throwaway customer account under Xvfb with trayer, finds it there, shows
a request, and the customer's click decides. Another local account can ask,
never decide.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.home import Home
from tests.conftest import require_program
from tests.e2e.agent_helpers import records
from tests.fixtures.display import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONSENT_TITLE = "Chaperone — a technician asks to connect"
REQUEST = {"technician": "Ada Lovelace", "email": "ada@example.com", "org": "Acme", "ticket": "T-77",
           "reason": "printer", "duration_s": 600, "watch": []}


def make_account(prefix: str) -> str:
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", name], check=True, capture_output=True)
    return name


@pytest.fixture
def customer():
    """The person at the machine: a throwaway account (removed after)."""
    name = make_account("chapc")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


@pytest.fixture
def stranger():
    name = make_account("chaps")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


@pytest.fixture
def runnable_by_others():
    """Let other accounts reach this Python and this checkout (search permission on the folders above them,
    e.g. /root for a pyenv Python), as they can on a machine where Chaperone is installed; put back after,
    unless another test run on this machine still needs it (a shared lock says so)."""
    lock = open("/run/lock/chaperone-test-runnable", "a")  # noqa: SIM115 - held for the fixture's life
    fcntl.flock(lock, fcntl.LOCK_SH)
    changed: list[tuple[Path, int]] = []
    for target in (Path(os.path.realpath(sys.executable)), ROOT):
        for folder in [*target.parents][::-1]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)
                changed.append((folder, mode))
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            changed = []  # another run still has them open to others
        for folder, mode in reversed(changed):
            folder.chmod(stat.S_IMODE(mode))
        lock.close()


@pytest.fixture
def system_agent(agent_factory, tmp_path, customer, runnable_by_others):
    """A root agent with a customer socket; ``consent.customers`` names the customer account."""
    run = Path(f"/run/chaperone-test-{secrets.token_hex(4)}")
    run.mkdir(mode=0o755)
    socket = run / "customer.sock"
    home = Home(tmp_path / "system-home")
    home.create()
    home.settings_path.write_text(json.dumps({"consent": {"customers": [customer.pw_name]}}))
    agent = agent_factory(home, args=("--system-socket", str(socket)))
    agent.socket = socket
    try:
        yield agent
    finally:
        shutil.rmtree(run, ignore_errors=True)


def as_user(user, *argv: str, env: dict | None = None, **kwargs) -> list[str]:
    """argv running as ``user`` with a clean environment (as their own session would have)."""
    base = {"HOME": user.pw_dir, "USER": user.pw_name, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT)}
    base.update(env or {})
    return ["runuser", "-u", user.pw_name, "--", "env", "-i", *(f"{k}={v}" for k, v in base.items()), *argv]


def chaperone_as(user, agent, *args: str) -> subprocess.CompletedProcess:
    argv = as_user(user, sys.executable, "-m", "agent", "--system", *args,
                   env={"CHAPERONE_SYSTEM_SOCKET": str(agent.socket)})
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")


@pytest.fixture
def customer_tray(xdisplay, system_agent, customer):
    require_program("runuser", "xdotool")
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        env = {**{k: v for k, v in xdisplay.env.items() if k in ("DISPLAY", "QT_QPA_PLATFORM")},
               "CHAPERONE_SYSTEM_SOCKET": str(system_agent.socket)}
        argv = as_user(customer, sys.executable, "-m", "ui.app", "--home", f"{customer.pw_dir}/.chaperone",
                       env=env)
        proc = subprocess.Popen(argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def consent_window(xdisplay) -> str | None:
    ids = xdisplay.search("--onlyvisible", "--name", "^Chaperone — a technician")
    return ids[0] if ids else None


def press(xdisplay, window: str, keys: str) -> None:
    xdisplay.run("xdotool", "windowfocus", "--sync", window)
    xdisplay.run("xdotool", "key", "--window", window, "--clearmodifiers", keys)


@pytest.mark.parametrize("keys, state", [("alt+a", "active"), ("alt+d", "refused")])
def test_the_customer_decides_from_the_tray_of_their_own_account(xdisplay, system_agent, customer, customer_tray,
                                                                   keys, state):
    tray = customer_tray()
    sid = system_agent.call("request", request=REQUEST)["id"]  # a technician's request reaches the system agent
    window = wait_for(lambda: consent_window(xdisplay), 30)
    assert window, tray.stdout.read1(65536) if tray.poll() is not None else xdisplay.tree()
    # Allow works one second after the dialog shows (so a stray click cannot let anyone in): press until it took.
    assert wait_for(lambda: press(xdisplay, window, keys) or
                    system_agent.call("wait", id=sid, timeout=0.5)["state"] != "requested", 20)
    assert wait_for(lambda: system_agent.call("wait", id=sid, timeout=0)["state"] == state, 20)
    decision = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "decision")
    assert decision["how"] == "click"
    assert (decision["by"]["user"], decision["by"]["uid"], decision["by"]["role"]) == (
        customer.pw_name, customer.pw_uid, "customer")
    assert decision["by"]["remote"] is False
    if state == "active":  # root is not the customer here: it may not end the session; the customer may
        assert system_agent.cli("end").returncode == 2
        assert chaperone_as(customer, system_agent, "end").returncode == 0


def test_the_customer_decides_from_a_terminal_and_a_stranger_may_only_ask(system_agent, customer, stranger):
    asked = chaperone_as(stranger, system_agent, "request", "--technician", "Mallory", "--org", "Nobody",
                         "--ticket", "1", "--reason", "let me in")
    assert asked.returncode == 0, asked.stderr  # anyone may ask
    sid = asked.stdout.strip()
    refused = chaperone_as(stranger, system_agent, "approve", sid)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("chaperone: Refused: 'decide' is for the customer at this computer")
    assert chaperone_as(stranger, system_agent, "pending").returncode == 2  # request details are the customer's
    alarms = [json.loads(line)["data"] for line in system_agent.home.unattended_journal_path.read_text().splitlines()
              if json.loads(line)["type"] == "alarm"]
    assert [(a["kind"], a["op"]) for a in alarms] == [("refused-attempt", "decide"), ("refused-attempt", "pending")]
    assert alarms[0]["user"] == stranger.pw_name and alarms[0]["target"] == sid and alarms[0]["role"] == "other"
    approved = chaperone_as(customer, system_agent, "approve", sid, "--for", "5m")
    assert approved.returncode == 0, approved.stderr
    decision = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "decision")
    assert decision["how"] == "terminal" and decision["by"]["user"] == customer.pw_name
    assert decision["reason"] == "The customer allowed less than was asked: 5 min of 30 min."
    status = chaperone_as(customer, system_agent, "status")
    assert status.stdout.startswith(f"active: {sid}")
    ended = chaperone_as(customer, system_agent, "end")
    assert ended.returncode == 0, ended.stderr
    end = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "session-end")
    assert end["reason"] == "customer" and end["by"]["user"] == customer.pw_name
    start = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "journal-start")
    assert (start["mode"], start["key_account"]) == ("system", "root")  # the signed record says who held the key
