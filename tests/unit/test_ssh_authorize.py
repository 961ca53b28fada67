"""ssh-authorize against a real agent subprocess, with keys and certificates from ssh-keygen.

sshd itself is not needed here: each test plays sshd's calls (``%u %k %t %f``
and the login's sshd process) directly; tests/e2e drives a real sshd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest

from agent.journal import read_records, verify_journal
from agent.settings import SSHSettings
from agent.ssh.authorize import Authorizer, LoginAttempt, Refused, authorized_keys_line, expiry_time
from agent.ssh.state import LoginState, ProcessRef

ALICE = "alice@acme.example"


@pytest.fixture(scope="module")
def pki(ssh_keys):
    class P:
        alice = ssh_keys.key("alice")
        alice2 = ssh_keys.key("alice-second")
        stranger = ssh_keys.key("stranger")
        ca = ssh_keys.key("ca")
        other_ca = ssh_keys.key("other-ca")
        cert = ssh_keys.cert("alice-login", ca, alice, key_id=f"{ALICE};reason=printer queue",
                             principals=f"{ALICE},root,support",
                             options=("extension:ticket@chaperone=T-123",))
        cert_expired = ssh_keys.cert("alice-old", ca, alice, key_id=ALICE, principals="root",
                                     validity="20200101:20200102")
        cert_future = ssh_keys.cert("alice-later", ca, alice, key_id=ALICE, principals="root", validity="+1d:+2d")
        cert_other_ca = ssh_keys.cert("alice-other", other_ca, alice, key_id=ALICE, principals="root")
    return P


@pytest.fixture
def trusted(home, pki, ssh_keys):
    home.trusted_technicians_path.write_text(
        f"{ALICE} {ssh_keys.line(f'{pki.alice}.pub')}\n"
        f"{ALICE} {ssh_keys.line(f'{pki.alice2}.pub')}\n"
        f"*@acme.example cert-authority {ssh_keys.line(f'{pki.ca}.pub')}\n"
    )
    return home


def settings(home, **ssh):
    home.settings_path.write_text(json.dumps({"ssh": {"consent_wait_s": 10, "duration": "5m", **ssh}}))


def attempt(pub_path, user="root", sshd=None) -> LoginAttempt:
    fields = open(pub_path).read().split()
    from agent.sshkeys import fingerprint, line_to_blob

    return LoginAttempt(user=user, key_b64=fields[1], key_type=fields[0],
                        fingerprint=fingerprint(line_to_blob(" ".join(fields[:2]))), sshd=sshd)


@pytest.fixture
def login():
    """A stand-in for one login's sshd process: a real process we own."""
    procs = []

    def make() -> ProcessRef:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        procs.append(proc)
        return ProcessRef.of(proc.pid)

    yield make
    for proc in procs:
        proc.kill()
        proc.wait()


def unattended(home) -> list[dict]:
    path = home.unattended_journal_path
    if not path.exists():
        return []
    check = verify_journal(path)
    assert check.chain_ok and check.fingerprint, check.reason  # intact and signed (never sealed: it stays open)
    with open(path, "rb") as f:
        return [r for r in read_records(f) if isinstance(r, dict) and r.get("type") == "alarm"]


def session_count(agent) -> int:
    return len(agent.call("sessions"))


# --- refused before anyone is asked ----------------------------------------------------------

@pytest.mark.parametrize("key_type, key_b64, reason", [
    ("ssh-dss", "AAAAB3NzaC1kc3MAAACBAP", "not supported"),
    ("sk-ssh-ed25519@openssh.com", "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t", "not supported"),
    ("x-unknown-type", "AAAA", "not supported"),
    ("ssh-ed25519", "!!!", "malformed"),
    ("ssh-rsa", "AAAAC3NzaC1lZDI1NTE5AAAAINRCWuCSbEENzDa2yM1VXxH7NYiRIUqi/ajNDL9DILVA", "does not match"),
])
def test_bad_keys_print_nothing_and_are_journaled(trusted, key_type, key_b64, reason):
    result = Authorizer(trusted).authorize(LoginAttempt("root", key_b64, key_type, "SHA256:x", None))
    assert result is None
    records = unattended(trusted)
    assert len(records) == 1
    assert reason in records[0]["data"]["ssh"]["reason"]
    assert records[0]["data"]["tool"] == "ssh"


def test_unknown_key_is_an_unattended_attempt(trusted, pki):
    assert Authorizer(trusted).authorize(attempt(f"{pki.stranger}.pub")) is None
    (record,) = unattended(trusted)
    assert record["data"]["ssh"]["user"] == "root"
    assert "is not in trusted_technicians" in record["data"]["detail"]


def test_attempts_append_to_one_chain_without_restart_records(trusted, pki):
    for _ in range(3):
        Authorizer(trusted).authorize(attempt(f"{pki.stranger}.pub"))
    with open(trusted.unattended_journal_path, "rb") as f:
        types = [r["type"] for r in read_records(f)]
    assert types.count("alarm") == 3 and types.count("journal-start") == 1
    assert "recovery" not in types


