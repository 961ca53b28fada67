"""The tray icon and its menu, or a small window when the desktop has no system tray."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QPushButton, QSystemTrayIcon, QVBoxLayout, QWidget

from ui.icons import state_icon
from ui.widgets import PlainLabel, heading_font, plain_tooltip


@dataclass(frozen=True)
class TrayStatus:
    """What the tray shows: an icon state and one or two plain sentences."""

    state: str                 # idle, consent, active, alarm, disconnected
    headline: str              # "Nobody is connected."
    detail: str = ""           # "Session with Ada Lovelace, 12:03 left."
    can_end: bool = False
    alarm: bool = False
    mode: str = ""             # "System agent." or what personal mode means


class Tray(QObject):
    """Owns the ``QSystemTrayIcon`` (or the fallback window) and turns menu choices into signals."""

    activityRequested = Signal()
    historyRequested = Signal()
    deviceRequested = Signal()
    endSessionRequested = Signal()
    openRequestRequested = Signal()
    dismissAlarmRequested = Signal()
    quitRequested = Signal()
    primaryActivated = Signal()
    fallbackShown = Signal()

    def __init__(self, describe: Callable[[], TrayStatus], parent: QObject | None = None, *,
                 retry_interval_ms: int = 2000, retries: int = 15):
        super().__init__(parent)
        self._describe = describe
        self.icon: QSystemTrayIcon | None = None
        self.fallback: FallbackWindow | None = None
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.rebuild_menu)
        self._retries_left = retries
        self._retry = QTimer(self)
        self._retry.setInterval(retry_interval_ms)
        self._retry.timeout.connect(self._try_tray)

    # --- showing ---------------------------------------------------------------------------
    def start(self) -> None:
        """Show the tray icon; without a system tray, retry for a while, then show the small window."""
        self.rebuild_menu()
        if not self._try_tray():
            self._retry.start()

    def _try_tray(self) -> bool:
        if QSystemTrayIcon.isSystemTrayAvailable():
            self._retry.stop()
            self._show_icon()
            return True
        self._retries_left -= 1
        if self._retries_left <= 0:
            self._retry.stop()
            self._show_fallback()
        return False

    def _show_icon(self) -> None:
        if self.icon is None:
            self.icon = QSystemTrayIcon(self)
            self.icon.setContextMenu(self.menu)
            self.icon.activated.connect(self._activated)
        self.refresh()
        self.icon.show()
        if self.fallback is not None:
            self.fallback.hide()

    def _show_fallback(self) -> None:
        if self.fallback is None:
            self.fallback = FallbackWindow(self)
        self.refresh()
        self.fallback.show()
        self.fallbackShown.emit()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.primaryActivated.emit()

    # --- state -----------------------------------------------------------------------------
    def refresh(self) -> None:
        status = self._describe()
        tooltip = "Chaperone: " + status.headline + (f"\n{status.detail}" if status.detail else "")
        if self.icon is not None:
            self.icon.setIcon(state_icon(status.state))
            self.icon.setToolTip(plain_tooltip(tooltip))
        if self.fallback is not None:
            self.fallback.show_status(status)

    def rebuild_menu(self) -> None:
        """Rebuild the menu from the current state (on every ``aboutToShow``)."""
        status = self._describe()
        menu = self.menu
        menu.clear()
        # Menu texts treat "&" as a shortcut marker; the status may hold a technician's name.
        headline = menu.addAction(status.headline.replace("&", "&&"))
        headline.setEnabled(False)
        if status.detail:
            menu.addAction(status.detail.replace("&", "&&")).setEnabled(False)
        if status.mode:
            menu.addAction(status.mode.replace("&", "&&")).setEnabled(False)
        menu.addSeparator()
        self._add(menu, "&Activity…", self.activityRequested)
        self._add(menu, "&History…", self.historyRequested)
        self._add(menu, "This de&vice…", self.deviceRequested)
        self._add(menu, "&End session", self.endSessionRequested).setEnabled(status.can_end)
        self._add(menu, "&Open request file…", self.openRequestRequested)
        if status.alarm:
            self._add(menu, "&Dismiss the alarm", self.dismissAlarmRequested)
        menu.addSeparator()
        self._add(menu, "&Quit", self.quitRequested)

    def action_texts(self) -> list[str]:
        return [a.text() for a in self.menu.actions() if not a.isSeparator()]

    def action(self, text: str) -> QAction:
        for action in self.menu.actions():
            if action.text() == text:
                return action
        raise KeyError(text)

    def _add(self, menu: QMenu, text: str, signal) -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _checked=False: signal.emit())
        return action

    def notify_target(self) -> QSystemTrayIcon | None:
        return self.icon

    def hide(self) -> None:
        self._retry.stop()
        if self.icon is not None:
            self.icon.hide()
        if self.fallback is not None:
            self.fallback.allow_close = True
            self.fallback.close()


class FallbackWindow(QWidget):
    """The tray's stand-in when the desktop has no system tray: the same status and actions."""

    TITLE = "Chaperone"

    def __init__(self, tray: Tray):
        super().__init__()
        self.allow_close = False
        self.setWindowTitle(self.TITLE)
        self.setWindowIcon(state_icon("idle"))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 14)
        layout.setSpacing(10)
        top = QHBoxLayout()
        self.glyph = QLabel()
        top.addWidget(self.glyph)
        texts = QVBoxLayout()
        self.headline = PlainLabel("", selectable=False)
        self.headline.setFont(heading_font(self, 1.1))
        self.detail = PlainLabel("", selectable=False)
        texts.addWidget(self.headline)
        texts.addWidget(self.detail)
        top.addLayout(texts, 1)
        layout.addLayout(top)
        row = QHBoxLayout()
        self.buttons: dict[str, QPushButton] = {}
        for text, signal in (("&Activity…", tray.activityRequested), ("&History…", tray.historyRequested),
                             ("&End session", tray.endSessionRequested),
                             ("&Open request file…", tray.openRequestRequested), ("&Quit", tray.quitRequested)):
            button = QPushButton(text)
            button.clicked.connect(lambda _checked=False, s=signal: s.emit())
            row.addWidget(button)
            self.buttons[text] = button
        layout.addLayout(row)
        self.note = PlainLabel("This desktop has no system tray, so Chaperone shows this small window instead.",
                               selectable=False)
        self.note.setStyleSheet("color:#555;")
        layout.addWidget(self.note)

    def show_status(self, status: TrayStatus) -> None:
        self.glyph.setPixmap(state_icon(status.state).pixmap(40, 40))
        self.headline.setText(status.headline)
        self.detail.setText(status.detail)
        self.detail.setVisible(bool(status.detail))
        self.buttons["&End session"].setEnabled(status.can_end)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closing must not leave the customer without a way to see or end a session.
        if self.allow_close:
            event.accept()
        else:
            event.ignore()
            self.setWindowState(self.windowState() | Qt.WindowState.WindowMinimized)
