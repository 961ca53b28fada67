"""Fail closed, end to end: a real agent (with its real guard), a real sshd on 127.0.0.1 and a real
technician's SSH connection, then the attacks of issue 11 as a root technician would make them:
``kill -9`` and ``SIGSTOP`` of the agent, the guard killed, the agent's disk filled up (a real small
tmpfs), a hard link written with its mtime put back, the inotify instances used up.

There is no systemd here, so the guard is what is tested (the unit's WatchdogSec and sd_notify are
tested as far as a datagram socket goes, tests/unit/test_guard.py). Every wait is a wait_for on what
must happen; the times measured are in bench/failclosed.py.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent.api.client import AgentClient
from agent.capture import Capture
from agent.devicekey import DeviceKey
from agent.home import Home
from agent.journal import verify_journal
from tests.conftest import require_program, wait_for
from tests.e2e.agent_helpers import TECHNICIAN, assert_sealed_and_genuine, records

pytestmark = pytest.mark.e2e

ALICE = "alice@acme.example"


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(ssh_keys):
    class K:
        alice = ssh_keys.key("fc-alice")
        backdoor = ssh_keys.key("fc-backdoor")
    return K


@pytest.fixture
def account():
    """A throw-away account whose home is watched: the technician's way back in goes there."""
    user = f"chapefc{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True, capture_output=True)
    home = Path(pwd.getpwnam(user).pw_dir)
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text("")
    try:
        yield user, home
    finally:
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True)


def configure(home: Home, keys, ssh_keys, watch: list[Path], wait_s: float = 30) -> None:
    home.trusted_technicians_path.write_text(f"{ALICE} {ssh_keys.line(f'{keys.alice}.pub')}\n")
    home.settings_path.write_text(json.dumps({
        "ssh": {"consent_wait_s": wait_s, "duration": "1h", "watch": [str(p) for p in watch]},
        "guard": {"timeout_s": 3},
    }))


def start_agent(agent_factory, home: Home, capture: bool = True):
    # CHAPERONE_HOME lets the SSH session hooks find the home (the systemd unit sets it too).
    return agent_factory(home, env={"CHAPERONE_HOME": str(home.path)}, consent_timeout=60, capture=capture)


def connect(agent, server, keys):
    """The customer allows; the technician logs in and stays connected. Returns (session id, ssh process)."""
    agent.decide_when_pending("allow")
    live = server.popen_ssh("root", keys.alice, "echo connected; sleep 300")
    if live.stdout.readline().strip() != "connected":
        live.wait(10)
        raise AssertionError(f"the technician could not log in: {live.stderr.read()}\n--- sshd:\n"
                             f"{server.log()[-3000:]}\n--- agent:\n{agent.output()[-3000:]}")
    return agent.call("status")["session"], live


def end(agent, sid: str) -> None:
    """The customer ends the session; its seal waits for capture's last rescan and the "after" inventory,
    which take longer than the fixture's 10 s client on a loaded machine."""
    AgentClient(agent.home, timeout=120).call("end", id=sid, reason="customer")


def refused(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 255 and "Permission denied" in result.stderr


def journal(home: Home, sid: str) -> list[dict]:
    try:
        return records(home, sid)
    except (OSError, ValueError):
        return []


def sealed(home: Home, sid: str) -> bool:
    recs = journal(home, sid)
    return bool(recs) and recs[-1]["type"] == "seal"


def of(recs: list[dict], kind: str) -> list[dict]:
    return [r["data"] for r in recs if r["type"] == kind]


def guard_pid(agent) -> int:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == agent.pid]
    guards = [p for p in pids if b"agent.service.guard" in _cmdline(p)]
    assert len(guards) == 1, pids
    return guards[0]


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --- kill -9 --------------------------------------------------------------------------------------