@pytest.mark.parametrize("cert_attr, user, reason", [
    ("cert_expired", "root", "has expired"),
    ("cert_future", "root", "not valid yet"),
    ("cert_other_ca", "root", "not a cert-authority"),
    ("cert", "postgres", "'postgres' is not among its principals"),
])
def test_untrusted_certificates_are_refused(trusted, pki, cert_attr, user, reason):
    assert Authorizer(trusted).authorize(attempt(getattr(pki, cert_attr), user=user)) is None
    (record,) = unattended(trusted)
    assert reason in record["data"]["ssh"]["reason"]


def test_accounts_outside_the_allowed_list_are_refused(trusted, pki):
    settings(trusted, users=["support"])
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", user="root")) is None
    assert "settings ssh.users" in unattended(trusted)[0]["data"]["ssh"]["reason"]


def test_agent_not_running_refuses_at_once(trusted, pki):
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub")) is None
    (record,) = unattended(trusted)
    assert "could not be asked" in record["data"]["ssh"]["reason"]
    assert "No agent is running" in record["data"]["ssh"]["reason"]


# --- asking the customer ------------------------------------------------------------------------

def test_customer_never_answers(trusted, pki, agent_factory, login):
    settings(trusted, consent_wait_s=0.5)
    agent = agent_factory(trusted, consent_timeout=60)
    sshd = login()
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=sshd)) is None
    (pending,) = agent.call("pending")
    assert pending["source"] == "ssh"
    assert {k: pending["ssh"][k] for k in ("user", "key_fingerprint", "key_type")} == {
        "user": "root", "key_fingerprint": attempt(f"{pki.alice}.pub").fingerprint, "key_type": "ssh-ed25519"}
    # the technician tries again: the same request is waited on, the customer is not asked twice
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=login())) is None
    assert [p["id"] for p in agent.call("pending")] == [pending["id"]]
    assert unattended(trusted) == []  # a trusted key waiting for consent is not an unattended attempt


def test_deny_refuses_and_other_keys_of_that_login_are_not_asked_again(trusted, pki, agent_factory, login):
    settings(trusted)
    agent = agent_factory(trusted, consent_timeout=60)
    sshd = login()
    agent.decide_when_pending("deny")
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=sshd)) is None
    assert agent.call("sessions")[0]["state"] == "refused"
    with LoginState(trusted).open(write=False) as book:
        assert [(r.state, r.sshd) for r in book.records] == [("refused", [sshd])]  # remembered for this login
    # the client offers a second trusted key on the same connection: refused without a new prompt
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice2}.pub", sshd=sshd)) is None
    assert session_count(agent) == 1 and agent.call("pending") == []


def test_allow_prints_a_line_that_ends_with_the_session(trusted, pki, agent_factory, login):
    settings(trusted, **{"from": "127.0.0.1,::1"})
    agent = agent_factory(trusted, consent_timeout=60)
    sshd = login()
    agent.decide_when_pending("allow")
    line = Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=sshd))
    status = agent.call("status")
    until = datetime.fromisoformat(status["active"]["until"].replace("Z", "+00:00"))
    pub = open(f"{pki.alice}.pub").read().split()
    assert line == (f'restrict,pty,expiry-time="{until.astimezone(UTC):%Y%m%d%H%M%S}Z",from="127.0.0.1,::1" '
                    f'{pub[0]} {pub[1]} chaperone-session:{status["session"]}')
    item = agent.call("sessions")[0]
    assert (item["technician"], item["org"], item["ticket"]) == (ALICE, "acme.example", "not given")
    # sshd's second call for the same login (the signature check) answers at once, same line
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=sshd)) == line
    # a second login with the same key during the session gets in too, without a prompt
    other = login()
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=other)) == line
    assert session_count(agent) == 1
    with LoginState(trusted).open(write=False) as book:
        assert book.for_session(status["session"]).sshd == [sshd, other]


def test_after_the_session_ends_the_key_needs_a_new_consent(trusted, pki, agent_factory, login):
    settings(trusted, consent_wait_s=0.5)
    agent = agent_factory(trusted, consent_timeout=60)
    agent.decide_when_pending("allow")
    settings(trusted, consent_wait_s=10)
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=login())) is not None
    first = agent.call("status")["session"]
    agent.call("end", id=first, reason="customer")
    settings(trusted, consent_wait_s=0.5)
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=login())) is None
    (pending,) = agent.call("pending")
    assert pending["id"] != first


def test_two_logins_at_once_share_one_prompt(trusted, pki, agent_factory, login):
    settings(trusted)
    agent = agent_factory(trusted, consent_timeout=60)
    results: list = []
    logins = [login(), login()]
    threads = [threading.Thread(target=lambda s=s: results.append(
        Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=s)))) for s in logins]
    for t in threads:
        t.start()
    agent.decide_when_pending("allow").join()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results[0] is not None and results[0] == results[1]
    assert session_count(agent) == 1


