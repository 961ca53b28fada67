"""The bridge against a real agent subprocess: events become signals, calls run off the GUI thread."""

from __future__ import annotations

import threading

import pytest

from agent.errors import AgentUnavailable, ChaperoneError
from ui.agent_process import AgentProcess as TrayAgentProcess
from ui.bridge import AgentBridge

REQUEST = {"technician": "Ada Lovelace", "email": "ada@example.com", "org": "Acme", "ticket": "T-1",
           "reason": "printer", "duration_s": 60, "watch": []}


@pytest.fixture
def bridge(home):
    b = AgentBridge(home)
    yield b
    b.stop()
    assert not b.running


def test_events_become_signals_through_a_whole_session(qtbot, agent, bridge):
    with qtbot.waitSignal(bridge.connected, timeout=10_000) as connected:
        bridge.start()
    assert connected.args[0]["status"]["state"] == "idle" and connected.args[0]["pending"] == []

    with qtbot.waitSignal(bridge.consentNeeded, timeout=10_000) as needed:
        request_id = agent.call("request", request=REQUEST)["id"]
    assert needed.args[0]["id"] == request_id and needed.args[0]["technician"] == "Ada Lovelace"

    answers = []
    with qtbot.waitSignals([bridge.consentDecided, bridge.sessionStarted], timeout=10_000):
        bridge.call("decide", id=request_id, decision="allow", how="click", on_done=answers.append)
    qtbot.waitUntil(lambda: answers == [{"id": request_id, "state": "allowed"}])

    seen = []
    bridge.activity.connect(lambda items, _coalesced: seen.extend(items))
    qtbot.waitUntil(lambda: any(i.get("type") == "session-start" for i in seen), timeout=10_000)

    with qtbot.waitSignal(bridge.sessionEnded, timeout=10_000) as ended:
        bridge.call("end", id=request_id, reason="customer")
    assert ended.args[0] == {"id": request_id, "reason": "customer"}


def test_call_errors_arrive_as_one_sentence(qtbot, agent, bridge):
    errors = []
    bridge.call("decide", id="s-no-such", decision="allow", how="click", on_error=errors.append)
    bridge.start()
    qtbot.waitUntil(lambda: len(errors) == 1)
    assert isinstance(errors[0], str) and errors[0].endswith(".") and "\n" not in errors[0]


def test_reconnects_when_the_agent_restarts(qtbot, agent_factory, home, bridge):
    first = agent_factory()
    with qtbot.waitSignal(bridge.connected, timeout=10_000):
        bridge.start()
    with qtbot.waitSignal(bridge.disconnected, timeout=10_000) as lost:
        first.kill()
    assert lost.args[0].endswith((".", "?")) and "\n" not in lost.args[0]   # one sentence
    assert not bridge.is_connected
    with qtbot.waitSignal(bridge.connected, timeout=20_000) as back:
        second = agent_factory()
    assert back.args[0]["status"]["state"] == "idle"
    assert second.pid != first.pid


def test_starts_an_agent_when_none_answers_and_stops_it(qtbot, home):
    launcher = TrayAgentProcess(home)
    bridge = AgentBridge(home, launcher=launcher)
    try:
        with qtbot.waitSignal(bridge.connected, timeout=20_000):
            bridge.start()
        assert launcher.running() and launcher.starts == 1
    finally:
        bridge.stop()
        launcher.stop()
    assert not launcher.running()
    with pytest.raises(AgentUnavailable):
        from agent.api.client import AgentClient

        AgentClient(home).call("ping")


def test_a_burst_is_handed_over_in_bounded_slices(qtbot, home):
    bridge = AgentBridge(home, max_items_per_tick=1000)
    batches = []
    bridge.activity.connect(lambda items, coalesced: batches.append((len(items), coalesced, items[0]["n"])))
    for start in range(0, 10_000, 500):
        bridge.dispatch({"event": "activity",
                         "data": {"items": [{"type": "note", "n": n} for n in range(start, start + 500)],
                                  "coalesced": 1}})
    bridge.dispatch({"event": "activity", "data": {"items": "not a list", "coalesced": "x"}})
    bridge.dispatch("not even a dict")
    while bridge.backlog or not batches:
        bridge.drain()
    assert [size for size, _, _ in batches] == [1000] * 10
    assert [first for _, _, first in batches] == list(range(0, 10_000, 1000))   # order kept
    assert sum(c for _, c, _ in batches) == 20
    bridge.stop()


def test_jobs_run_off_the_gui_thread_and_report_failures(qtbot, home):
    bridge = AgentBridge(home)
    gui_thread = threading.get_ident()
    results, errors = [], []

    def work(x):
        return x * 2, threading.get_ident()

    def broken():
        raise OSError(28, "No space left on device")

    def refused():
        raise ChaperoneError("The bundle is not a zip file.")

    bridge.run(work, 21, on_done=results.append)
    bridge.run(broken, on_error=errors.append)
    bridge.run(refused, on_error=errors.append)
    qtbot.waitUntil(lambda: (bridge.drain(), len(results) == 1 and len(errors) == 2)[1])
    assert results[0][0] == 42 and results[0][1] != gui_thread
    assert sorted(errors) == ["The bundle is not a zip file.", "The system refused: the disk is full."]
    bridge.stop()
    assert bridge.run(work, 1).cancelled()


class FloodingClient:
    """Stands in for AgentClient where a real agent cannot produce a burst on demand."""

    def __init__(self, events):
        self._events = events
        self.closed = threading.Event()

    def call(self, op, **params):
        return {"status": {"state": "active", "session": "s-1", "active": None, "pending": 0}}.get(op, [])

    def subscribe(self):
        for event in self._events:
            if self.closed.is_set():
                return
            yield event
        self.closed.wait(30)

    def close(self):
        self.closed.set()


def test_the_subscription_waits_for_the_views_and_loses_nothing(qtbot, home):
    from ui.activity import describe_all

    events = [{"event": "activity", "data": {"items": [{"type": "note", "text": str(n)} for n in range(s, s + 500)]
                                             + ["junk", 7], "coalesced": 0}} for s in range(0, 20_000, 500)]
    client = FloodingClient(events)
    bridge = AgentBridge(home, client_factory=lambda _home: client, activity_transform=describe_all,
                         max_items_per_tick=1000)
    rows, most_ahead = [], []
    bridge.activity.connect(lambda items, _c: (rows.extend(items), most_ahead.append(bridge._ahead)))
    try:
        bridge.start()
        qtbot.waitUntil(lambda: len(rows) == 20_000, timeout=20_000)
    finally:
        bridge.stop()
    assert [row[2] for row in rows] == [str(n) for n in range(20_000)]   # every row, in order, no junk
    assert max(most_ahead) <= 1000 + 500        # never more than a tick and one event ahead
    assert not bridge.running


def test_the_bridge_uses_the_system_agent_when_one_is_installed(tmp_path, monkeypatch, home):
    import socket

    from agent.api.client import AgentClient
    from ui.bridge import default_client_factory

    path = tmp_path / "customer.sock"
    monkeypatch.setenv("CHAPERONE_SYSTEM_SOCKET", str(path))
    personal = default_client_factory(home)
    assert isinstance(personal, AgentClient) and personal.home == home  # no system agent: the home's
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    try:
        system = default_client_factory(home)
        assert system.home is None and system.socket_path == path
    finally:
        listener.close()