def test_kill_9_ends_the_connection_refuses_logins_and_the_gap_is_found_after_restart(
        home, keys, ssh_keys, account, agent_factory, sshd_factory, tmp_path):
    user, account_home = account
    configure(home, keys, ssh_keys, watch=[account_home])
    agent = start_agent(agent_factory, home)
    server = sshd_factory(home)
    sid, live = connect(agent, server, keys)
    guard = guard_pid(agent)

    agent.kill()  # kill -9 of the agent, as root can
    assert wait_for(lambda: live.poll() is not None, timeout=10), "the technician's connection outlived the agent"
    assert refused(server.ssh("root", keys.alice, "echo in", timeout=60))  # no agent, no login
    assert wait_for(lambda: not Path(f"/proc/{guard}").exists() or _ppid(guard) is None or
                    b"Z" in Path(f"/proc/{guard}/stat").read_bytes().rsplit(b")", 1)[1][:3])  # its job done, it went

    # during the gap: a way back in (as a leftover process, or another door, would add it)
    with open(account_home / ".ssh" / "authorized_keys", "a") as f:
        f.write(f"{ssh_keys.line(f'{keys.backdoor}.pub')} gap\n")

    agent = start_agent(agent_factory, home)  # the agent comes back: the session resumes (it has time left)
    assert agent.call("status")["session"] == sid
    end(agent, sid)
    recs = journal(home, sid)
    (gap,) = of(recs, "gap")
    assert gap["cause"] == "killed" and gap["by"] == "guard", gap
    # its exit status, when the guard could read it before the parent collected it
    assert "killed by SIGKILL" in gap["guard_detail"] or "without a word" in gap["guard_detail"]
    assert gap["access"]["logins"] == 1 and gap["access"]["ended"] and not gap["access"]["survivors"]
    keyfile = str(account_home / ".ssh" / "authorized_keys")
    (found,) = [d for d in of(recs, "file") if d["path"] == keyfile and d.get("via") == "after-gap"]
    assert found["gap"]["from"] == gap["from"] and found["gap"]["to"] <= gap["to"]
    # the inventory compares with its saved "before": the key is a way back in, found after the gap
    flagged = [d for d in of(recs, "inventory-change") if d["category"] == "authorized_keys" and d["way_back_in"]]
    assert any(d.get("gap") for d in flagged), of(recs, "inventory-change")
    assert [d for d in flagged if not d.get("live")], "the end-of-session comparison lost it"
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


# --- SIGSTOP ---------------------------------------------------------------------------------------

def test_sigstop_ends_the_connection_and_the_stop_is_a_gap_once_the_agent_runs_again(
        home, keys, ssh_keys, account, agent_factory, sshd_factory, tmp_path):
    user, account_home = account
    configure(home, keys, ssh_keys, watch=[account_home])
    agent = start_agent(agent_factory, home)
    server = sshd_factory(home)
    sid, live = connect(agent, server, keys)

    agent.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_for(lambda: live.poll() is not None, timeout=10), "the connection outlived a stopped agent"
        (account_home / "made-while-stopped").write_text("x")
        started = time.monotonic()
        assert refused(server.ssh("root", keys.alice, "echo in", timeout=60))  # a stopped agent answers nothing
        assert time.monotonic() - started < 50  # every wait of ssh-authorize is bounded
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: of(journal(home, sid), "gap"), timeout=15)
    (gap,) = of(journal(home, sid), "gap")
    assert gap["cause"] == "stopped" and gap["by"] == "guard" and gap["access"]["ended"]
    assert agent.call("status")["session"] == sid  # it runs again, and so does the session
    end(agent, sid)
    made = [d for d in of(journal(home, sid), "file") if d["path"].endswith("/made-while-stopped")]
    assert made, "a file made while the agent was stopped was not recorded"
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


