"""The device ledger in a real agent: sessions witnessed by a real witness process, the lag policy with a
witness that is down or hangs, and the restart checks after a journal (a session's, or the unattended one)
was cut at a line boundary while the agent was stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.devicekey import DeviceKey
from agent.journal.shared import append_shared
from agent.ledger import CosignatureSigner
from agent.records import RecordType
from tests.conftest import wait_for
from tests.e2e.agent_helpers import TECHNICIAN, Events, records
from tests.fixtures.witness import WitnessProcess

pytestmark = pytest.mark.e2e


def _request(agent, *extra: str) -> str:
    done = agent.cli("request", *TECHNICIAN, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _settings(home, **witness) -> None:
    (home.path / "settings.json").write_text(json.dumps({"witness": witness, "remote_access_interval_s": 0}))


def _ledger_identity(home, chaperone_cmd) -> dict:
    out = subprocess.run(chaperone_cmd + ["init", "--json", "--home", str(home.path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)["ledger"]


def test_a_session_witnessed_by_a_real_witness_verifies_with_its_key(agent_factory, home, tmp_path, chaperone_cmd):
    identity = _ledger_identity(home, chaperone_cmd)
    with WitnessProcess(tmp_path / "witness") as witness:
        witness.trust(identity["origin"], identity["vkey"])
        witness.start()
        _settings(home, witnesses=[{"url": witness.url, "vkey": witness.vkey}], quorum=1, max_lag_s=60)
        agent = agent_factory()
        sid = _request(agent, "--watch", str(tmp_path), "--duration", "10m")
        assert agent.cli("approve", sid).returncode == 0
        assert agent.cli("note", "replaced the toner").returncode == 0
        status = wait_for(lambda: (s := agent.call("status"))["ledger"]["cosigned"] and s)
        assert status["ledger"]["cosigned"]["witnesses"] == [witness.name] and status["ledger"]["ok"]
        assert agent.cli("end", sid).returncode == 0
        exported = agent.cli("export", sid, "-o", str(tmp_path / "b.zip"), "--wait-witness")
        assert exported.returncode == 0 and f"Witnessed by {witness.name}" in exported.stdout, exported.stdout
        verified = agent.cli("verify", str(tmp_path / "b.zip"), "--witness", witness.vkey)
        assert verified.returncode == 0, verified.stdout
        assert f"Witnessed by {witness.name}: every checkpoint and the seal" in verified.stdout
        other = WitnessProcess(tmp_path / "other", name="witness.test/other")
        refused = agent.cli("verify", str(tmp_path / "b.zip"), "--witness", other.vkey)
        assert refused.returncode == 1 and "not cosigned by the witness witness.test/other" in refused.stdout
        shown = json.loads(agent.cli("ledger", "--json").stdout)
        assert shown["origin"] == identity["origin"] and shown["cosigned"]["witnesses"] == [witness.name]
        assert json.loads(witness.cli("status", "--json").stdout)["logs"][0]["size"] >= 4


@pytest.mark.parametrize("kind", ["down", "hangs"])
def test_no_cosignature_for_max_lag_ends_the_session_without_blocking_the_agent(agent_factory, home, tmp_path,
                                                                                 kind):
    """A witness that refuses connections, or one that accepts them and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    if kind == "hangs":
        listener.listen(16)

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                held.append(conn)  # read nothing, answer nothing

        threading.Thread(target=accept, daemon=True).start()
    else:
        listener.close()
    vkey = CosignatureSigner("witness.test/silent", ed25519.Ed25519PrivateKey.generate()).vkey
    _settings(home, witnesses=[{"url": f"http://127.0.0.1:{port}", "vkey": vkey}], quorum=1, max_lag_s=3,
              on_lag="end")
    try:
        agent = agent_factory()
        events = Events(agent.client)
        sid = _request(agent, "--watch", str(tmp_path), "--duration", "10m")
        assert agent.cli("approve", sid).returncode == 0
        lag = events.wait_for("witness-lag")
        assert agent.call("ping")["pid"] == agent.pid  # the loop answers while the witness does not
        assert lag["on_lag"] == "end" and lag["lag_s"] >= 3
        assert events.wait_for("session-ended", lambda d: d["id"] == sid)["reason"] == "witness-lag"
        events.close()
        recs = records(home, sid)
        end = next(r["data"] for r in recs if r["type"] == "session-end")
        assert end["reason"] == "witness-lag"
        witness_records = [r["data"] for r in recs if r["type"] == "witness"]
        assert any(w.get("event") == "lagging" for w in witness_records)
        status = agent.call("status")
        assert status["ledger"]["ok"] is False and "not leaving the machine" in status["ledger"]["warning"]
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_session_journal_cut_while_the_agent_was_down_is_an_alarm(agent_factory, home, tmp_path):
    agent = agent_factory()
    sid = _request(agent, "--watch", str(tmp_path), "--duration", "10m")
    assert agent.cli("approve", sid).returncode == 0
    assert agent.cli("note", "installed a remote-access tool").returncode == 0
    wait_for(lambda: records(home, sid)[-1]["type"] == "checkpoint")  # the note is checkpointed (5 s)
    agent.kill()
    # The technician, as root, with the agent down: cut the journal back to before its last checkpoint.
    path = home.journal_path(sid)
    lines = path.read_bytes().splitlines(keepends=True)
    last_checkpoint = max(i for i, line in enumerate(lines) if b'"type":"checkpoint"' in line)
    path.write_bytes(b"".join(lines[:last_checkpoint - 1]))  # the note and its checkpoint are gone

    agent = agent_factory()
    alarms = [r["data"] for r in records(home, sid) if r["type"] == "alarm"]
    assert alarms and alarms[0]["kind"] == "journal-cut" and alarms[0]["seq"] == last_checkpoint
    assert "cut short or rewritten" in alarms[0]["detail"]
    assert agent.cli("end", sid).returncode == 0
    exported = agent.cli("export", sid, "-o", str(tmp_path / "b.zip"))
    assert exported.returncode == 0, exported.stderr
    report = agent.cli("report", str(tmp_path / "b.zip"), "-o", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert report.returncode == 0 and "device ledger" in html and "cut short or rewritten" in html


def test_the_unattended_journal_cut_while_the_agent_was_down_is_an_alarm(agent_factory, home, tmp_path):
    key = DeviceKey.load(home)
    _settings(home)  # no remote-access scans: the only alarms are the test's
    path = home.unattended_journal_path
    for n in range(3):  # refused logins, as ssh-authorize writes them while the agent runs or not
        append_shared(path, "unattended", key, RecordType.ALARM, {"tool": "ssh", "detail": f"refused login {n}"})
    agent = agent_factory()  # logs them in the ledger at start
    shown = json.loads(agent.cli("ledger", "--json").stdout)
    assert shown["size"] >= 7  # 4 checkpoints and 3 alarms
    assert agent.stop() == 0
    lines = path.read_bytes().splitlines(keepends=True)
    last_alarm = max(i for i, line in enumerate(lines) if b'"type":"alarm"' in line)
    path.write_bytes(b"".join(lines[:last_alarm]))  # "refused login 2" and its checkpoint are gone

    agent = agent_factory()
    tail = [json.loads(line) for line in path.read_bytes().splitlines()]
    cut = [r["data"] for r in tail if r["type"] == "alarm" and r["data"].get("kind") == "journal-cut"]
    assert cut and cut[0]["session"] == "unattended" and "refused login 2" not in path.read_text()
    assert agent.call("ping")


def test_the_unattended_journal_cut_while_the_agent_runs_is_an_alarm(agent_factory, home):
    key = DeviceKey.load(home)
    _settings(home)
    path = home.unattended_journal_path
    agent = agent_factory()
    for n in range(2):  # ssh-authorize's refused logins, appended beside the running agent
        append_shared(path, "unattended", key, RecordType.ALARM, {"tool": "ssh", "detail": f"refused login {n}"})
    assert wait_for(lambda: json.loads(agent.cli("ledger", "--json").stdout)["size"] >= 5, timeout=30)
    lines = path.read_bytes().splitlines(keepends=True)
    last_alarm = max(i for i, line in enumerate(lines) if b'"type":"alarm"' in line)
    path.write_bytes(b"".join(lines[:last_alarm]))  # the technician, as root, erases the last refusal

    def cut_alarm():
        recs = [json.loads(line) for line in path.read_bytes().splitlines()]
        return [r["data"] for r in recs if r["type"] == "alarm" and r["data"].get("kind") == "journal-cut"]

    found = wait_for(cut_alarm, timeout=30)
    assert found and found[0]["session"] == "unattended"
