"""Capture with no blind spots, end to end: a real agent as root, a real sshd on 127.0.0.1, a real
``ssh`` login that does what the issue's malicious technician did, and the customer working at the
same time. Everything is read back from the sealed session journal.

The technician logs in as root on a private sshd (``AuthorizedKeysFile none``); everything they
touch is made by this test under a unique name and removed afterwards.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.agent_helpers import assert_sealed_and_genuine, records

pytestmark = pytest.mark.e2e

ALICE = "alice@acme.example"


@pytest.fixture
def places():
    # Our own folder: pytest's shared /tmp/pytest-of-root is swept by other sessions on this machine,
    # and a sweep walking into the technician's bind mount would keep it busy.
    tmp_path = Path(tempfile.mkdtemp(prefix="chaperone-e2e-lineage-"))
    token = secrets.token_hex(4)
    watched = tmp_path / "watched"
    elsewhere = tmp_path / "elsewhere"
    for folder in (watched, elsewhere):
        folder.mkdir()
    out = {
        "token": token,
        "watched": watched,
        "elsewhere": elsewhere,
        "program": Path(f"/usr/local/bin/chaperone-e2e-{token}"),
        "owned": tmp_path / "to-chown",
        "open": tmp_path / "open-folder",
        "go": tmp_path / "go",
        "private": f"customer-private-{token}",
    }
    out["owned"].write_text("x")
    yield out
    subprocess.run(["umount", str(watched)], capture_output=True)
    out["program"].unlink(missing_ok=True)
    shutil.rmtree(tmp_path, ignore_errors=True)


TECHNICIAN = """set -e
while [ ! -e {go} ]; do sleep 0.05; done
i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done
cp /bin/true {program}
chmod u+s {program}
setsid -f sh -c 'chown nobody {owned}; touch {owned}.done'
while [ ! -e {owned}.done ]; do sleep 0.05; done
mkdir {open}
chmod 777 {open}
mount --bind {elsewhere} {watched}
echo planted > {watched}/hidden.txt
umount {watched} || (sleep 0.5; umount {watched}) || (sleep 2; umount {watched})
sleep 1.5
echo technician-done
"""


def test_the_technicians_execs_writes_metadata_and_mounts_are_recorded_and_the_customers_programs_only_counted(
        home, ssh_keys, agent_factory, sshd_factory, places):
    alice = ssh_keys.key("e2e-lineage-alice")
    home.trusted_technicians_path.write_text(f"{ALICE} {ssh_keys.line(f'{alice}.pub')}\n")
    home.settings_path.write_text(json.dumps({"ssh": {"consent_wait_s": 30, "duration": "1h",
                                                      "watch": [str(places["watched"])]}}))
    agent = agent_factory(home, env={"CHAPERONE_HOME": str(home.path)}, consent_timeout=60, capture=True)
    server = sshd_factory(home)
    agent.decide_when_pending("allow")
    script = TECHNICIAN.format(**{k: v for k, v in places.items() if k != "token"})
    login = server.popen_ssh("root", alice, script)
    assert wait_for(lambda: agent.call("status")["session"], timeout=60)
    session_id = agent.call("status")["session"]
    assert wait_for(lambda: "session-start" in [r["type"] for r in records(home, session_id)], timeout=60)
    # the customer, at the machine, meanwhile: their program and its argument must not be recorded
    customer = subprocess.run(["ls", f"/tmp/{places['private']}"], capture_output=True)
    assert customer.returncode != 0
    places["go"].touch()
    out, err = login.communicate(timeout=120)
    assert login.returncode == 0 and "technician-done" in out, (err, agent.output()[-3000:], server.log()[-3000:])
    agent.call("end", id=session_id, reason="customer")
    assert wait_for(lambda: records(home, session_id)[-1]["type"] == "seal", timeout=60)
    assert_sealed_and_genuine(home, session_id)

    journal = home.journal_path(session_id).read_text()
    by_type: dict[str, list[dict]] = {}
    for record in records(home, session_id):
        by_type.setdefault(record["type"], []).append(record["data"])
    processes = by_type.get("process", [])

    # 1. every exec, with lineage: all 200 /bin/true, each the technician's, by the kernel's events
    trues = [d for d in processes if d["op"] == "started" and (d["exe"] or "").endswith("/true")]
    assert len(trues) == 200, (len(trues), by_type.get("capture-error"))
    assert {d["lineage"]["label"] for d in trues} == {session_id}
    assert {d["how"] for d in processes} == {"proc-connector"}
    chown = next(d for d in processes if (d["exe"] or "").endswith("/chown") and d["op"] == "started")
    assert chown["technician"] and chown["lineage"]["label"] == session_id  # setsid -f changes nothing

    # 2. every write by the technician, anywhere; metadata changes; mounts
    files = by_type.get("file", [])
    program = next(d for d in files if d.get("path") == str(places["program"]))
    assert program["via"] == "filesystem" and program["attribution"]["label"] == session_id
    assert program["way_back_in"] and "setuid" in program["why"]
    metas = by_type.get("file-meta", [])
    owned = next(d for d in metas if d["path"] == str(places["owned"]))
    assert owned["after"]["user"] == "nobody" and owned["attribution"]["label"] == session_id
    opened = next(d for d in files if d.get("path") == str(places["open"]))
    assert opened["way_back_in"] and "writable by everyone" in opened["why"]
    mounts = [m for m in by_type.get("mount", []) if m.get("mountpoint") == str(places["watched"])]
    assert [m["op"] for m in mounts] == ["mounted", "unmounted"], by_type.get("mount")  # (others: the machine's)
    if mounts[0].get("events"):
        assert mounts[0]["by"]["label"] == session_id and mounts[1]["by"]["label"] == session_id
    alarm = next(d for d in by_type.get("alarm", []) if d.get("tool") == "mount")
    assert alarm["watch_path"] == str(places["watched"]) and alarm["relation"] == "over"
    planted = next(d for d in files if d.get("path") == str(places["elsewhere"] / "hidden.txt"))
    assert planted["attribution"]["label"] == session_id

    # 7. the customer's privacy: their program by name and count, never its argument
    assert places["private"] not in journal
    summaries = by_type.get("process-summary", [])
    assert summaries and sum(s["programs"].get("ls", 0) for s in summaries) >= 1, [s["programs"] for s in summaries]
    assert not [d for d in processes if (d["exe"] or "").endswith("/ls") and not d["technician"]]