# --- the guard attacked ------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["kill", "stop"])
def test_killing_or_stopping_the_guard_is_an_alarm_and_ends_the_technicians_access(
        home, keys, ssh_keys, account, agent_factory, sshd_factory, tmp_path, attack):
    user, account_home = account
    configure(home, keys, ssh_keys, watch=[account_home])
    agent = start_agent(agent_factory, home)
    server = sshd_factory(home)
    sid, live = connect(agent, server, keys)
    old = guard_pid(agent)
    # the technician takes the watchdog away first
    os.kill(old, signal.SIGKILL if attack == "kill" else signal.SIGSTOP)
    assert wait_for(lambda: live.poll() is not None, timeout=10)
    assert wait_for(lambda: agent.call("status")["state"] == "idle")
    assert wait_for(lambda: guard_pid(agent) != old if _has_guard(agent) else False)  # a new guard
    assert wait_for(lambda: sealed(home, sid), timeout=20)
    recs = journal(home, sid)
    (alarm,) = [d for d in of(recs, "alarm") if d.get("kind") == "guard-lost"]
    assert f"pid {old}" in alarm["detail"]
    assert ("SIGKILL" if attack == "kill" else "is stopped") in alarm["detail"]
    assert of(recs, "fail-closed")[0]["cause"] == "guard"
    assert of(recs, "session-end")[0]["reason"] == "fail-closed"
    assert not Path(f"/proc/{old}").exists() or b"Z" in Path(f"/proc/{old}/stat").read_bytes()[-200:]
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


def test_a_signal_to_the_guard_is_an_alarm_and_changes_nothing_else(
        home, keys, ssh_keys, account, agent_factory, sshd_factory):
    user, account_home = account
    configure(home, keys, ssh_keys, watch=[account_home])
    agent = start_agent(agent_factory, home)
    server = sshd_factory(home)
    sid, live = connect(agent, server, keys)
    guard = guard_pid(agent)
    os.kill(guard, signal.SIGTERM)
    assert wait_for(lambda: [d for d in of(journal(home, sid), "alarm") if d.get("kind") == "guard-signalled"])
    (alarm,) = [d for d in of(journal(home, sid), "alarm") if d.get("kind") == "guard-signalled"]
    assert "SIGTERM" in alarm["detail"] and f"Process {os.getpid()}" in alarm["detail"]
    assert guard_pid(agent) == guard and live.poll() is None and agent.call("status")["session"] == sid
    end(agent, sid)


def test_killing_agent_and_guard_at_once_is_the_limit_and_the_restart_ends_what_is_left(
        home, keys, ssh_keys, account, agent_factory, sshd_factory, tmp_path):
    """What the guard cannot stop (root kills both in one command), said as a test: the connection
    survives until the agent starts again (systemd restarts it within seconds), which ends it and
    records a gap whose cause is unknown."""
    user, account_home = account
    configure(home, keys, ssh_keys, watch=[account_home])
    agent = start_agent(agent_factory, home)
    server = sshd_factory(home)
    sid, live = connect(agent, server, keys)
    guard = guard_pid(agent)
    os.kill(guard, signal.SIGKILL)
    agent.kill()
    time.sleep(1.0)  # (not an assertion on time: only the window in which nothing acts)
    assert live.poll() is None  # the documented limit: nothing ended it
    agent = start_agent(agent_factory, home)
    assert wait_for(lambda: live.poll() is not None, timeout=10)  # the restart did
    end(agent, sid)
    (gap,) = of(journal(home, sid), "gap")
    assert gap["cause"] == "unknown" and gap["by"] == "agent" and gap["access"]["logins"] == 1
    assert gap["access"]["ended"]
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


def _has_guard(agent) -> bool:
    try:
        guard_pid(agent)
        return True
    except AssertionError:
        return False


# --- a full disk ------------------------------------------------------------------------------------

