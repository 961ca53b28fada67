"""The session's side of failing closed: a full disk, a dead capture thread, a lost guard, a stall, a restart.

Real journal and history (on a real tmpfs for the full disk), real device
key; capture and ``end_access`` are stand-ins, because the tests are about
what the manager does with them. The guard itself is tested in
tests/unit/test_guard.py and, with a real agent and sshd, tests/e2e.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading

import pytest

from agent.clock import parse_rfc3339, utc_now
from agent.devicekey import DeviceKey
from agent.history import History
from agent.home import Home
from agent.journal import verify_journal
from agent.session.access import read_access, write_report
from agent.session.caller import Caller
from agent.session.lifecycle import State
from agent.session.manager import SessionManager
from agent.session.recovery import gap_data, journal_facts, plan_recovery
from tests.conftest import wait_for

CUSTOMER = Caller(uid=0, user="root", pid=1)
FIELDS = {"technician": "Alice", "email": "alice@example.com", "org": "Acme", "ticket": "1", "reason": "r",
          "watch": ["/tmp"]}


class FakeCapture:
    def __init__(self, sink, watch, pids, redactor=None):
        self.sink = sink
        self.dead: list[str] = []
        self.gaps: list[dict] = []
        self.stopped = threading.Event()

    def prepare(self):
        pass

    def emit_many(self, n: int, size: int = 3000) -> list[int]:
        return [self.sink.emit("file", {"op": "created", "path": f"/w/{i}", "diff": "x" * size}) for i in range(n)]

    def dead_workers(self):
        return list(self.dead)

    def after_gap(self, gap):
        self.gaps.append(gap)

    def stop(self):
        self.stopped.set()
        self.sink.emit("inventory", {"phase": "after", "category": "packages", "items": 1, "sha256": "0" * 64})


class EndAccess:
    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, session_id: str) -> dict:
        self.calls.append(session_id)
        return {"ended": [{"pid": 4242, "process": "sshd"}], "survivors": []}


def records(home, sid):
    return [json.loads(line) for line in home.journal_path(sid).read_bytes().splitlines()]


async def start_session(home, device_key, end_access, captures, **kwargs):
    mgr = SessionManager(home, device_key, publish=lambda n, d: None, end_access=end_access,
                         capture_factory=lambda *a, **k: captures.append(FakeCapture(*a, **k)) or captures[-1], **kwargs)
    await mgr.start()
    sid = (await mgr.submit(fields=FIELDS, caller=CUSTOMER))["id"]
    await mgr.decide(sid, "allow", "click", CUSTOMER)
    await mgr._sessions[sid].activation
    return mgr, sid


async def until(predicate, timeout=15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return predicate()


@pytest.fixture
def tmpfs_home(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    home = Home(mnt / "home")
    DeviceKey.init(home)
    yield home, mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_ends_the_technicians_access_and_the_session_then_seals_when_space_returns(tmpfs_home):
    home, mnt = tmpfs_home
    device_key = DeviceKey.load(home)
    end_access, captures = EndAccess(), []

    async def scenario():
        mgr, sid = await start_session(home, device_key, end_access, captures)
        fill(mnt / "filler")
        seqs = await asyncio.to_thread(captures[0].emit_many, 200)  # the technician works; the disk refuses
        journal = mgr._sessions[sid].journal
        assert journal.failing is not None and -1 not in seqs  # held in memory, not lost
        mgr.failclosed.tick()
        assert await until(lambda: end_access.calls == [sid])
        assert await until(lambda: mgr.status()["state"] == "idle")  # not active: no new login is let in
        assert sid in mgr._sessions and not journal.sealed  # the seal waits for the disk
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        assert await until(lambda: sid not in mgr._sessions)
        await mgr.stop()
        return sid, seqs

    sid, seqs = asyncio.run(scenario())
    recs = records(home, sid)
    kinds = [r["type"] for r in recs]
    assert [r["seq"] for r in recs if r["type"] == "file"] == seqs  # every record, in its place
    (closed,) = [r["data"] for r in recs if r["type"] == "fail-closed"]
    assert closed["cause"] == "disk" and "disk is full" in closed["detail"] and closed["access"]["ended"]
    assert next(r["data"] for r in recs if r["type"] == "session-end")["reason"] == "fail-closed"
    gap = next(r["data"] for r in recs if r["type"] == "gap")
    assert gap["cause"] == "disk" and gap["held"] > 0
    assert kinds.index("fail-closed") < kinds.index("session-end") < kinds.index("gap") < kinds.index("seal")
    assert kinds[-1] == "seal" and recs[-1]["data"]["reason"] == "fail-closed"
    assert verify_journal(home.journal_path(sid), device_key.public_blob).ok
    assert History(home).get(sid)["state"] == "sealed"


def test_a_capture_thread_that_died_is_recorded_and_the_session_fails_closed(home, device_key):
    end_access, captures = EndAccess(), []

    async def scenario():
        mgr, sid = await start_session(home, device_key, end_access, captures)
        captures[0].dead = ["process sampler"]
        mgr.failclosed.tick()
        assert await until(lambda: sid not in mgr._sessions)
        await mgr.stop()
        return sid

    sid = asyncio.run(scenario())
    recs = records(home, sid)
    (error,) = [r["data"] for r in recs if r["type"] == "capture-error"]
    assert error["what"] == "worker-died" and "process sampler" in error["error"]
    assert next(r["data"] for r in recs if r["type"] == "fail-closed")["cause"] == "capture"
    assert end_access.calls == [sid] and captures[0].stopped.is_set()  # the final rescan still ran
    assert History(home).get(sid)["end_reason"] == "fail-closed"


def test_losing_the_guard_is_an_alarm_and_the_session_fails_closed(home, device_key):
    end_access, captures = EndAccess(), []

    async def scenario():
        mgr, sid = await start_session(home, device_key, end_access, captures)
        mgr.failclosed.guard_lost("The guard (pid 99) was killed by a signal.")
        assert await until(lambda: sid not in mgr._sessions)
        await mgr.stop()
        return sid

    sid = asyncio.run(scenario())
    recs = records(home, sid)
    (alarm,) = [r["data"] for r in recs if r["type"] == "alarm"]
    assert alarm["kind"] == "guard-lost" and "pid 99" in alarm["detail"]
    assert next(r["data"] for r in recs if r["type"] == "session-end")["reason"] == "fail-closed"


def test_a_stall_is_a_gap_record_with_the_guards_report_and_a_rescan(home, device_key):
    end_access, captures = EndAccess(), []

    async def scenario():
        mgr, sid = await start_session(home, device_key, end_access, captures)
        report = write_report(home.session_dir(sid), {
            "cause": "stopped", "last_beat": "2026-01-01T00:00:00.000000Z", "acted": "2026-01-01T00:00:01.200000Z",
            "access": {"ended": [{"pid": 4242}], "survivors": []}})
        mgr.failclosed.note_gap(1767225600.0, 1767225609.0)
        assert await until(lambda: captures[0].gaps)
        assert not report.exists()  # journaled, then removed
        assert mgr.status()["state"] == "active"  # the agent runs again: the session goes on
        await mgr.end(sid, CUSTOMER)
        await mgr.stop()
        return sid

    sid = asyncio.run(scenario())
    (gap,) = [r["data"] for r in records(home, sid) if r["type"] == "gap"]
    assert gap["cause"] == "stopped" and gap["by"] == "guard" and gap["from"] == "2026-01-01T00:00:00.000000Z"
    assert gap["to"] == "2026-01-01T00:00:09.000000Z" and gap["gap_s"] == 9
    assert gap["access"]["ended"] == [{"pid": 4242}]
    assert captures[0].gaps == [gap]


def test_the_access_file_names_the_technicians_processes_for_the_guard(home, device_key):
    import types

    me = os.getpid()
    hooks = types.SimpleNamespace(technician_pids=lambda session: {me}, on_session_ended=lambda *a: None)
    ssh = {"user": "bob", "key_fingerprint": "SHA256:abc", "key_type": "ssh-ed25519"}
    captures: list = []

    async def scenario():
        mgr = SessionManager(home, device_key, publish=lambda n, d: None, login_hooks={"ssh": hooks},
                             capture_factory=lambda *a, **k: captures.append(FakeCapture(*a, **k)) or captures[-1])
        await mgr.start()
        sid = (await mgr.submit(fields={**FIELDS, "ssh": ssh}, source="ssh", caller=CUSTOMER))["id"]
        await mgr.decide(sid, "allow", "click", CUSTOMER)
        await mgr._sessions[sid].activation
        mgr.failclosed.tick()
        assert await until(lambda: read_access(home.session_dir(sid), sid))
        processes = read_access(home.session_dir(sid), sid)
        await mgr.stop()
        return processes

    import psutil

    assert asyncio.run(scenario()) == [(me, psutil.Process(me).create_time())]


def test_after_a_restart_the_gap_is_recorded_with_the_guards_cause(home, device_key, monkeypatch):
    monkeypatch.setenv("CHAPERONE_MIN_DURATION", "1")
    end_access, captures = EndAccess(), []

    async def crash():
        mgr, sid = await start_session(home, device_key, end_access, captures)
        for session in mgr._sessions.values():  # kill -9: nothing is sealed
            session.cancel_timers()
            session.journal.close()
        return sid

    sid = asyncio.run(crash())
    write_report(home.session_dir(sid), {"cause": "killed", "last_beat": "2026-01-01T00:00:00.000000Z",
                                         "acted": "2026-01-01T00:00:00.100000Z",
                                         "access": {"ended": [{"pid": 1}, {"pid": 2}], "survivors": []}})

    async def restart():
        mgr = SessionManager(home, device_key, publish=lambda n, d: None, end_access=end_access,
                             capture_factory=lambda *a, **k: captures.append(FakeCapture(*a, **k)) or captures[-1])
        await mgr.start()
        assert mgr.status()["state"] == "active"  # within its time: it resumes
        await mgr.end(sid, CUSTOMER)
        await mgr.stop()

    asyncio.run(restart())
    kinds = [r["type"] for r in records(home, sid)]
    gap = next(r["data"] for r in records(home, sid) if r["type"] == "gap")
    assert kinds.index("recovery") < kinds.index("gap") < kinds.index("session-end")
    assert gap["cause"] == "killed" and "2 process(es)" in gap["detail"] and gap["by"] == "guard"
    assert list(home.session_dir(sid).glob("guard-*.json")) == []


def test_a_journal_that_holds_its_end_is_only_sealed_whatever_the_history_says(tmp_path, device_key):
    from agent.journal import Journal

    path = tmp_path / "session.jsonl"
    with Journal.create(path, "s-1", device_key) as j:
        j.append("request", {**FIELDS})
        j.append("decision", {"decision": "allow", "granted": {"until": "2999-01-01T00:00:00.000000Z"}})
        j.append("session-end", {"reason": "fail-closed", "by": None})
    facts = journal_facts(path)
    plan = plan_recovery(State.ACTIVE, facts, utc_now())  # the history never heard of the end (a full disk)
    assert facts["ended"] == "fail-closed" and plan.step.value == "seal-ended"


def test_gap_data_says_what_happened_in_plain_words():
    data = gap_data({"cause": "hung", "last_beat": "2026-01-01T00:00:00.000000Z"}, "2025-12-31T23:59:59.000000Z",
                    "2026-01-01T00:01:00.000000Z")
    assert data["cause"] == "hung" and data["gap_s"] == 60 and data["from"] == "2026-01-01T00:00:00.000000Z"
    assert "stopped answering" in data["detail"]
    unknown = gap_data({"cause": "<script>"}, None, "2026-01-01T00:01:00.000000Z")
    assert unknown["cause"] == "unknown" and unknown["gap_s"] is None


def test_a_session_that_cannot_resume_gets_its_last_rescan_and_after_inventory(home, device_key, monkeypatch):
    monkeypatch.setenv("CHAPERONE_MIN_DURATION", "1")
    end_access, captures = EndAccess(), []

    class SavingCapture(FakeCapture):
        def prepare(self):  # as the real one does on its first start
            self.sink.emit("baseline", {"phase": "saved", "file": "baseline.bin", "sha256": "0" * 64})

    def factory(*args, **kwargs):
        captures.append(SavingCapture(*args, **kwargs))
        return captures[-1]

    async def crash():
        mgr = SessionManager(home, device_key, publish=lambda n, d: None, end_access=end_access,
                             capture_factory=factory)
        await mgr.start()
        sid = (await mgr.submit(fields={**FIELDS, "duration_s": 2}, caller=CUSTOMER))["id"]
        await mgr.decide(sid, "allow", "click", CUSTOMER)
        await mgr._sessions[sid].activation
        for session in mgr._sessions.values():  # kill -9 ...
            session.cancel_timers()
            session.journal.close()
        return sid

    sid = asyncio.run(crash())
    until_ts = next(r["data"]["granted"]["until"] for r in records(home, sid) if r["type"] == "decision")
    assert wait_for(lambda: utc_now() > parse_rfc3339(until_ts), timeout=10)  # ... and back only after its time

    async def restart():
        mgr = SessionManager(home, device_key, publish=lambda n, d: None, end_access=end_access,
                             capture_factory=factory)
        await mgr.start()
        await mgr.stop()

    asyncio.run(restart())
    kinds = [r["type"] for r in records(home, sid)]
    assert len(captures) == 2 and captures[1].stopped.is_set()  # a capture only to look once more, then stop
    assert kinds.index("recovery") < kinds.index("gap") < kinds.index("session-end") < kinds.index("inventory")
    assert kinds[-1] == "seal" and end_access.calls == [sid]  # what was left of the access, ended at restart
    assert History(home).get(sid)["state"] == "sealed"
