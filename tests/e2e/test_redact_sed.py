"""Issue 13, end to end: a password edited with sed over a real SSH session leaves no trace in the bundle.

The technician logs in (a real sshd on 127.0.0.1, the installer's drop-in,
consent given), replaces a configuration file's password with
``sed -i 's/OLD/NEW/'`` (no key name on that command line: only the
session's memory of the old value can hide it), copies the file to a name
holding the new password, and writes a note quoting the old one. Neither
value may appear anywhere in the exported bundle: journal, report, paths.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.e2e.test_ssh_consent import configure, pki, start  # noqa: F401 - pki is a fixture used below

pytestmark = pytest.mark.e2e


@pytest.fixture
def service_conf():
    token = secrets.token_hex(4)
    folder = Path(f"/etc/chaperone-e2e-redact-{token}")
    folder.mkdir(mode=0o755)
    old = f"OldPw-{secrets.token_hex(6)}"  # fresh per run: a leak cannot come from elsewhere
    new = f"NewPw-{secrets.token_hex(6)}"
    (folder / "service.conf").write_text(f"[service]\nport = 8443\npassword={old}\n")
    try:
        yield folder, old, new
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_password_changed_with_sed_appears_nowhere_in_the_bundle(home, pki, ssh_keys, agent_factory,  # noqa: F811
                                                                     sshd_factory, service_conf):
    require_program("sshd")
    folder, old, new = service_conf
    configure(home, pki, ssh_keys, wait_s=30, watch=[folder])
    agent = start(agent_factory, home, consent_timeout=60, capture=True)
    server = sshd_factory(home)
    agent.decide_when_pending("allow")
    live = server.popen_ssh("root", pki.alice, "echo connected; sleep 300")
    assert live.stdout.readline().strip() == "connected"
    session_id = agent.call("status")["session"]

    script = (f"sed -i 's/{old}/{new}/' {folder}/service.conf && cp {folder}/service.conf /tmp/{new}.bak "
              f"&& sleep 1 && rm -f /tmp/{new}.bak && grep -c {new} {folder}/service.conf && echo done")
    work = server.ssh("root", pki.alice, script)
    assert work.returncode == 0 and "done" in work.stdout, work.stderr
    assert f"password={new}" in (folder / "service.conf").read_text()  # the change really happened
    note = agent.call("note", id=session_id, text=f"Rotated the service password; the old one was {old}.")
    assert note["hidden"] == 1

    agent.call("end", id=session_id, reason="customer")
    live.communicate(timeout=30)
    bundle = home.path.parent / "bundle"
    out = agent.cli("export", session_id, "-o", f"{bundle}/")
    assert out.returncode == 0, out.stderr

    everything = "".join(p.read_text(errors="replace") for p in bundle.iterdir() if p.is_file())
    assert old not in everything and new not in everything
    journal = (bundle / "session.jsonl").read_text()
    assert "[redacted: sha256 " in journal
    # the records are there, only the values are hidden: the sed command, its diff, the note
    assert "sed -i '[redacted: sha256 " in journal  # the quoted expression that held the old value, whole
    assert f"{folder}/service.conf" in journal and "password=[redacted: sha256 " in journal
    assert "the old one was [redacted: sha256 " in journal
    verify = agent.cli("verify", str(bundle))
    assert verify.returncode == 0, verify.stdout + verify.stderr