@pytest.fixture
def small_home(tmp_path):
    """The agent's home on a real 8 MiB tmpfs, to fill up."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    home = Home(mnt / "h")
    DeviceKey.init(home)
    yield home, mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_is_held_then_recorded_as_a_gap_and_the_session_fails_closed(
        small_home, keys, ssh_keys, account, agent_factory, sshd_factory, tmp_path):
    home, mnt = small_home
    user, account_home = account
    configure(home, keys, ssh_keys, watch=[account_home])
    agent = start_agent(agent_factory, home)
    server = sshd_factory(home)
    sid, live = connect(agent, server, keys)
    fill(mnt / "filler")  # the technician fills the disk the journal is on
    for i in range(20):  # and works: capture's records have nowhere to go
        (account_home / f"unrecorded-{i}.txt").write_text("x" * 1000)
    assert wait_for(lambda: live.poll() is not None, timeout=15), "the connection outlived the journal"
    assert wait_for(lambda: agent.call("status")["state"] == "idle")  # not active: no new login gets in
    (mnt / "filler").unlink()  # space again: what was held is written, then the seal
    assert wait_for(lambda: sealed(home, sid), timeout=20)
    recs = journal(home, sid)
    created = {d["path"] for d in of(recs, "file") if d["op"] == "created"}
    assert {str(account_home / f"unrecorded-{i}.txt") for i in range(20)} <= created  # nothing lost
    gap = next(d for d in of(recs, "gap") if d["cause"] == "disk")
    assert gap["error"] == "the disk is full" and gap["held"] > 0
    closed = of(recs, "fail-closed")[0]
    assert closed["cause"] == "disk" and closed["access"]["logins"] == 1 and closed["access"]["ended"]
    assert of(recs, "session-end")[0]["reason"] == "fail-closed"
    kinds = [r["type"] for r in recs]
    assert kinds.index("fail-closed") < kinds.index("session-end") < kinds.index("seal")
    assert verify_journal(home.journal_path(sid), DeviceKey.load(home).public_blob).ok


# --- a hard link, and the inotify limit ---------------------------------------------------------------

def test_a_hard_link_written_with_its_mtime_put_back_is_recorded(home, agent_factory, tmp_path):
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    (watched / "sshd_config").write_text("PermitRootLogin no\n")
    os.link(watched / "sshd_config", outside / "link")
    agent = start_agent(agent_factory, home)
    agent.decide_when_pending("allow")
    out = agent.cli("request", *TECHNICIAN, "--duration", "10m", "--watch", str(watched), "--wait")
    assert out.returncode == 0, out.stderr
    sid = agent.call("status")["session"]
    before = os.stat(watched / "sshd_config")
    with open(outside / "link", "r+") as f:  # same size, another name, outside the watched folder
        f.write("PermitRootLogin ye\n")
    os.utime(outside / "link", ns=(before.st_atime_ns, before.st_mtime_ns))
    end(agent, sid)
    (record,) = [d for d in of(journal(home, sid), "file") if d["path"] == str(watched / "sshd_config")]
    assert record["op"] == "modified" and record["sha256_before"] != record["sha256_after"]
    assert record["size"] == before.st_size


MAX_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


def test_with_the_inotify_instances_used_up_capture_falls_back_to_rescans_and_says_so(tmp_path):
    require_program(str(MAX_INSTANCES))
    records_: list[tuple[str, dict]] = []

    class Sink:
        def emit(self, type, data):
            records_.append((type, data))

    watched = tmp_path / "watched"
    watched.mkdir()
    saved = MAX_INSTANCES.read_text()
    cap = Capture(Sink(), [watched], inventory=False, fanotify=False)
    try:
        MAX_INSTANCES.write_text("0")  # for the moment capture starts (everyone's new instances fail meanwhile)
        cap.prepare()
    finally:
        MAX_INSTANCES.write_text(saved)
    try:
        (limit,) = [d for t, d in records_ if t == "watch-limit"]
        assert limit["fallback"] == "periodic-rescan" and "max_user_instances is 0" in limit["detail"]
        (watched / "new.txt").write_text("x")
        assert wait_for(lambda: [d for t, d in records_ if t == "file" and d["path"].endswith("/new.txt")])
    finally:
        cap.stop()
    (record,) = [d for t, d in records_ if t == "file" and d["path"].endswith("/new.txt")]
    assert record["op"] == "created" and record["via"] == "rescan"
    assert not [d for t, d in records_ if t == "capture-error"]  # not "capture is off" any more


def test_the_installed_unit_asks_systemd_for_a_watchdog():
    unit = (Path(__file__).resolve().parents[2] / "installer" / "linux" / "chaperone-agent.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "NotifyAccess=main" in unit
    verify = shutil.which("systemd-analyze")
    if verify:
        rendered = unit.replace("@CHAPERONE@", "/bin/true").replace("@HOME@", "/var/lib/chaperone")
        path = Path("/tmp") / f"chaperone-agent-{secrets.token_hex(4)}.service"
        path.write_text(rendered)
        try:
            result = subprocess.run([verify, "verify", str(path)], capture_output=True, text=True)
        finally:
            path.unlink()
        assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr
