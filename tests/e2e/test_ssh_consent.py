"""SSH logins gated by consent, end to end: a real sshd on 127.0.0.1 with the installer's
drop-in, a real agent, real ``ssh`` logins, keys and certificates from ``ssh-keygen``.

The technician logs in as root (the sshd here is a private one on a test port
with ``AuthorizedKeysFile none``, so no real key of this machine is involved)
and only touches things this test made and removes: a folder under /etc, one
file in /etc/cron.d and a throw-away account.
"""

from __future__ import annotations

import json
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ALICE = "alice@acme.example"
SECRET = "hunter2-original"
NEW_SECRET = "s3cr3t-rotated"


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(ssh_keys):
    class P:
        alice = ssh_keys.key("e2e-alice")
        ca = ssh_keys.key("e2e-ca")
        stranger = ssh_keys.key("e2e-stranger")
        backdoor = ssh_keys.key("e2e-backdoor")
        cert = ssh_keys.cert("e2e-alice-cert", ca, alice, key_id=f"{ALICE};reason=rotate the app secret",
                             principals=f"{ALICE},root", options=("extension:ticket@chaperone=T-4242",))
    return P


@pytest.fixture
def target(tmp_path):
    """What the technician works on: a config folder with a secret, the cron.d entry, an account."""
    token = secrets.token_hex(4)
    conf_dir = Path(f"/etc/chaperone-e2e-{token}")
    cron = Path(f"/etc/cron.d/chaperone-e2e-{token}")
    user = f"chape2e{token}"
    made_cron_dir = not cron.parent.exists()  # a minimal machine without cron has no /etc/cron.d
    cron.parent.mkdir(mode=0o755, exist_ok=True)
    conf_dir.mkdir(mode=0o755)
    (conf_dir / "app.conf").write_text(f"# test application\nport = 8080\npassword = {SECRET}\n")
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True, capture_output=True)
    account_home = Path(pwd.getpwnam(user).pw_dir)
    try:
        yield {"conf": conf_dir, "cron": cron, "user": user, "home": account_home, "token": token}
    finally:
        shutil.rmtree(conf_dir, ignore_errors=True)
        cron.unlink(missing_ok=True)
        if made_cron_dir:
            cron.parent.rmdir()
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True)


def configure(home, pki, ssh_keys, *, wait_s: float, watch=None, duration="1h"):
    home.trusted_technicians_path.write_text(
        f"{ALICE} {ssh_keys.line(f'{pki.alice}.pub')}\n"
        f"*@acme.example cert-authority {ssh_keys.line(f'{pki.ca}.pub')}\n"
    )
    ssh = {"consent_wait_s": wait_s, "duration": duration}
    if watch:
        ssh["watch"] = [str(p) for p in watch]
    home.settings_path.write_text(json.dumps({"ssh": ssh}))


def start(agent_factory, home, **kwargs):
    # CHAPERONE_HOME lets the SSH session hooks find the home in the agent process
    # (the systemd unit sets it too); see agent/ssh/lifecycle.py.
    return agent_factory(home, env={"CHAPERONE_HOME": str(home.path)}, **kwargs)


