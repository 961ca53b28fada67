"""Small widgets shared by the windows, and the one rule for untrusted text.

Text that comes from a technician, a request file or a journal (names,
tickets, reasons, paths, command lines) is *hostile*: it goes through
:func:`shown` (``agent.text`` escaping) and is only ever put in widgets set to
plain text, so that neither rich-text markup nor bidirectional controls can
change what the customer reads.
"""

from __future__ import annotations

import html
from functools import lru_cache

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QFont, QFontDatabase
from PySide6.QtWidgets import QFrame, QLabel, QPlainTextEdit, QWidget

from agent import text as agent_text

_escape = lru_cache(maxsize=8192)(agent_text.escape)


def shown(value: object) -> str:
    """The display-safe form of an untrusted value (``None`` shows as an empty string)."""
    if value is None:
        return ""
    return _escape(value if isinstance(value, str) else str(value))


def shown_multiline(value: object) -> str:
    """Like :func:`shown`, but keeps line breaks (for plain-text boxes such as a reason)."""
    if value is None:
        return ""
    return "\n".join(agent_text.escape(line) for line in str(value).split("\n"))


class PlainLabel(QLabel):
    """A label that never interprets rich text, selectable so that details can be copied."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *, wrap: bool = True, selectable: bool = True):
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setWordWrap(wrap)
        if selectable:
            self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setText(text)


class PlainTextBox(QPlainTextEdit):
    """A read-only, scrolling box for long untrusted text (a 10,000-character reason)."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *, max_lines: int = 6):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setTabChangesFocus(True)
        self.setPlainText(text)
        line = self.fontMetrics().lineSpacing()
        self.setMaximumHeight(line * max_lines + 12)
        self.setMinimumHeight(line * min(max_lines, 2) + 12)


def heading_font(widget: QWidget, scale: float = 1.25, bold: bool = True) -> QFont:
    font = QFont(widget.font())
    font.setPointSizeF(font.pointSizeF() * scale)
    font.setBold(bold)
    return font


def monospace_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


class Banner(PlainLabel):
    """A full-width message strip; ``level`` is ``ok``, ``warning`` or ``danger``.

    The level is carried by the words as well as the colour (each message says
    what it is), so nothing depends on colour alone.
    """

    STYLES = {
        "ok": "background:#e6f4ea; color:#0d3b1e; border:1px solid #7cb88f;",
        "warning": "background:#fff4d6; color:#3d2e00; border:1px solid #d8a200;",
        "danger": "background:#fdecea; color:#5f1010; border:2px solid #c62828;",
    }

    def __init__(self, text: str = "", level: str = "ok", parent: QWidget | None = None):
        super().__init__(text, parent)
        self.set_level(level)

    def set_level(self, level: str) -> None:
        self.level = level
        self.setStyleSheet(f"QLabel {{ {self.STYLES[level]} border-radius:4px; padding:8px; }}")


def clip(text: str, limit: int = 240) -> str:
    """At most ``limit`` characters of an already escaped text, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` literally: Qt guesses rich text for tooltips, so decide for it."""
    return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"


class RowTableModel(QAbstractTableModel):
    """A flat table over ``self._rows`` with fixed ``HEADERS``: the counting and
    header parts every table here shares. Subclasses give ``data``."""

    HEADERS: tuple[str, ...] = ()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list = []

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            if 0 <= section < len(self.HEADERS):
                return self.HEADERS[section]
        return None

    def row_at(self, index: QModelIndex):
        """The row behind a valid index of this model, else None."""
        if not index.isValid() or not (0 <= index.row() < len(self._rows)):
            return None
        return self._rows[index.row()]
