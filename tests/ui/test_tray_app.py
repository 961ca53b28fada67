"""The whole tray app (offscreen) against a real agent subprocess: the customer's paths end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from ui.controller import TrayApp
from ui.notifier import NullNotifier

REQUEST = {"technician": "Ada Lovelace", "email": "ada@example.com", "org": "Acme", "ticket": "T-1",
           "reason": "printer", "duration_s": 600, "watch": []}


@pytest.fixture
def tray_app(qtbot, home):
    app = TrayApp(home, start_agent=False, notifier=NullNotifier(), tray_retries=1)
    yield app
    app.shutdown()
    assert not app.bridge.running


def started(qtbot, app: TrayApp) -> TrayApp:
    with qtbot.waitSignal(app.bridge.connected, timeout=10_000):
        app.start()
    return app


def said(app: TrayApp, words: str) -> bool:
    return any(words in body for _level, _title, body in app.notifier.history)


def current_dialog(qtbot, app: TrayApp):
    qtbot.waitUntil(lambda: app.queue.current_dialog is not None and app.queue.current_dialog.isVisible(),
                    timeout=10_000)
    return app.queue.current_dialog


def test_allow_then_end_from_the_session_bar(qtbot, agent, tray_app):
    app = started(qtbot, tray_app)
    app.dismiss_alarm()
    assert app.status().state == "idle"
    request_id = agent.call("request", request=REQUEST)["id"]
    dialog = current_dialog(qtbot, app)
    app.dismiss_alarm()   # this machine may run a remote-access tool the agent warns about
    assert dialog.request_id == request_id and app.status().state == "consent"
    assert said(app, "Ada Lovelace asks to connect")
    qtbot.waitUntil(dialog.allow_button.isEnabled)
    with qtbot.waitSignal(app.bridge.sessionStarted, timeout=10_000):
        qtbot.mouseClick(dialog.allow_button, Qt.MouseButton.LeftButton)
    assert app.bar.isVisible() and app.bar.session_id == request_id
    app.dismiss_alarm()
    assert app.status().state == "active" and app.status().can_end
    qtbot.waitUntil(lambda: app.activity_model.rowCount() > 0, timeout=10_000)

    with qtbot.waitSignal(app.bridge.sessionEnded, timeout=10_000):
        qtbot.mouseClick(app.bar.end_button, Qt.MouseButton.LeftButton)
    assert not app.bar.isVisible() and app.status().state in ("idle", "alarm")
    qtbot.waitUntil(lambda: agent.call("sessions")[0]["state"] == "sealed", timeout=10_000)
    history = agent.call("sessions")
    assert history[0]["id"] == request_id
    assert history[0]["end_reason"] == "customer" and history[0]["how"] == "click"


def test_deny_is_recorded_as_a_click(qtbot, agent, tray_app):
    app = started(qtbot, tray_app)
    request_id = agent.call("request", request=REQUEST)["id"]
    dialog = current_dialog(qtbot, app)
    with qtbot.waitSignal(app.bridge.consentDecided, timeout=10_000):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: len(app.queue) == 0)
    qtbot.waitUntil(lambda: agent.call("sessions")[0]["state"] == "refused", timeout=10_000)
    session = agent.call("sessions")[0]
    assert session["id"] == request_id and session["state"] == "refused" and session["how"] == "click"


def test_no_answer_is_a_refusal_by_the_agent(qtbot, agent_factory, tray_app):
    agent = agent_factory(consent_timeout=2)
    app = started(qtbot, tray_app)
    request_id = agent.call("request", request=REQUEST)["id"]
    dialog = current_dialog(qtbot, app)
    decisions = []
    dialog.decided.connect(lambda _rid, decision: decisions.append(decision))
    # Whichever comes first, the dialog's countdown or the agent's refusal, the dialog goes away.
    qtbot.waitUntil(lambda: len(app.queue) == 0, timeout=10_000)
    assert decisions in ([], ["timeout"])
    qtbot.waitUntil(lambda: agent.call("sessions")[0]["state"] == "expired", timeout=10_000)
    session = agent.call("sessions")[0]
    assert session["id"] == request_id and session["how"] == "timeout"


def test_several_requests_queue(qtbot, agent, tray_app):
    app = started(qtbot, tray_app)
    ids = [agent.call("request", request={**REQUEST, "ticket": f"T-{n}"})["id"] for n in range(3)]
    dialog = current_dialog(qtbot, app)
    qtbot.waitUntil(lambda: len(app.queue) == 3)
    assert dialog.request_id == ids[0] and "Request 1 of 3" in dialog.queue_label.text()
    app.dismiss_alarm()
    assert app.status().headline == "3 technicians ask to connect."
    dialog.reject()
    second = current_dialog(qtbot, app)
    qtbot.waitUntil(lambda: app.queue.current_id == ids[1])
    # The third is decided in a terminal: its dialog never shows, the queue forgets it.
    assert agent.cli("deny", ids[2]).returncode == 0
    qtbot.waitUntil(lambda: app.queue.ids() == [ids[1]], timeout=10_000)
    second = app.queue.current_dialog
    second.reject()
    qtbot.waitUntil(lambda: len(app.queue) == 0)
    qtbot.waitUntil(lambda: {s["id"]: s["state"] for s in agent.call("sessions")} == {i: "refused" for i in ids},
                    timeout=10_000)


def test_agent_vanishing_mid_session_is_said_and_recovered(qtbot, agent_factory, tray_app):
    first = agent_factory()
    app = started(qtbot, tray_app)
    request_id = first.call("request", request=REQUEST)["id"]
    first.call("decide", id=request_id, decision="allow", how="terminal")
    qtbot.waitUntil(lambda: app.active is not None, timeout=10_000)
    with qtbot.waitSignal(app.bridge.disconnected, timeout=10_000):
        first.kill()
    assert said(app, "Lost contact with the Chaperone agent")
    assert app.status().state in ("disconnected", "alarm")
    assert "Not connected" in app.status().headline
    with qtbot.waitSignal(app.bridge.connected, timeout=20_000):
        second = agent_factory()
    assert said(app, "Reconnected to the Chaperone agent")
    assert second.call("status")["state"] in ("idle", "active")
    app.dismiss_alarm()
    qtbot.waitUntil(lambda: app.status().state in ("idle", "active"))
    assert app.status().state == ("active" if second.call("status")["active"] else "idle")
    assert app.bar.isVisible() == (app.status().state == "active")


def test_request_file_errors_are_one_sentence(qtbot, agent, tray_app, tmp_path):
    app = started(qtbot, tray_app)
    garbage = tmp_path / "request.chaperone"
    garbage.write_bytes(b"\xff\xfe not a request")
    app.open_request_file(tmp_path / "missing.chaperone")
    app.open_request_file(garbage)
    qtbot.waitUntil(lambda: len(app.notifier.history) >= 2, timeout=10_000)
    bodies = [body for _l, _t, body in app.notifier.history]
    assert any(b.startswith("Cannot read the request file") for b in bodies)
    assert any("not UTF-8" in b for b in bodies)
    assert all("\n" not in b and "Traceback" not in b for b in bodies)


def test_open_a_request_file(qtbot, agent, tray_app, tmp_path):
    app = started(qtbot, tray_app)
    path = tmp_path / "request.chaperone"
    made = agent.cli("request", "--technician", "Grace", "--org", "Navy", "--ticket", "T-5", "--reason", "audit",
                     "-o", str(path))
    assert made.returncode == 0, made.stderr
    app.open_request_file(path)
    dialog = current_dialog(qtbot, app)
    assert dialog.ticket_label.text() == "T-5" and dialog.banner.level == "danger"   # unsigned: NOT VERIFIED
    dialog.reject()


def test_single_instance_forwards_to_the_first(qtbot, home):
    from ui.app import SingleInstance

    first, second = SingleInstance(home), SingleInstance(home)
    assert first.acquire()
    try:
        assert not second.acquire()
        with qtbot.waitSignal(first.messageReceived, timeout=5000) as blocker:
            assert second.forward({"open": "/tmp/request.chaperone"})
        assert blocker.args == [{"open": "/tmp/request.chaperone"}]
    finally:
        first.release()
    assert second.acquire()
    second.release()


def test_alarm_and_time_warning_states(qtbot, home):
    app = TrayApp(home, start_agent=False, notifier=NullNotifier(), tray_retries=1)
    try:
        app.bridge.is_connected = True          # as after a connection; this test feeds events by hand
        assert app.status().state == "idle"
        app.bridge.dispatch({"event": "alarm", "data": {"tool": "AnyDesk\u202e", "process": "anydesk", "pid": 7}})
        app.bridge.drain()
        assert app.status().state == "alarm"
        app.bridge.dispatch({"event": "session-started", "data": {
            "id": "s-1", "technician": "Ada", "org": "Acme", "started": "2026-11-22T03:00:00Z",
            "until": "2099-01-01T00:00:00Z"}})
        app.bridge.dispatch({"event": "time-warning", "data": {"id": "s-1", "remaining_s": 290}})
        app.bridge.drain()
        status = app.status()
        # "without a session you allowed" is no longer true once one is allowed: the alarm is kept, as earlier
        assert status.state == "active" and not status.alarm and status.can_end
        assert "An earlier alarm, from before this session: AnyDesk\\u202e" in status.detail
        assert "\u202e" not in status.detail
        assert app.bar.isVisible() and app.bar.warning
        assert said(app, "The session ends in 4:50")
        assert app.activity_model.rowCount() == 1            # the alarm is in the live view too
        app.bridge.dispatch({"event": "alarm", "data": {"tool": "chaperone", "kind": "refused-attempt", "pid": 9,
                                                        "detail": "A process of alice (pid 9) tried 'decide'."}})
        app.bridge.drain()
        status = app.status()
        assert status.state == "alarm" and status.alarm and status.can_end and "tried 'decide'" in status.detail
        app.dismiss_alarm()
        assert app.status().state == "active"
        app.bridge.dispatch({"event": "session-ended", "data": {"id": "s-1", "reason": "time-limit"}})
        app.bridge.dispatch({"event": "session-sealed", "data": {"id": "s-1", "reason": "time-limit",
                                                                 "disconnected": 0}})
        app.bridge.drain()
        assert app.status().state == "idle" and not app.bar.isVisible()
        assert said(app, "The session is over and its log is sealed.")
        assert not said(app, "disconnected")  # nobody was: it does not say so
        app.bridge.dispatch({"event": "session-sealed", "data": {"id": "s-2", "reason": "customer",
                                                                 "disconnected": 1}})
        app.bridge.drain()
        assert said(app, "The technician was disconnected and the log is sealed.")
    finally:
        app.shutdown()


def test_the_agent_the_tray_started_is_started_again_when_it_dies(qtbot, home, monkeypatch):
    monkeypatch.setenv("CHAPERONE_CAPTURE", "off")
    app = TrayApp(home, start_agent=True, notifier=NullNotifier(), tray_retries=1)
    try:
        with qtbot.waitSignal(app.bridge.connected, timeout=30_000):
            app.start()
        assert app.agent_process.starts == 1
        with qtbot.waitSignal(app.bridge.disconnected, timeout=10_000):
            app.agent_process._proc.kill()
        with qtbot.waitSignal(app.bridge.connected, timeout=30_000):
            pass
        assert app.agent_process.starts == 2 and app.agent_process.running()
        assert said(app, "Lost contact") and said(app, "Reconnected")
    finally:
        app.shutdown()
    assert not app.agent_process.running()


def test_no_desktop_is_one_sentence_not_a_qt_abort(tmp_path):
    import subprocess
    import sys

    from ui.app import display_problem

    assert display_problem({}, "linux") is not None
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({}, "darwin") is None
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "ui.app", "--home", str(tmp_path / "h")], capture_output=True,
                         text=True, env=env, timeout=60, cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 2
    assert "no desktop session" in out.stderr and "Traceback" not in out.stderr and "Aborted" not in out.stderr


def test_quitting_during_a_session_asks_first(qtbot, home):
    app = TrayApp(home, start_agent=False, notifier=NullNotifier(), tray_retries=1)
    answers: list[bool] = []
    app.confirm_quit = lambda: answers.pop(0)
    try:
        quits: list[bool] = []
        app.quitRequested.connect(lambda: quits.append(True))
        app.request_quit()                   # nobody is connected: no question
        assert quits == [True]
        app.active = {"id": "s-1", "technician": "Ada"}
        answers.append(False)
        app.request_quit()
        assert quits == [True] and answers == []  # asked, and "No" keeps the tray
        answers.append(True)
        app.request_quit()
        assert quits == [True, True]
    finally:
        app.shutdown()


def test_the_tray_says_which_agent_records_this_computer(qtbot, home):
    app = TrayApp(home, start_agent=False, notifier=NullNotifier(), tray_retries=1)
    try:
        app.bridge.is_connected = True
        app._on_connected({"status": {"state": "idle"}, "pending": [], "info": {"mode": "personal"}})
        assert app.status().mode.startswith("Personal mode: the log's signing key is readable by your account")
        app.tray.rebuild_menu()
        assert any(t.startswith("Personal mode") for t in app.tray.action_texts())
        app._on_connected({"status": {"state": "idle"}, "pending": [], "info": {"mode": "system"}})
        assert app.status().mode.startswith("Recorded by the system agent")
    finally:
        app.shutdown()


def test_a_way_back_in_during_the_session_is_an_alarm_unless_a_package_brought_it(qtbot, home):
    app = TrayApp(home, start_agent=False, notifier=NullNotifier(), tray_retries=1)
    try:
        app.bridge.is_connected = True
        app.bridge.dispatch({"event": "alarm", "data": {
            "kind": "way-back-in", "category": "scheduled", "op": "added", "item": "/etc/cron.d/x", "origin": "package",
            "detail": "A cron job came with package cron 3.0pl1."}})
        app.bridge.drain()
        assert app.status().state == "idle" and said(app, "came with package cron")
        app.bridge.dispatch({"event": "alarm", "data": {
            "kind": "way-back-in", "category": "authorized_keys", "op": "added", "item": "root: ssh-ed25519 …",
            "origin": "unexplained", "detail": "A new SSH key lets someone log in as root."}})
        app.bridge.drain()
        status = app.status()
        assert status.state == "alarm" and status.headline == "A new way back in to this computer."
        assert "A new SSH key lets someone log in as root." in status.detail
        app.bridge.dispatch({"event": "session-sealed", "data": {"id": "s-1", "reason": "customer", "disconnected": 1,
                                                                 "summary": {
            "headline": "1 way back in (1 unexplained), 2 files changed", "unexplained": 1,
            "ways_back_in": [{"category": "authorized_keys", "item": "root: ssh-ed25519 …", "origin": "unexplained",
                              "still_there": True}]}}})
        app.bridge.drain()
        level, _title, body = app.notifier.history[-1]
        assert level == "warning" and "1 way back in (1 unexplained)" in body
        assert "• authorized_keys: root: ssh-ed25519 … (unexplained)" in body
    finally:
        app.shutdown()
