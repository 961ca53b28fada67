"""SessionManager in-process: capture wiring, activity batching, SSH hooks, failures journaled.

Real journal, real history, real device key; capture and the SSH hooks are
stand-ins because the tests are about how the manager drives them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types

import pytest

from agent.clock import parse_rfc3339, utc_now
from agent.errors import ApiError
from agent.history import History
from agent.journal import verify_journal
from agent.session import manager as manager_mod
from agent.session.caller import Caller
from agent.session.manager import SessionManager
from agent.session.sink import ACTIVITY_BATCH_CAP

CUSTOMER = Caller(uid=0, user="root", pid=1)
TECHNICIAN = Caller(uid=0, user="root", pid=2, role="technician", where={"remote": True})
FIELDS = {"technician": "Alice", "email": "alice@example.com", "org": "Acme", "ticket": "1", "reason": "r"}


class FakeCapture:
    """Emits ``burst`` file records from a thread of its own during prepare, as real capture would."""

    def __init__(self, sink, watch, pids, burst=0, fail_prepare=False, fail_stop=False):
        self.sink, self.watch, self.pids = sink, watch, pids
        self.burst, self.fail_prepare, self.fail_stop = burst, fail_prepare, fail_stop
        self.calls: list[str] = []

    def prepare(self):
        self.calls.append(f"prepare:{threading.current_thread() is threading.main_thread()}")
        if self.fail_prepare:
            raise OSError("inotify watch limit reached")
        worker = threading.Thread(target=lambda: [self.sink.emit("file", {"op": "created", "path": f"/w/{i}"})
                                                  for i in range(self.burst)])
        worker.start()
        worker.join()

    def stop(self):
        self.calls.append("stop")
        if self.fail_stop:
            raise RuntimeError("watcher thread died")
        self.sink.emit("inventory", {"phase": "after", "category": "packages", "items": 1, "sha256": "0" * 64})


def _run(home, device_key, scenario, **kwargs):
    events: list[tuple[str, dict]] = []

    async def main():
        mgr = SessionManager(home, device_key, publish=lambda n, d: events.append((n, d)), **kwargs)
        await mgr.start()
        try:
            return await scenario(mgr)
        finally:
            await mgr.stop()

    return asyncio.run(main()), events


async def _allowed(mgr, fields=FIELDS, source="cli", settle=0.3):
    sid = (await mgr.submit(fields={**fields, "watch": ["/tmp"]}, source=source, caller=CUSTOMER))["id"]
    await mgr.decide(sid, "allow", "click", CUSTOMER)
    await asyncio.sleep(settle)  # capture starts in a thread; activity flushes every 100 ms
    return sid


def _records(home, sid):
    return [json.loads(line) for line in home.journal_path(sid).read_bytes().splitlines()]


def test_capture_runs_off_the_loop_and_its_records_reach_journal_and_subscribers(home, device_key):
    made = []

    def factory(sink, watch, pids, redactor=None):
        made.append(FakeCapture(sink, watch, pids, burst=ACTIVITY_BATCH_CAP + 150))
        return made[0]

    async def scenario(mgr):
        sid = await _allowed(mgr)
        await mgr.end(sid, CUSTOMER)
        return sid

    sid, events = _run(home, device_key, scenario, capture_factory=factory)
    assert made[0].calls == ["prepare:False", "stop"] and made[0].watch == ["/tmp"] and made[0].pids is None
    kinds = [r["type"] for r in _records(home, sid)]
    assert kinds.count("file") == ACTIVITY_BATCH_CAP + 150
    assert kinds.index("session-end") < kinds.index("inventory") < kinds.index("seal")
    batches = [d for n, d in events if n == "activity"]
    files_sent = sum(1 for b in batches for i in b["items"] if i["type"] == "file")
    assert all(len(b["items"]) <= ACTIVITY_BATCH_CAP for b in batches)
    assert files_sent + sum(b["coalesced"] for b in batches) >= ACTIVITY_BATCH_CAP + 150  # none silently dropped
    assert sum(b["coalesced"] for b in batches) > 0
    assert verify_journal(home.journal_path(sid), device_key.public_blob).ok


@pytest.mark.parametrize("failure, what", [("factory", "capture"), ("prepare", "capture"), ("stop", "capture-stop")])
def test_capture_failures_are_journaled_and_the_session_still_runs_and_seals(home, device_key, failure, what):
    def factory(sink, watch, pids, redactor=None):
        if failure == "factory":
            raise ImportError("No module named 'agent.capture'")
        return FakeCapture(sink, watch, pids, fail_prepare=failure == "prepare", fail_stop=failure == "stop")

    async def scenario(mgr):
        sid = await _allowed(mgr)
        assert mgr.status()["state"] == "active"
        await mgr.end(sid, TECHNICIAN)
        return sid

    sid, _ = _run(home, device_key, scenario, capture_factory=factory)
    errors = [r["data"] for r in _records(home, sid) if r["type"] == "capture-error"]
    assert [e["what"] for e in errors] == [what]
    assert History(home).get(sid)["state"] == "sealed"
    assert verify_journal(home.journal_path(sid), device_key.public_blob).ok


def test_ssh_sessions_call_the_ssh_hooks(home, device_key, monkeypatch):
    seen = {}

    def on_session_ended(session, settings, emit):
        seen["session"] = session
        emit("ssh-connections", {"action": "ended", "user": "bob", "connections": []})

    hooks = types.SimpleNamespace(technician_pids=lambda session: {4242}, on_session_ended=on_session_ended,
                                  on_session_started=lambda session, settings, emit: seen.setdefault("started", session))
    pids_seen = []

    def factory(sink, watch, pids, redactor=None):
        pids_seen.append(pids())
        return FakeCapture(sink, watch, pids)

    ssh = {"user": "bob", "key_fingerprint": "SHA256:abc", "key_type": "ssh-ed25519"}

    async def scenario(mgr):
        sid = await _allowed(mgr, fields={**FIELDS, "ssh": ssh}, source="ssh")
        assert mgr.pending() == []
        await mgr.end(sid, CUSTOMER)
        return sid

    sid, _ = _run(home, device_key, scenario, capture_factory=factory, login_hooks={"ssh": hooks})
    assert pids_seen == [{4242}]
    assert seen["session"]["id"] == sid and seen["session"]["ssh"] == ssh
    assert seen["session"]["home"] == str(home.path) and seen["session"]["source"] == "ssh"
    recs = _records(home, sid)
    assert next(r["data"] for r in recs if r["type"] == "request")["ssh"] == ssh
    kinds = [r["type"] for r in recs]
    assert kinds.index("session-end") < kinds.index("ssh-connections") < kinds.index("seal")


def test_pending_requests_are_capped(home, device_key):
    async def scenario(mgr):
        for _ in range(manager_mod.MAX_PENDING):
            await mgr.submit(fields={**FIELDS, "watch": ["/tmp"]}, caller=CUSTOMER)
        with pytest.raises(ApiError, match="already waiting for a decision") as info:
            await mgr.submit(fields={**FIELDS, "watch": ["/tmp"]}, caller=CUSTOMER)
        assert info.value.code == "unavailable"
        return len(mgr.pending())

    count, _ = _run(home, device_key, scenario, capture_factory=lambda *a, **_: FakeCapture(*a))
    assert count == manager_mod.MAX_PENDING
    assert {r["state"] for r in History(home).list()} == {"expired"}  # the stop expired them all, sealed


def test_resumed_session_whose_warning_fell_in_the_gap_is_warned_at_once(home, device_key, monkeypatch):
    monkeypatch.setenv("CHAPERONE_MIN_DURATION", "1")
    factory = lambda *a, **_: FakeCapture(*a)  # noqa: E731

    async def crash_after_allowing():
        events: list = []
        mgr = SessionManager(home, device_key, publish=lambda n, d: events.append(n), capture_factory=factory)
        await mgr.start()
        sid = (await mgr.submit(fields={**FIELDS, "watch": ["/tmp"], "duration_s": 6}, caller=CUSTOMER))["id"]
        await mgr.decide(sid, "allow", "click", CUSTOMER)
        await mgr._sessions[sid].activation
        for session in mgr._sessions.values():  # the process dies: nothing is sealed
            session.cancel_timers()
            session.journal.close()
        return sid

    sid = asyncio.run(crash_after_allowing())
    until = next(r["data"]["granted"]["until"] for r in _records(home, sid) if r["type"] == "decision")
    while (parse_rfc3339(until) - utc_now()).total_seconds() > 2.5:  # the warning (3 s before) falls in the gap
        time.sleep(0.05)

    async def restart():
        warned = asyncio.Event()
        mgr = SessionManager(home, device_key, capture_factory=factory,
                             publish=lambda n, d: warned.set() if n == "time-warning" else None)
        await mgr.start()
        await asyncio.wait_for(warned.wait(), 10)
        await mgr.stop()

    asyncio.run(restart())
    kinds = [r["type"] for r in _records(home, sid)]
    assert kinds.index("recovery") < kinds.index("time-warning") < kinds.index("session-end")
    assert verify_journal(home.journal_path(sid), device_key.public_blob).ok