def refused(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 255 and "Permission denied" in result.stderr


# --- refusals -------------------------------------------------------------------------------

def test_no_decision_refuses_the_login(home, pki, ssh_keys, agent_factory, sshd_factory):
    configure(home, pki, ssh_keys, wait_s=2)
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    result = server.ssh("root", pki.alice, "echo in")
    assert refused(result), result.stderr
    assert "in" not in result.stdout
    (pending,) = agent.call("pending")  # the customer was asked once, for this login
    assert pending["source"] == "ssh" and pending["ssh"]["user"] == "root"
    assert "Accepted publickey" not in server.log()


def test_deny_refuses_the_login(home, pki, ssh_keys, agent_factory, sshd_factory):
    configure(home, pki, ssh_keys, wait_s=20)
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    agent.decide_when_pending("deny")
    result = server.ssh("root", pki.alice, "echo in")
    assert refused(result), result.stderr
    assert [s["state"] for s in agent.call("sessions")] == ["refused"]


def test_unknown_key_is_refused_and_journaled(home, pki, ssh_keys, agent_factory, sshd_factory):
    from agent.journal import read_records

    configure(home, pki, ssh_keys, wait_s=5)
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    assert refused(server.ssh("root", pki.stranger, "echo in"))
    assert agent.call("pending") == []
    with open(home.unattended_journal_path, "rb") as f:
        alarms = [r for r in read_records(f) if isinstance(r, dict) and r["type"] == "alarm"]
    assert alarms[-1]["data"]["ssh"]["key_fingerprint"] == ssh_keys.fingerprint(f"{pki.stranger}.pub")


def test_agent_not_running_refuses_without_hanging(home, pki, ssh_keys, sshd_factory):
    configure(home, pki, ssh_keys, wait_s=100)
    server = sshd_factory(home, grace_s=60)
    result = server.ssh("root", pki.alice, "echo in", timeout=50)  # far below the 100 s wait
    assert refused(result), result.stderr


def test_two_logins_at_once_ask_once(home, pki, ssh_keys, agent_factory, sshd_factory):
    configure(home, pki, ssh_keys, wait_s=30)
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    logins = [server.popen_ssh("root", pki.alice, "echo in") for _ in range(2)]
    deadline = time.monotonic() + 30
    while not agent.call("pending") and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.decide_when_pending("allow")
    outputs = [p.communicate(timeout=60) for p in logins]
    assert [p.returncode for p in logins] == [0, 0], outputs
    assert len(agent.call("sessions")) == 1


# --- the whole session ------------------------------------------------------------------------

TECHNICIAN_SCRIPT = """set -e
sed -i 's/^password = .*/password = {new_secret}/' {conf}/app.conf
echo 'workers = 4' >> {conf}/app.conf
echo 'release notes' > {conf}/notes.txt
echo scratch > {conf}/scratch.txt
rm {conf}/scratch.txt
echo '*/5 * * * * root /bin/true # chaperone-e2e' > {cron}
mkdir -p {home}/.ssh
echo '{backdoor}' >> {home}/.ssh/authorized_keys
sleep 2
echo technician-done
"""


def run_session(home, pki, ssh_keys, agent_factory, sshd_factory, target, *, cert=None):
    """Allow, work, end: returns (session id, bundle folder, the live connection's result)."""
    configure(home, pki, ssh_keys, wait_s=30, watch=[target["conf"], "/etc/cron.d", target["home"]])
    agent = start(agent_factory, home, consent_timeout=60, capture=True)
    server = sshd_factory(home)
    agent.decide_when_pending("allow")
    live = server.popen_ssh("root", pki.alice, "echo connected; sleep 300", cert=cert)
    if live.stdout.readline().strip() != "connected":
        _, err = live.communicate(timeout=30)
        pytest.fail(f"the live login failed: {err}\nsshd: {server.log()[-3000:]}\nagent: {agent.output()[-3000:]}")
    session_id = agent.call("status")["session"]
    script = TECHNICIAN_SCRIPT.format(new_secret=NEW_SECRET, conf=target["conf"], cron=target["cron"],
                                      home=target["home"], backdoor=ssh_keys.line(f"{pki.backdoor}.pub"))
    work = server.ssh("root", pki.alice, script, cert=cert)
    assert work.returncode == 0 and "technician-done" in work.stdout, work.stderr
    assert len(agent.call("sessions")) == 1  # the second login joined the session: no second prompt

    agent.call("end", id=session_id, reason="customer")
    live.communicate(timeout=30)  # the live connection is ended with the session
    assert live.returncode != 0

    configure(home, pki, ssh_keys, wait_s=2)
    again = server.ssh("root", pki.alice, "echo in", cert=cert, timeout=60)
    assert refused(again), again.stderr  # the key no longer works (nobody answers the new request)

    bundle = home.path.parent / "bundle"
    out = agent.cli("export", session_id, "-o", f"{bundle}/")
    assert out.returncode == 0, out.stderr
    return session_id, bundle, agent


def check_bundle(bundle: Path, session_id: str, target, ssh_keys, pki):
    # 4a: OpenSSH alone verifies it
    principal = (bundle / "allowed_signers").read_text().split()[0]
    sums = (bundle / "SHA256SUMS").read_bytes()
    verify = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", "allowed_signers", "-I", principal,
                             "-n", "chaperone-session", "-s", "SHA256SUMS.sig"],
                            input=sums, cwd=bundle, capture_output=True)
    assert verify.returncode == 0, verify.stderr
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True).returncode == 0

    text = (bundle / "session.jsonl").read_text()
    everything = text + (bundle / "report.html").read_text()
    assert SECRET not in everything and NEW_SECRET not in everything  # redacted, before and after
    records = [json.loads(line) for line in text.splitlines()]
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r["data"])

    # 4b: every change
    files = {(d["op"], d["path"]) for d in by_type.get("file", [])}
    conf = str(target["conf"])
    assert ("created", f"{conf}/notes.txt") in files, (by_type.get("capture-error"), sorted(files), list(by_type))
    assert {("created", f"{conf}/scratch.txt"), ("deleted", f"{conf}/scratch.txt")} <= files
    assert ("created", str(target["cron"])) in files
    assert any(p == f"{target['home']}/.ssh/authorized_keys" for _, p in files)
    # sed -i writes a temporary file and moves it onto app.conf: either record may carry the diff
    app = [d for d in by_type["file"] if f"{conf}/app.conf" in (d.get("path"), d.get("dest"))]
    diffs = "".join(d.get("diff") or "" for d in app)
    assert "+workers = 4" in diffs and "password = [redacted" in diffs, app

    # 4c: the technician's commands, attributed
    mine = [d for d in by_type.get("process", []) if d.get("technician")]
    assert any("sleep" in " ".join(d["cmdline"]) for d in mine), by_type.get("process")
    notes = next(d for d in by_type["file"] if d["path"] == f"{conf}/notes.txt")
    assert notes.get("attribution", {}).get("pid") in {d["pid"] for d in mine}

    # 4d: ways back in
    back = [d for d in by_type.get("inventory-change", []) if d.get("way_back_in")]
    categories = {d["category"] for d in back}
    assert "authorized_keys" in categories, by_type.get("inventory-change")
    assert any(d["category"] in ("scheduled", "scheduled_jobs", "cron") for d in back), back
    ended = by_type.get("ssh-connections", [{}])[0]
    assert ended.get("action") == "ended", (by_type.get("capture-error"), list(by_type))
    return by_type


