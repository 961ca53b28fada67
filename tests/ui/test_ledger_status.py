"""What the tray shows of the device ledger: the last cosigned head and its age on the session bar, and a
warning (bar, tray, notification) when the session's record is not leaving the machine."""

from __future__ import annotations

import pytest

from tests.ui.test_session_bar import rfc3339
from ui.controller import TrayApp
from ui.notifier import NullNotifier
from ui.session_bar import SessionBar


@pytest.fixture
def bar(qtbot, clock):
    widget = SessionBar(clock=clock)
    qtbot.addWidget(widget)
    widget.start_session({"id": "s-1", "technician": "Ada", "org": "Acme", "started": rfc3339(clock.now),
                          "until": rfc3339(clock.now + 30 * 60)})
    qtbot.waitExposed(widget)
    return widget


def test_the_bar_shows_the_age_of_the_last_cosigned_head(bar, clock):
    assert not bar.record_label.isVisible()  # nothing known yet
    bar.set_ledger({"ok": True, "witnesses": 2, "quorum": 1,
                    "cosigned": {"size": 40, "age_s": 4, "at": "x", "witnesses": ["w1"]}})
    assert bar.record_label.text() == "record witnessed 0:04 ago" and bar.record_label.isVisible()
    clock.advance(10)
    bar.tick()
    assert bar.record_label.text() == "record witnessed 0:14 ago"
    assert not bar.unwitnessed and "#0b2e59" in bar.frame.styleSheet()


def test_the_bar_warns_when_the_record_is_not_leaving_the_machine(bar, clock):
    bar.set_ledger({"ok": False, "witnesses": 1, "cosigned": None,
                    "warning": "The record is not leaving the machine: no witness has cosigned it recently."})
    assert bar.unwitnessed
    assert bar.record_label.text() == "record NOT leaving this computer"
    assert "#7a1f1f" in bar.frame.styleSheet()
    bar.warn(120)  # the time warning does not hide the record's warning
    assert "#7a1f1f" in bar.frame.styleSheet()
    bar.set_ledger({"ok": True, "witnesses": 1, "cosigned": {"age_s": 1}})
    assert not bar.unwitnessed and "#7a4f00" in bar.frame.styleSheet()  # back to the time warning


def test_without_witnesses_the_bar_says_the_record_stays_here(bar):
    bar.set_ledger({"ok": False, "witnesses": 0, "cosigned": None,
                    "warning": "No witness is configured: this device's record does not leave the machine."})
    assert bar.record_label.text() == "record kept on this computer only"
    assert not bar.unwitnessed and "#0b2e59" in bar.frame.styleSheet()


def test_the_tray_follows_the_agents_ledger_events(qtbot, home):
    app = TrayApp(home, start_agent=False, notifier=NullNotifier(), tray_retries=1)
    try:
        app.bridge.is_connected = True  # as after a connection; this test feeds events by hand
        app.bridge.dispatch({"event": "session-started", "data": {
            "id": "s-1", "technician": "Ada", "org": "Acme", "started": "2026-11-22T03:00:00Z",
            "until": "2099-01-01T00:00:00Z"}})
        app.bridge.dispatch({"event": "ledger", "data": {"ok": True, "witnesses": 1, "cosigned": {"age_s": 2}}})
        app.bridge.drain()
        assert app.status().state == "active" and "not leaving" not in app.status().detail
        assert app.bar.record_label.text().startswith("record witnessed")

        app.bridge.dispatch({"event": "witness-lag", "data": {"lag_s": 75, "max_lag_s": 60, "on_lag": "end",
                                                              "quorum": 1}})
        app.bridge.dispatch({"event": "ledger", "data": {"ok": False, "witnesses": 1, "cosigned": {"age_s": 75},
                                                         "warning": "The record is not leaving the machine."}})
        app.bridge.drain()
        assert "not leaving this computer" in app.status().detail and app.bar.unwitnessed
        assert any("No witness has confirmed this session's record for 1:15. The session ends now" in body
                   for _level, _title, body in app.notifier.history)

        app.bridge.dispatch({"event": "alarm", "data": {
            "tool": "ledger", "kind": "journal-cut", "detail": "The journal of s-1 lacks its checkpoint at seq 9."}})
        app.bridge.drain()
        status = app.status()
        assert status.state == "alarm" and status.headline == "This computer's record was tampered with."
        assert "lacks its checkpoint at seq 9" in status.detail
    finally:
        app.shutdown()
