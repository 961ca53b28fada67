"""The session bar: who, elapsed, remaining, the five-minute warning and one-click end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from PySide6.QtCore import Qt

from ui.session_bar import SessionBar


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def bar(qtbot, clock):
    widget = SessionBar(clock=clock)
    qtbot.addWidget(widget)
    summary = {"id": "s-1", "technician": "Ada Lovelace", "org": "Acme",
               "started": rfc3339(clock.now), "until": rfc3339(clock.now + 30 * 60)}
    widget.start_session(summary)
    qtbot.waitExposed(widget)
    return widget


def test_shows_who_elapsed_and_remaining(bar, clock):
    assert bar.windowTitle().startswith("Chaperone")
    assert bar.windowFlags() & Qt.WindowType.WindowStaysOnTopHint
    assert bar.who_label.text() == "Session with Ada Lovelace (Acme)"
    clock.advance(12 * 60 + 3)
    bar.tick()
    assert bar.elapsed_label.text() == "12:03 elapsed"
    assert bar.remaining_label.text() == "17:57 left"
    assert not bar.warning


def test_warns_once_five_minutes_before_the_limit(qtbot, bar, clock):
    clock.advance(24 * 60)
    bar.tick()
    assert not bar.warning
    clock.advance(60)
    with qtbot.waitSignal(bar.warned) as blocker:
        bar.tick()
    assert blocker.args == [300]
    assert bar.remaining_label.text() == "only 5:00 left"
    with qtbot.assertNotEmitted(bar.warned):
        clock.advance(10)
        bar.tick()
        bar.warn(290)            # the agent's time-warning event after the bar's own
    assert bar.warning


def test_end_session_is_one_click(qtbot, bar):
    with qtbot.waitSignal(bar.endRequested) as blocker:
        qtbot.mouseClick(bar.end_button, Qt.MouseButton.LeftButton)
    assert blocker.args == ["s-1"]


def test_hostile_name_is_escaped_and_clipped(qtbot, clock):
    widget = SessionBar(clock=clock)
    qtbot.addWidget(widget)
    widget.start_session({"id": "s-2", "technician": "\u202e" + "x" * 500, "started": rfc3339(clock.now)})
    text = widget.who_label.text()
    assert "\u202e" not in text and "\\u202e" in text
    assert len(text) < 150
    assert widget.remaining_label.text() == "no time limit"
    assert widget.who_label.textFormat() == Qt.TextFormat.PlainText


def test_ending_hides_the_bar(bar):
    bar.end_session()
    assert not bar.isVisible() and bar.session_id == ""
