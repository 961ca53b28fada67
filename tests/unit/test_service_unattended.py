"""The unattended journal and the remote-access monitor's wiring in the agent."""

from __future__ import annotations

import json
import threading

from agent.journal import verify_journal
from agent.service.unattended import UnattendedSink, start_monitor

ALARM = {"tool": "rustdesk", "pid": 4242, "process": "rustdesk", "connections": [], "detail": "connected"}


def _assert_chain_intact(path, device_key):
    """The unattended journal is never sealed: its chain and checkpoints are all that can be checked."""
    check = verify_journal(path, device_key.public_blob)
    assert check.readable and "has no seal" in check.reason, check.reason
    assert check.checkpoints >= 1


def test_alarms_are_journaled_and_published(home, device_key):
    published = []
    sink = UnattendedSink(home, device_key, lambda name, data: published.append((name, data)))
    sink.emit("alarm", ALARM)
    sink.emit("capture-error", {"what": "remote-access scan", "path": None, "error": "boom"})
    sink.emit("alarm", {**ALARM, "pid": 4343})
    path = home.unattended_journal_path
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["data"]["pid"] for r in records if r["type"] == "alarm"] == [4242, 4343]
    assert {r["session"] for r in records} == {"unattended"}
    _assert_chain_intact(path, device_key)
    assert published == [("alarm", ALARM), ("alarm", {**ALARM, "pid": 4343})]  # errors are journaled, not alarms


def test_writers_in_threads_keep_one_chain(home, device_key):
    sink = UnattendedSink(home, device_key, lambda *a: None)
    threads = [threading.Thread(target=lambda i=i: sink.emit("alarm", {**ALARM, "pid": i})) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_chain_intact(home.unattended_journal_path, device_key)
    pids = sorted(json.loads(line)["data"].get("pid", -1) for line in home.unattended_journal_path.read_bytes()
                  .splitlines() if json.loads(line)["type"] == "alarm")
    assert pids == list(range(4))


def test_monitor_off_when_interval_is_zero(home, device_key):
    assert start_monitor(UnattendedSink(home, device_key, lambda *a: None), 0, lambda: False) is None
