"""The tray's menu and the fallback window used when the desktop has no system tray."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from ui.icons import STATES, state_icon
from ui.notifier import Notifier, NullNotifier
from ui.tray import FallbackWindow, Tray, TrayStatus


class Status:
    def __init__(self):
        self.value = TrayStatus("idle", "Nobody is connected.")

    def __call__(self) -> TrayStatus:
        return self.value


def test_every_state_has_a_distinct_icon(qapp):
    images = {}
    for state in STATES:
        icon = state_icon(state)
        assert not icon.isNull(), state
        image = icon.pixmap(32, 32).toImage()
        images[state] = bytes(image.constBits())
    assert len(set(images.values())) == len(STATES)
    with pytest.raises(ValueError):
        state_icon("bogus")


def test_menu_is_rebuilt_from_the_state_when_shown(qtbot):
    status = Status()
    tray = Tray(status)
    tray.rebuild_menu()
    assert tray.action_texts() == ["Nobody is connected.", "&Activity…", "&History…", "This de&vice…", "&End session",
                                   "&Open request file…", "&Quit"]
    assert not tray.action("&End session").isEnabled()
    status.value = TrayStatus("alarm", "Remote access without a session you allowed.", "AnyDesk is running.",
                              can_end=True, alarm=True)
    tray.menu.aboutToShow.emit()
    assert "AnyDesk is running." in tray.action_texts()
    status.value = TrayStatus("active", "A session is active.", "Bob & Alice &Co is connected.", can_end=True)
    tray.menu.aboutToShow.emit()
    assert "Bob && Alice &&Co is connected." in tray.action_texts()   # shown with its ampersands, no shortcut
    status.value = TrayStatus("alarm", "Remote access without a session you allowed.", "AnyDesk is running.",
                              can_end=True, alarm=True)
    tray.menu.aboutToShow.emit()
    assert tray.action("&End session").isEnabled()
    assert "&Dismiss the alarm" in tray.action_texts()
    with qtbot.waitSignal(tray.quitRequested):
        tray.action("&Quit").trigger()
    with qtbot.waitSignal(tray.endSessionRequested):
        tray.action("&End session").trigger()


def test_without_a_system_tray_it_retries_then_shows_a_window(qtbot):
    assert not QSystemTrayIcon.isSystemTrayAvailable()   # offscreen has no tray
    status = Status()
    tray = Tray(status, retry_interval_ms=10, retries=3)
    with qtbot.waitSignal(tray.fallbackShown, timeout=5000):
        tray.start()
    window = tray.fallback
    qtbot.addWidget(window)
    assert isinstance(window, FallbackWindow) and window.isVisible()
    assert window.headline.text() == "Nobody is connected."
    assert not window.buttons["&End session"].isEnabled()
    status.value = TrayStatus("active", "A session is active.", "Ada is connected.", can_end=True)
    tray.refresh()
    assert window.detail.text() == "Ada is connected." and window.buttons["&End session"].isEnabled()
    with qtbot.waitSignal(tray.historyRequested):
        window.buttons["&History…"].click()
    window.close()                       # closing must not take away the only way to end a session
    assert not window.allow_close and window.isVisible()
    tray.hide()
    assert not window.isVisible()


def test_notifier_falls_back_to_doing_nothing():
    quiet = NullNotifier()
    quiet.notify("Chaperone", "hello")
    assert quiet.history == [("info", "Chaperone", "hello")] and not quiet.can_show
    loud = Notifier(None)
    for i in range(Notifier.KEEP + 5):
        loud.notify("t", str(i), "warning")
    assert len(loud.history) == Notifier.KEEP and loud.history[-1] == ("warning", "t", str(Notifier.KEEP + 4))