def test_allowed_session_with_a_plain_key(home, pki, ssh_keys, agent_factory, sshd_factory, target):
    session_id, bundle, agent = run_session(home, pki, ssh_keys, agent_factory, sshd_factory, target)
    by_type = check_bundle(bundle, session_id, target, ssh_keys, pki)
    request = by_type["request"][0]
    assert request["source"] == "ssh" and request["ssh"]["user"] == "root"
    assert (request["technician"], request["ticket"]) == (ALICE, "not given")


def test_allowed_session_with_a_certificate(home, pki, ssh_keys, agent_factory, sshd_factory, target):
    session_id, bundle, agent = run_session(home, pki, ssh_keys, agent_factory, sshd_factory, target,
                                            cert=pki.cert)
    by_type = check_bundle(bundle, session_id, target, ssh_keys, pki)
    request = by_type["request"][0]
    assert (request["technician"], request["ticket"], request["reason"]) == (ALICE, "T-4242", "rotate the app secret")


def test_several_keys_offered_ask_once(home, pki, ssh_keys, agent_factory, sshd_factory):
    second = ssh_keys.key("e2e-alice-second")
    configure(home, pki, ssh_keys, wait_s=20)
    with open(home.trusted_technicians_path, "a") as f:
        f.write(f"{ALICE} {ssh_keys.line(f'{second}.pub')}\n")
    agent = start(agent_factory, home, consent_timeout=60)
    server = sshd_factory(home)
    agent.decide_when_pending("deny")
    # an unknown key first, then two trusted ones: the customer is asked once for this login
    result = server.ssh("root", [pki.stranger, pki.alice, second], "echo in")
    assert refused(result), result.stderr
    assert [s["state"] for s in agent.call("sessions")] == ["refused"]
    assert server.log().count("Failed publickey") >= 2  # sshd did try the other keys
