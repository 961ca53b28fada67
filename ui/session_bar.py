"""The always-visible sign that a session is running, with one click to end it."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QMouseEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from ui.icons import state_icon
from ui.timefmt import countdown, parse_ts
from ui.widgets import PlainLabel, clip, heading_font, shown

WARN_BEFORE_S = 5 * 60


class SessionBar(QWidget):
    """A small always-on-top bar: who is connected, for how long, time left, and "End session".

    ``endRequested(session_id)`` when the button is clicked; ``warned(remaining_s)``
    once per session when five minutes or less are left.
    """

    endRequested = Signal(str)
    warned = Signal(int)

    TITLE = "Chaperone — session active"
    STYLE = {
        "normal": "QFrame#sessionBar { background:#0b2e59; border-radius:6px; } QLabel { color:#ffffff; }",
        "warning": "QFrame#sessionBar { background:#7a4f00; border:2px solid #ffcc4d; border-radius:6px; }"
        " QLabel { color:#ffffff; }",
        # the record is not leaving the machine (no witness cosigned it for too long)
        "unwitnessed": "QFrame#sessionBar { background:#7a1f1f; border:2px solid #ff8a80; border-radius:6px; }"
        " QLabel { color:#ffffff; }",
    }

    def __init__(self, parent: QWidget | None = None, *, clock: Callable[[], float] = time.time):
        super().__init__(parent)
        self._clock = clock
        self.session: dict = {}
        self.session_id = ""
        self._started: float | None = None
        self._until: float | None = None
        self._warned = False
        self._drag_from: QPoint | None = None

        self.setWindowTitle(self.TITLE)
        self.setWindowIcon(state_icon("active"))
        self.setWindowFlags(
            Qt.WindowType.Tool | Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint
        )
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating, True)

        self.frame = QFrame(self)
        self.frame.setObjectName("sessionBar")
        outer = QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.frame)
        row = QHBoxLayout(self.frame)
        row.setContentsMargins(12, 6, 8, 6)
        row.setSpacing(14)

        glyph = QLabel()
        glyph.setPixmap(state_icon("active").pixmap(20, 20))
        row.addWidget(glyph)
        self.who_label = PlainLabel("", wrap=False, selectable=False)
        self.who_label.setFont(heading_font(self, 1.0))
        row.addWidget(self.who_label)
        self.elapsed_label = PlainLabel("", wrap=False, selectable=False)
        row.addWidget(self.elapsed_label)
        self.remaining_label = PlainLabel("", wrap=False, selectable=False)
        self.remaining_label.setObjectName("remaining")
        row.addWidget(self.remaining_label)
        self.record_label = PlainLabel("", wrap=False, selectable=False)
        self.record_label.setObjectName("record")
        self.record_label.setToolTip("Whether this session's record is leaving the computer: witnesses off the "
                                     "machine confirm it every few seconds, so it cannot be rewritten later.")
        row.addWidget(self.record_label)
        self.ledger: dict | None = None
        self._cosigned_at: float | None = None
        self._ledger_seen_at: float = 0.0
        self.end_button = QPushButton("&End session")
        self.end_button.setToolTip("End the session now; the technician is disconnected and the log is sealed.")
        self.end_button.clicked.connect(lambda: self.endRequested.emit(self.session_id))
        row.addWidget(self.end_button)

        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.tick)
        self._set_style("normal")

    # --- state -------------------------------------------------------------------------
    def start_session(self, summary: dict) -> None:
        """Show the bar for a session summary (``id``, ``technician``, ``org``, ``started``, ``until``)."""
        self.session = dict(summary)
        self.session_id = str(summary.get("id", ""))
        self._started = parse_ts(summary.get("started")) or self._clock()
        self._until = parse_ts(summary.get("until"))
        self._warned = False
        technician = clip(shown(summary.get("technician")) or "A technician", 60)
        org = clip(shown(summary.get("org")), 40)
        self.who_label.setText(f"Session with {technician}" + (f" ({org})" if org else ""))
        self._set_style("normal")
        self.tick()
        self._timer.start()
        self.adjustSize()
        self._place()
        self.show()
        self.raise_()

    def set_ledger(self, status: dict | None) -> None:
        """The device ledger's state (the agent's ``status()["ledger"]`` or a ``ledger`` event)."""
        self.ledger = dict(status) if isinstance(status, dict) else None
        self._ledger_seen_at = self._clock()
        cosigned = (self.ledger or {}).get("cosigned")
        age = cosigned.get("age_s") if isinstance(cosigned, dict) else None
        self._cosigned_at = self._ledger_seen_at - float(age) if isinstance(age, (int, float)) else None
        self.tick()

    @property
    def unwitnessed(self) -> bool:
        """Witnesses are configured and the agent says the record is not leaving the machine."""
        ledger = self.ledger or {}
        return bool(ledger.get("witnesses")) and not ledger.get("ok", True)

    def _record_text(self, now: float) -> str:
        ledger = self.ledger
        if ledger is None:
            return ""
        if not ledger.get("witnesses"):
            return "record kept on this computer only"
        if self.unwitnessed:
            return "record NOT leaving this computer"
        if self._cosigned_at is None:
            return "record: waiting for a witness"
        return f"record witnessed {countdown(max(0.0, now - self._cosigned_at))} ago"

    def end_session(self) -> None:
        self._timer.stop()
        self.session, self.session_id = {}, ""
        self.hide()

    def warn(self, remaining_s: float) -> None:
        """Switch to the warning look (also called for the agent's ``time-warning`` event)."""
        if not self.unwitnessed:  # the record's warning outranks the clock's
            self._set_style("warning")
        if not self._warned:
            self._warned = True
            self.warned.emit(int(remaining_s))

    def tick(self) -> None:
        now = self._clock()
        self.record_label.setText(self._record_text(now))
        self.record_label.setVisible(bool(self.record_label.text()))
        if self.unwitnessed:
            self._set_style("unwitnessed")
        elif self._warned:
            self._set_style("warning")
        else:
            self._set_style("normal")
        if self._started is not None:
            self.elapsed_label.setText(f"{countdown(now - self._started)} elapsed")
        if self._until is None:
            self.remaining_label.setText("no time limit")
            return
        left = self._until - now
        if left <= WARN_BEFORE_S:
            self.remaining_label.setText(f"only {countdown(left)} left")
            self.warn(left)
        else:
            self.remaining_label.setText(f"{countdown(left)} left")

    @property
    def warning(self) -> bool:
        return self._warned

    def _set_style(self, which: str) -> None:
        self.frame.setStyleSheet(self.STYLE[which])

    def _place(self) -> None:
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        area = screen.availableGeometry()
        self.move(area.x() + (area.width() - self.width()) // 2, area.y() + 8)

    # --- a frameless bar can still be moved out of the way -----------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_from = event.globalPosition().toPoint() - self.frameGeometry().topLeft()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_from is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self.move(event.globalPosition().toPoint() - self._drag_from)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag_from = None
        super().mouseReleaseEvent(event)
