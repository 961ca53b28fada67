"""The consent lifecycle through a real agent subprocess, its socket and the CLI."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from agent.clock import parse_rfc3339
from agent.history import History
from tests.e2e.agent_helpers import TECHNICIAN, Events, assert_sealed_and_genuine, records, types


def _request(agent, *extra: str) -> str:
    done = agent.cli("request", *TECHNICIAN, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_personal_agent_states_its_mode_and_account_in_each_journal(agent, home, tmp_path):
    """The embedded agent of `make run` (no system socket) says so in the signed record, first thing."""
    sid = _request(agent, "--watch", str(tmp_path))
    first = json.loads(home.journal_path(sid).read_text().splitlines()[0])
    assert first["type"] == "journal-start"
    assert first["data"]["mode"] == "personal" and first["data"]["key_account"] == pwd.getpwuid(os.geteuid()).pw_name


def test_whole_lifecycle_request_approve_note_end_export_verify(agent, home, tmp_path):
    events = Events(agent.client)
    sid = _request(agent, "--watch", str(tmp_path), "--duration", "10m", "--capability", "files")
    needed = events.wait_for("consent-needed", lambda d: d["id"] == sid)
    assert needed["verification"]["detail"] == "NOT VERIFIED: the request is not signed."
    assert (needed["technician"], needed["email"], needed["duration_s"]) == ("Alice Example", "alice@example.com", 600)

    pending = json.loads(agent.cli("pending", "--json").stdout)
    assert [(p["id"], p["technician"], p["org"], p["ticket"], p["reason"], p["verified"]) for p in pending] == [
        (sid, "Alice Example", "Acme IT", "4711", "printer queue stuck", False)]
    assert json.loads(agent.cli("status", "--json").stdout)["state"] == "pending"

    approved = agent.cli("approve", sid)
    assert approved.returncode == 0 and approved.stdout.strip() == f"{sid}: allowed", approved.stderr
    started = events.wait_for("session-started", lambda d: d["id"] == sid)
    assert started["capabilities"] == ["files"] and started["watch"] == [str(tmp_path)]
    status = json.loads(agent.cli("status", "--json").stdout)
    assert (status["state"], status["session"]) == ("active", sid)

    noted = agent.cli("note", "restarted the \x1b[31mspooler")
    assert noted.returncode == 0, noted.stderr
    activity = events.wait_for("activity", lambda d: any(i["type"] == "note" for i in d["items"]))
    assert activity["coalesced"] == 0

    ended = agent.cli("end", sid)
    assert ended.returncode == 0 and ended.stdout.strip() == f"{sid}: sealed", ended.stderr
    assert events.wait_for("session-ended", lambda d: d["id"] == sid)["reason"] == "customer"
    events.close()

    recs = records(home, sid)
    kinds = [r["type"] for r in recs]
    for earlier, later in [("request", "decision"), ("decision", "session-start"), ("session-start", "note"),
                           ("note", "session-end"), ("session-end", "seal")]:
        assert kinds.index(earlier) < kinds.index(later)
    decision = next(r["data"] for r in recs if r["type"] == "decision")
    assert decision["decision"] == "allow" and decision["how"] == "terminal"
    by = decision["by"]  # who decided, how it was known, from which process
    assert (by["uid"], by["user"], by["role"], by["remote"]) == (0, "root", "customer", False)
    assert by["pid"] > 0 and by["exe"] and by["how"] in ("ancestry", "proc-connector", "sampled")
    end = next(r["data"] for r in recs if r["type"] == "session-end")
    assert end["reason"] == "customer" and end["by"]["role"] == "customer"
    assert decision["granted"]["capabilities"] == ["files"] and decision["granted"]["watch"] == [str(tmp_path)]
    assert kinds[kinds.index("request") + 1] == "checkpoint"  # durable before anyone can decide
    assert kinds[kinds.index("decision") + 1] == "checkpoint"  # the consent receipt is checkpointed at once
    note = next(r["data"] for r in recs if r["type"] == "note")
    assert note["text"] == "restarted the \x1b[31mspooler" and note["flags"]
    assert {r["session"] for r in recs} == {sid}
    assert_sealed_and_genuine(home, sid, agent, tmp_path)
    row = History(home).get(sid)
    assert (row["state"], row["end_reason"], row["sealed"]) == ("sealed", "customer", True)
    listed = json.loads(agent.cli("sessions", "--json").stdout)
    assert [(s["id"], s["state"], s["technician"], s["ticket"]) for s in listed] == [
        (sid, "sealed", "Alice Example", "4711")]


def test_request_wait_exit_codes_allowed_refused_and_no_answer(agent_factory, home, tmp_path):
    agent = agent_factory(consent_timeout=2)
    # No answer within the consent timeout is a refusal: state expired, exit 4.
    waited = agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--wait", "--json")
    assert waited.returncode == 4, waited.stderr
    sid = json.loads(waited.stdout)["id"]
    assert json.loads(waited.stdout)["state"] == "expired"
    decision = next(r["data"] for r in records(home, sid) if r["type"] == "decision")
    assert (decision["decision"], decision["how"], decision["granted"], decision["by"]) == ("deny", "timeout", None, None)
    assert_sealed_and_genuine(home, sid)
    assert History(home).get(sid)["state"] == "expired"

    agent.stop()
    agent = agent_factory(consent_timeout=30)
    events = Events(agent.client)

    def request_waiting():
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "request", *TECHNICIAN, "--watch", str(tmp_path), "--wait",
             "--home", str(home.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent.env)

    refused = request_waiting()
    sid = events.wait_for("consent-needed")["id"]
    assert agent.cli("deny", sid).returncode == 0
    assert refused.wait(30) == 3
    assert History(home).get(sid)["state"] == "refused"

    allowed = request_waiting()
    sid = events.wait_for("consent-needed")["id"]
    assert agent.cli("approve", sid).returncode == 0
    assert allowed.wait(30) == 0
    assert allowed.stdout.read().strip() == sid
    events.close()
    states = {s["state"] for s in json.loads(agent.cli("sessions", "--json").stdout)}
    assert states == {"expired", "refused", "active"}  # refusals stay in the history with their state


def test_time_limit_warns_then_ends_the_session(agent, home, tmp_path):
    events = Events(agent.client)
    sid = _request(agent, "--watch", str(tmp_path), "--duration", "3s")
    agent.cli("approve", sid)
    warning = events.wait_for("time-warning", lambda d: d["id"] == sid)
    assert warning["remaining_s"] <= 2  # halfway through a 3 s session (5 min before the end for long ones)
    assert events.wait_for("session-ended", lambda d: d["id"] == sid)["reason"] == "time-limit"
    events.wait_for("session-sealed", lambda d: d["id"] == sid)  # the seal follows the ending
    events.close()
    kinds = types(home, sid)
    assert kinds.index("session-start") < kinds.index("time-warning") < kinds.index("session-end")
    end = next(r["data"] for r in records(home, sid) if r["type"] == "session-end")
    assert end == {"reason": "time-limit", "by": None}
    assert_sealed_and_genuine(home, sid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_mid_session_ends_and_seals(agent, home, tmp_path, sig):
    sid = _request(agent, "--watch", str(tmp_path))
    agent.cli("approve", sid)
    waiting = _request(agent, "--watch", str(tmp_path))  # a pending request at the stop expires
    events = Events(agent.client)
    assert agent.stop(sig) == 0
    events.wait_for("agent-stopping")
    assert events.wait_for("session-ended", lambda d: d["id"] == sid)["reason"] == "agent-stopped"
    events.close()
    end = next(r["data"] for r in records(home, sid) if r["type"] == "session-end")
    assert end == {"reason": "agent-stopped", "by": None}
    assert_sealed_and_genuine(home, sid, agent, tmp_path)
    assert_sealed_and_genuine(home, waiting)
    assert History(home).get(waiting)["state"] == "expired"
    assert not home.socket_path.exists()
    assert "stopped." in agent.output()


def test_restart_after_a_torn_journal_line_keeps_what_was_recorded(agent_factory, home, tmp_path):
    agent = agent_factory()
    sid = _request(agent, "--watch", str(tmp_path))
    agent.cli("approve", sid)
    agent.cli("note", "kept")
    agent.kill()
    with open(home.journal_path(sid), "ab") as journal:  # a write cut short by the crash
        journal.write(b'{"data":{"text":"half a rec')
    agent = agent_factory()
    assert agent.call("status")["session"] == sid
    assert agent.cli("end").returncode == 0
    recs = records(home, sid)
    assert [r["data"]["text"] for r in recs if r["type"] == "note"] == ["kept"]
    set_aside = [r["data"]["set_aside"] for r in recs if r["type"] == "recovery" and r["data"].get("set_aside")]
    assert set_aside and set_aside[0]["bytes"] == len(b'{"data":{"text":"half a rec')
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


def test_sigkill_mid_session_then_restart_resumes_with_a_recovery_record(agent_factory, home, tmp_path):
    agent = agent_factory()
    sid = _request(agent, "--watch", str(tmp_path))
    agent.cli("approve", sid)
    agent.cli("note", "before the crash")
    pending = _request(agent, "--watch", str(tmp_path))
    agent.kill()
    assert "seal" not in types(home, sid)

    agent = agent_factory()
    status = agent.call("status")
    assert (status["state"], status["session"], status["pending"]) == ("active", sid, 0)
    recovery = [r["data"] for r in records(home, sid) if r["type"] == "recovery"]
    assert len(recovery) == 1, "one recovery record per restart"
    assert recovery[0]["resumed"] is True and recovery[0]["gap_s"] >= 0 and recovery[0]["set_aside"] is None
    assert History(home).get(pending)["state"] == "expired"
    assert_sealed_and_genuine(home, pending)

    assert agent.cli("note", "after the crash").returncode == 0
    assert agent.cli("end").returncode == 0
    notes = [r["data"]["text"] for r in records(home, sid) if r["type"] == "note"]
    assert notes == ["before the crash", "after the crash"]
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


def test_sigkill_then_restart_after_the_limit_ends_with_reason_recovery(agent_factory, home, tmp_path):
    agent = agent_factory()
    sid = _request(agent, "--watch", str(tmp_path), "--duration", "2s")
    agent.cli("approve", sid)
    agent.kill()
    until = next(r["data"]["granted"]["until"] for r in records(home, sid) if r["type"] == "decision")
    while datetime.now(UTC) <= parse_rfc3339(until):  # the limit passes while no agent runs
        time.sleep(0.1)
    agent = agent_factory()
    assert agent.call("status")["state"] == "idle"
    end = next(r["data"] for r in records(home, sid) if r["type"] == "session-end")
    assert end == {"reason": "recovery", "by": None}
    recovery = [r["data"] for r in records(home, sid) if r["type"] == "recovery"]
    assert len(recovery) == 1 and recovery[0]["resumed"] is False and recovery[0]["gap_s"] >= 0
    assert History(home).get(sid)["end_reason"] == "recovery"
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


def test_a_second_agent_says_the_first_is_running(agent):
    second = agent.cli("agent")
    assert second.returncode == 2
    assert f"already running for {agent.home.path} (pid {agent.pid})" in second.stderr
    assert agent.call("ping")["pid"] == agent.pid


def test_a_home_path_too_long_for_the_socket_is_a_plain_error(tmp_path, chaperone_cmd):
    deep = tmp_path / ("x" * 100)
    done = subprocess.run([*chaperone_cmd, "agent", "--home", str(deep)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "too long for the agent's socket" in done.stderr and "Traceback" not in done.stderr


def test_one_session_at_a_time(agent, tmp_path):
    first = _request(agent, "--watch", str(tmp_path))
    second = _request(agent, "--watch", str(tmp_path))
    assert agent.cli("approve", first).returncode == 0
    blocked = agent.cli("approve", second)
    assert blocked.returncode == 2
    assert f"Session {first} is still running; end it before allowing another." in blocked.stderr
    assert [p["id"] for p in agent.call("pending")] == [second]  # it waits
    agent.cli("end")
    assert agent.cli("approve", second).returncode == 0


@pytest.mark.parametrize("setting", [{"require_verified": True}])
def test_require_verified_refuses_unsigned_requests_with_the_reason(agent, home, tmp_path, setting):
    home.settings_path.write_text(json.dumps(setting))
    done = agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--json")
    result = json.loads(done.stdout)
    assert result["state"] == "refused"
    decision = next(r["data"] for r in records(home, result["id"]) if r["type"] == "decision")
    assert decision["how"] == "policy"
    assert decision["reason"] == ("This computer accepts only verified requests, and this one is "
                                  "NOT VERIFIED: the request is not signed.")
    assert_sealed_and_genuine(home, result["id"])
    assert agent.call("pending") == []


def test_real_capture_records_what_the_technician_touched(agent_factory, home, tmp_path):
    agent = agent_factory(capture=True)
    watched = tmp_path / "watched"
    watched.mkdir()
    events = Events(agent.client)
    sid = _request(agent, "--watch", str(watched))
    agent.cli("approve", sid)
    events.wait_for("session-started", lambda d: d["id"] == sid, timeout=60)
    (watched / "evil.conf").write_text("backdoor=1\n")
    item = events.wait_for("activity", lambda d: any(i["type"] == "file" for i in d["items"]), timeout=30)
    assert any(i["type"] == "file" and i["path"].endswith("evil.conf") for i in item["items"])
    assert agent.cli("end", timeout=120).returncode == 0
    events.close()
    kinds = types(home, sid)
    touched = next(i for i, r in enumerate(records(home, sid))
                   if r["type"] == "file" and r["data"]["path"].endswith("evil.conf"))
    assert kinds.index("session-start") < touched < kinds.index("session-end")
    assert "inventory" in kinds
    assert_sealed_and_genuine(home, sid, agent, tmp_path)
