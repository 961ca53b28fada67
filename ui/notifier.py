"""Desktop notifications: tray balloon messages, or nothing when the desktop cannot show them."""

from __future__ import annotations

from PySide6.QtWidgets import QSystemTrayIcon

_LEVELS = {
    "info": QSystemTrayIcon.MessageIcon.Information,
    "warning": QSystemTrayIcon.MessageIcon.Warning,
    "critical": QSystemTrayIcon.MessageIcon.Critical,
}


class Notifier:
    """Shows short messages through the tray icon; does nothing when it cannot.

    Every message is also kept in ``history`` (newest last, bounded) so that the
    fallback window and the tests can see what the user was told.
    """

    KEEP = 50

    def __init__(self, tray: QSystemTrayIcon | None = None):
        self._tray = tray
        self.history: list[tuple[str, str, str]] = []

    def set_tray(self, tray: QSystemTrayIcon | None) -> None:
        self._tray = tray

    @property
    def can_show(self) -> bool:
        return (
            self._tray is not None
            and self._tray.isVisible()
            and QSystemTrayIcon.supportsMessages()
        )

    def notify(self, title: str, body: str, level: str = "info", msecs: int = 8000) -> None:
        self.history.append((level, title, body))
        del self.history[: -self.KEEP]
        if self.can_show:
            self._tray.showMessage(title, body, _LEVELS.get(level, _LEVELS["info"]), msecs)


class NullNotifier(Notifier):
    """The do-nothing fallback: remembers messages, shows none."""

    def __init__(self):
        super().__init__(None)

    @property
    def can_show(self) -> bool:
        return False