def test_certificate_login_gets_a_cert_authority_line(trusted, pki, agent_factory, login, ssh_keys):
    settings(trusted)
    agent = agent_factory(trusted, consent_timeout=60)
    agent.decide_when_pending("allow")
    line = Authorizer(trusted).authorize(attempt(pki.cert, user="root", sshd=login()))
    ca = ssh_keys.line(f"{pki.ca}.pub")
    assert line.startswith('cert-authority,principals="root",restrict,pty,expiry-time="')
    assert f" {ca} chaperone-session:" in line
    item = agent.call("sessions")[0]
    assert (item["technician"], item["ticket"], item["reason"]) == (ALICE, "T-123", "printer queue")


def test_agent_rejecting_the_request_refuses_the_login(trusted, pki, agent_factory, login):
    settings(trusted, duration="9h")  # longer than the agent allows
    agent = agent_factory(trusted, consent_timeout=60)
    assert Authorizer(trusted).authorize(attempt(f"{pki.alice}.pub", sshd=login())) is None
    assert agent.call("sessions") == []
    (record,) = unattended(trusted)
    assert "the agent did not accept the request" in record["data"]["ssh"]["reason"]


def test_the_agent_verifies_ssh_requests_itself(trusted, pki, agent_factory, login):
    settings(trusted, consent_wait_s=0.5)
    agent = agent_factory(trusted, consent_timeout=60)
    Authorizer(trusted).authorize(attempt(pki.cert, sshd=login()))
    (pending,) = agent.call("pending")
    assert pending["verified"] is True
    assert pending["verification"]["principal"] == ALICE


# --- the line --------------------------------------------------------------------------------

def test_expiry_time_is_utc():
    assert expiry_time(1767225600) == "20260101000000Z"


def test_line_keeps_the_earlier_end(pki):
    a = attempt(f"{pki.alice}.pub")
    import base64

    line = authorized_keys_line(a, base64.b64decode(a.key_b64), 1767225600, SSHSettings(), "s-1",
                                ("files", "shell", "admin"))
    assert line.startswith('restrict,pty,expiry-time="20260101000000Z" ssh-ed25519 ')
    assert line.endswith(" chaperone-session:s-1")


def test_the_line_lets_in_only_what_was_granted(pki):
    import base64

    root, support = attempt(f"{pki.alice}.pub"), attempt(f"{pki.alice}.pub", user="support")
    blob = base64.b64decode(root.key_b64)
    files = authorized_keys_line(support, blob, 1767225600, SSHSettings(), "s-1", ("files",))
    assert files.startswith('restrict,command="internal-sftp",expiry-time=')  # SFTP only: no shell, no forwarding
    shell = authorized_keys_line(support, blob, 1767225600, SSHSettings(), "s-1", ("files", "shell"))
    assert shell.startswith("restrict,pty,expiry-time=")  # a shell, still no forwarding
    with pytest.raises(Refused, match="a login as root needs the admin capability"):
        authorized_keys_line(root, blob, 1767225600, SSHSettings(), "s-1", ("files", "shell"))
    with pytest.raises(Refused, match="neither files nor shell"):
        authorized_keys_line(support, blob, 1767225600, SSHSettings(), "s-1", ("admin",))


# --- the command -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["root", "AAAA", "ssh-ed25519", "SHA256:x"],
    ["root", "", "", ""],
    ["root\n", "%k", "%t", "%f"],
])
def test_command_always_exits_0_and_prints_nothing_when_refused(trusted, chaperone_cmd, argv):
    out = subprocess.run([*chaperone_cmd, "--home", str(trusted.path), "ssh-authorize", *argv],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout == ""
    assert "Traceback" not in out.stderr


def test_command_without_a_home_still_exits_0(tmp_path, chaperone_cmd):
    out = subprocess.run([*chaperone_cmd, "--home", str(tmp_path / "missing"), "ssh-authorize",
                          "root", "AAAA", "ssh-ed25519", "SHA256:x"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "")


def test_a_flood_of_unknown_keys_is_counted_not_journaled(trusted, monkeypatch):
    from agent.ssh import unattended as journaling

    monkeypatch.setattr(journaling, "RATE_MAX", 3)
    kwargs = dict(user="root", key_type="ssh-ed25519", fingerprint="SHA256:x", reason="unknown", sshd_pid=None)
    written = [journaling.record_attempt(trusted, now=1000.0 + i, **kwargs) for i in range(5)]
    assert written == [True, True, True, False, False]
    assert journaling.record_attempt(trusted, now=1000.0 + journaling.RATE_WINDOW_S + 1, **kwargs)
    records = unattended(trusted)
    assert len(records) == 4
    assert records[-1]["data"]["not_journaled"] == 2 and "not_journaled" not in records[0]["data"]
