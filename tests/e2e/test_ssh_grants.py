"""Least privilege at the door: what the customer grants is what sshd lets in (real sshd, real accounts).

``files`` alone is SFTP only; ``shell`` gives a shell but never root; ``admin`` is needed for a root
login and, for another account, is sudo for the session and not a second longer.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from agent.ssh import sudo
from tests.conftest import require_program, wait_for
from tests.e2e.agent_helpers import records
from tests.e2e.test_ssh_consent import ALICE, refused, start

pytestmark = pytest.mark.e2e


@pytest.fixture
def account():
    """A throwaway account for the technician to log in to (no sudo rights of its own); removed after."""
    name = f"chapg{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", name], check=True, capture_output=True)  # "*": no password, not locked (sshd refuses a locked account)
    try:
        yield name
    finally:
        for drop_in in Path("/etc/sudoers.d").glob("chaperone-*"):
            if f"{name} ALL=" in drop_in.read_text():  # only this test's
                drop_in.unlink()
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


@pytest.fixture
def key(ssh_keys):
    return ssh_keys.key("grants-alice")


def _configure(home, ssh_keys, key, capabilities):
    home.trusted_technicians_path.write_text(f"{ALICE} {ssh_keys.line(f'{key}.pub')}\n")
    home.settings_path.write_text(json.dumps({"ssh": {"consent_wait_s": 5, "duration": "1h",
                                                      "capabilities": capabilities}}))


def _sftp(server, user, key, batch: str) -> subprocess.CompletedProcess:
    args = server.ssh_args(user, key, "")[:-2]  # the ssh options, without the destination and command
    args = ["sftp", "-b", "-", *args[1:], "-P", str(server.port), f"{user}@127.0.0.1"]
    args.remove("-p")
    args.remove(str(server.port))
    return subprocess.run(args, input=batch, capture_output=True, text=True, timeout=120)


def test_files_only_is_sftp_and_nothing_else(home, ssh_keys, key, account, agent_factory, sshd_factory, tmp_path):
    require_program("sftp")
    _configure(home, ssh_keys, key, ["files", "shell"])
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    agent.decide_when_pending("allow", only=["files"])  # asked for files and shell; the customer grants files
    local = tmp_path / "driver.txt"
    local.write_text("new driver\n")
    put = _sftp(server, account, key, f"put {local} /tmp/{account}-upload\nls /tmp\n")
    assert put.returncode == 0, put.stderr
    assert Path(f"/tmp/{account}-upload").read_text() == "new driver\n"
    Path(f"/tmp/{account}-upload").unlink()
    shell = server.ssh(account, key, "echo in-a-shell")
    assert "in-a-shell" not in shell.stdout  # sshd's forced internal-sftp: no command, no shell
    assert "sftp connections only" in shell.stderr or shell.returncode != 0
    sid = agent.call("status")["session"]
    decision = next(r["data"] for r in records(home, sid) if r["type"] == "decision")
    assert decision["granted"]["capabilities"] == ["files"]
    assert "only files (not shell)" in decision["reason"]


def test_shell_without_admin_is_no_root_and_no_sudo(home, ssh_keys, key, account, agent_factory, sshd_factory):
    require_program("sudo")
    _configure(home, ssh_keys, key, ["files", "shell", "admin"])
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    agent.decide_when_pending("allow", only=["files", "shell"])
    inside = server.ssh(account, key, "echo in-a-shell; sudo -n true && echo SUDO-WORKED; echo done")
    assert "in-a-shell" in inside.stdout and "done" in inside.stdout, inside.stderr
    assert "SUDO-WORKED" not in inside.stdout
    assert refused(server.ssh("root", key, "echo as-root"))  # root needs admin, which was not granted
    sid = agent.call("status")["session"]
    assert not sudo.drop_in_path(sid).exists()


def test_admin_is_sudo_until_the_session_ends(home, ssh_keys, key, account, agent_factory, sshd_factory):
    require_program("sudo", "visudo")
    _configure(home, ssh_keys, key, ["files", "shell", "admin"])
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    agent.decide_when_pending("allow")
    during = server.ssh(account, key, "sudo -n id -u")
    assert during.returncode == 0 and during.stdout.strip() == "0", during.stderr
    sid = agent.call("status")["session"]
    drop_in = sudo.drop_in_path(sid)
    assert drop_in.exists() and (drop_in.stat().st_mode & 0o777) == 0o440
    agent.call("end", id=sid)
    assert wait_for(lambda: not drop_in.exists())
    kinds = [(r["data"].get("action"), r["data"].get("what")) for r in records(home, sid) if r["type"] == "access"]
    assert kinds == [("granted", "sudo"), ("revoked", "sudo")]
    # After the session, the key is refused at the door; and a root shell on this machine (the test)
    # confirms the account has no sudo left.
    assert refused(server.ssh(account, key, "true"))
    after = subprocess.run(["sudo", "-n", "-u", account, "sudo", "-n", "true"], capture_output=True, text=True)
    assert after.returncode != 0


def test_sudo_left_by_a_session_that_is_not_live_is_taken_back_when_the_agent_starts(home, account, agent_factory):
    require_program("visudo")
    stale = sudo.grant(account, "s-20200101-OLD000", "long ago", str(home.path))  # as a killed agent left it
    elsewhere = sudo.grant(account, "s-20200101-OTHER0", "long ago", "/var/lib/another-agent")
    agent = start(agent_factory, home, consent_timeout=60)
    assert not stale.exists()
    assert elsewhere.exists()  # another agent's (another home's) drop-in is not ours to take back
    elsewhere.unlink()
    alarms = [json.loads(line)["data"] for line in home.unattended_journal_path.read_text().splitlines()
              if json.loads(line)["type"] == "access"]
    assert alarms and alarms[-1]["action"] == "revoked" and alarms[-1]["session"] == "s-20200101-OLD000"
    assert agent.call("ping")["pid"] == agent.pid
