"""The attacks of issue 10, as a technician would try them: a real sshd, a root system agent, and a throwaway
customer account the technician logs in to. The technician may ask, and may end their own session; they may
never decide, from their shell, from a detached process, from nohup, as the customer's account or as root.
Each attempt is refused, is an alarm, and every decision in the journal is the customer's.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.conftest import require_program, wait_for
from tests.e2e.agent_helpers import records
from tests.e2e.test_ssh_consent import ALICE
from tests.e2e.test_system_agent import ROOT, chaperone_as, customer, runnable_by_others, system_agent  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture
def technician(ssh_keys):
    return ssh_keys.key("attack-alice")


@pytest.fixture
def door(system_agent, customer, technician, ssh_keys, sshd_factory):  # noqa: F811 - fixtures by name
    """The sshd gate in front of the system agent, trusting the technician's key for the customer's account."""
    require_program("setsid", "nohup")
    home = system_agent.home
    home.trusted_technicians_path.write_text(f"{ALICE} {ssh_keys.line(f'{technician}.pub')}\n")
    settings = json.loads(home.settings_path.read_text())
    settings["ssh"] = {"consent_wait_s": 20, "duration": "1h", "capabilities": ["files", "shell", "admin"]}
    home.settings_path.write_text(json.dumps(settings))
    return sshd_factory(home)


def chaperone_cmd(agent, *args: str) -> str:
    """The command line a technician types in their SSH shell to reach the system agent."""
    quoted = " ".join(f"'{a}'" for a in args)
    return (f"cd / && CHAPERONE_SYSTEM_SOCKET={agent.socket} PYTHONPATH={ROOT} {sys.executable} -m agent "
            f"--system {quoted}")


def log_in(door, system_agent, user, key, customer) -> str:  # noqa: F811
    """The technician's login, allowed by the customer (from their terminal); the session's id."""
    def allow():
        pending = [p for p in system_agent.call("status") and [] or []]
        return pending

    ticket = time.monotonic()
    proc = door.popen_ssh(user, key, "echo in; sleep 300")
    sid = wait_for(lambda: next((line.split()[0] for line in
                                 chaperone_as(customer, system_agent, "pending").stdout.splitlines()
                                 if line.startswith("s-")), None), 30)
    assert sid, "the login's request never reached the customer"
    assert chaperone_as(customer, system_agent, "approve", sid).returncode == 0
    assert proc.stdout.readline().strip() == "in"
    assert time.monotonic() - ticket < 60
    log_in.connections.append(proc)
    return sid


log_in.connections = []


@pytest.fixture(autouse=True)
def close_connections():
    yield
    for proc in log_in.connections:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_in.connections.clear()


def alarms(agent, sid: str | None = None) -> list[dict]:
    if sid is not None:
        return [r["data"] for r in records(agent.home, sid) if r["type"] == "alarm"]
    path = agent.home.unattended_journal_path
    return [json.loads(line)["data"] for line in path.read_text().splitlines() if json.loads(line)["type"] == "alarm"]


@pytest.mark.parametrize("account", ["customer", "root"])
def test_the_technician_cannot_decide_from_their_login(door, system_agent, customer, technician, account):  # noqa: F811
    user = customer.pw_name if account == "customer" else "root"
    sid = log_in(door, system_agent, user, technician, customer)
    run = lambda *args: door.ssh(user, technician, chaperone_cmd(system_agent, *args))  # noqa: E731

    # 1. Ask, then approve their own request (an "extension").
    asked = run("request", "--technician", "Alice", "--org", "Acme", "--ticket", "X-1", "--reason", "more time")
    assert asked.returncode == 0, asked.stderr
    extension = asked.stdout.strip()
    approved = run("approve", extension)
    assert approved.returncode == 2 and "Refused: only the customer at this computer may use 'decide'" in \
        approved.stderr
    # 2. The same from a detached process (setsid -f) and from nohup, which outlive the shell.
    for how in ("setsid -f", "nohup"):
        background = door.ssh(user, technician,
                              f"{how} sh -c \"{chaperone_cmd(system_agent, 'approve', extension)} "
                              f"> /tmp/chap-attack-$$ 2>&1\" & sleep 3; cat /tmp/chap-attack-*; rm -f /tmp/chap-attack-*")
        assert "Refused: only the customer" in background.stdout, background.stdout + background.stderr
    # 3. Reading the pending requests' details is the customer's too.
    assert run("pending").returncode == 2
    assert [p["id"] for p in json.loads(chaperone_as(customer, system_agent, "pending", "--json").stdout)] == [
        extension]

    refused = [a for a in alarms(system_agent, sid) if a.get("kind") == "refused-attempt"]
    assert [a["op"] for a in refused].count("decide") == 3 and "pending" in [a["op"] for a in refused]
    assert all(a["role"] == "technician" and a["target"] in (extension, None) for a in refused)
    assert any(a["lineage"].get("label") == sid for a in refused if a.get("lineage"))  # known by the login's lineage

    # 4. The technician may end their own session: recorded as the technician's, not the customer's. Ending it
    # ends their access too, the very connection that asked included (ssh then says the host closed it).
    ended = run("end")
    assert ended.returncode == 0 or "closed by remote host" in ended.stderr, ended.stderr
    assert wait_for(lambda: records(system_agent.home, sid)[-1]["type"] == "seal", 30)
    end = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "session-end")
    assert end["reason"] == "technician" and end["by"]["role"] == "technician"
    # Every decision in the journal is the customer's.
    decision = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "decision")
    assert decision["by"]["user"] == customer.pw_name and decision["by"]["role"] == "customer"
    assert system_agent.call("status")["state"] in ("pending", "idle")  # the extension still waits, undecided


def test_a_detached_approve_loop_dies_with_the_session(door, system_agent, customer, technician):  # noqa: F811
    user = customer.pw_name
    sid = log_in(door, system_agent, user, technician, customer)
    loop = (f"while true; do for id in $({chaperone_cmd(system_agent, 'status')} >/dev/null; echo); do :; done; "
            f"{chaperone_cmd(system_agent, 'approve', 'ANY')} >/dev/null 2>&1; sleep 0.2; done")
    door.ssh(user, technician, f"setsid -f sh -c \"{loop}\" > /dev/null 2>&1; echo started")
    assert chaperone_as(customer, system_agent, "end").returncode == 0
    result = next(r["data"] for r in records(system_agent.home, sid) if r["type"] == "technician-processes")
    assert result["counts"]["ended"] >= 1 and result["counts"]["survivors"] == 0
    assert any("sh" in (p.get("exe") or "") for p in result["ended"])
    # Nothing of that login runs any more: a new request waits for the customer, whatever the loop would do.
    asked = chaperone_as(customer, system_agent, "request", "--technician", "Bob", "--org", "Acme", "--ticket", "2",
                         "--reason", "later")
    later = asked.stdout.strip()
    time.sleep(1.5)  # longer than the loop's period: were it alive, it would have tried by now
    assert system_agent.call("wait", id=later, timeout=0)["state"] == "requested"
