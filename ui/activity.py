"""The live activity view: what the technician is touching, as it happens.

A row is a plain tuple ``(ts, kind, what, flags, level)`` of raw strings made
by :func:`describe` (the bridge runs it in its own thread during a burst);
text is escaped only when painted, and plain tuples of strings cost the
garbage collector nothing. Ways back in and alarms are marked by a glyph and
words in the Flags column, bold text and a tinted row.

The filter proxy is attached only while a filter is set: a proxy calls back
into Python for every inserted row, which is what makes a burst stall.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ui.icons import state_icon
from ui.timefmt import clock, counted, spoken_duration
from ui.widgets import PlainLabel, RowTableModel, plain_tooltip, shown

NORMAL, NOTABLE, DANGER = 0, 1, 2
DANGER_MARK = "⚠ "


TS, KIND, WHAT, FLAGS, LEVEL = range(5)     # the fields of a row
Row = tuple  # (ts, kind, what, flags, level)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def describe(item: dict) -> Row:
    """One activity item (a journal record's data with ``type`` and ``ts``) as a table row. Pure."""
    kind_of = item.get("type")
    ts = _text(item.get("ts"))
    get = item.get
    flags: list[str] = []
    level = NORMAL
    if kind_of == "file":
        kind = f"File {_text(get('op')) or 'changed'}"
        what = _text(get("path"))
        if get("dest"):
            what += f" → {_text(get('dest'))}"
        if get("secret"):
            flags.append("secret file (contents not recorded)")
            level = NOTABLE
        attribution = get("attribution")
        if isinstance(attribution, dict) and attribution.get("how") == "guess":
            flags.append("who did it is a guess")
        if get("error"):
            flags.append(f"error: {_text(get('error'))}")
            level = NOTABLE
    elif kind_of == "file-burst":
        counts = get("counts") if isinstance(get("counts"), dict) else {}
        summary = ", ".join(f"{n} {op}" for op, n in counts.items() if n)
        kind, what = "Many files changed", _text(get("root"))
        flags.append(summary or f"{_text(get('paths'))} paths")
    elif kind_of in ("overflow", "watch-limit"):
        kind = "Too many changes at once" if kind_of == "overflow" else "Folder limit reached"
        what = _text(get("root"))
        flags.append(_text(get("detail")) or ("rescanned" if get("rescanned") else ""))
        level = NOTABLE
    elif kind_of == "process":
        kind = f"Program {_text(get('op')) or 'seen'}"
        what = _text(get("cmdline")) or _text(get("exe"))
        if get("technician"):
            flags.append("started by the technician")
        if get("user"):
            flags.append(f"user {_text(get('user'))}")
    elif kind_of == "inventory":
        kind = f"System check ({_text(get('phase'))})"
        what = _text(get("category"))
        flags.append(counted(get("items"), "item"))
    elif kind_of == "inventory-change":
        kind = f"{_text(get('category')) or 'System'} {_text(get('op'))}".strip()
        what = _text(get("item"))
        if get("way_back_in"):
            flags.append(DANGER_MARK + "WAY BACK IN" + (f": {_text(get('why'))}" if get("why") else ""))
            level = DANGER
        elif get("detail"):
            flags.append(_text(get("detail")))
    elif kind_of == "alarm" and get("kind") == "way-back-in":
        kind = f"New way back in ({_text(get('category'))})"
        what = _text(get("item"))
        origin = "came with a package" if get("origin") == "package" else "unexplained"
        flags.append(DANGER_MARK + f"ALARM: {origin}" + (f": {_text(get('why'))}" if get("why") else ""))
        level = DANGER
    elif kind_of == "alarm" and get("kind") == "refused-attempt":
        kind = "Refused attempt"
        what = _text(get("process")) or _text(get("user"))
        flags.append(DANGER_MARK + "ALARM: " + (_text(get("detail")) or "a process tried to decide for you"))
        level = DANGER
    elif kind_of == "alarm":
        kind = "Remote-access tool"
        what = _text(get("process")) or _text(get("tool"))
        flags.append(DANGER_MARK + "ALARM: running without a session you allowed")
        level = DANGER
    elif kind_of == "capture-error":
        kind = "Could not record"
        what = _text(get("path")) or _text(get("what"))
        flags.append(_text(get("error")))
        level = NOTABLE
    elif kind_of == "note":
        kind, what = "Technician's note", _text(get("text"))
        if get("author"):
            flags.append(f"by {_text(get('author'))}")
    elif kind_of == "session-start":
        kind, what = "Session started", f"until {clock(get('until'))}" if get("until") else ""
    elif kind_of == "time-warning":
        remaining = get("remaining_s")
        kind = "Time warning"
        what = f"{spoken_duration(remaining)} left" if isinstance(remaining, (int, float)) else ""
    elif kind_of in ("session-end", "decision", "request"):
        kind = {"session-end": "Session ended", "decision": "Decision", "request": "Request"}[kind_of]
        what = _text(get("reason") or get("decision"))
    else:
        kind, what = _text(kind_of) or "Event", ""
    return (ts, kind, what, "; ".join(f for f in flags if f), level)


def describe_all(items: list) -> list[Row]:
    """Rows for a batch of activity items; anything that is not an object is left out. Pure."""
    return [describe(item) for item in items if isinstance(item, dict)]


class ActivityModel(RowTableModel):
    """Activity rows in arrival order, appended in batches; the oldest rows go beyond ``max_rows``."""

    countsChanged = Signal()   # rows, merged or dropped counts changed

    HEADERS = ("Time", "What happened", "Path or program", "Flags")
    TIME, KIND, WHAT, FLAGS = range(4)

    _DANGER_BRUSH = QBrush(QColor("#fde2e1"))
    _NOTABLE_BRUSH = QBrush(QColor("#fff6dc"))

    def __init__(self, parent=None, *, max_rows: int = 200_000):
        super().__init__(parent)
        self.max_rows = max_rows
        self.coalesced = 0
        self.dropped = 0
        self._bold = QFont()
        self._bold.setBold(True)

    # --- Qt model interface -------------------------------------------------------------
    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        row = self.row_at(index)
        if row is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.TIME:
                return shown(clock(row[TS]))
            return shown(row[column])
        if role == Qt.ItemDataRole.ToolTipRole and column in (self.WHAT, self.FLAGS):
            value = row[column]
            return plain_tooltip(shown(value)) if value else None
        if role == Qt.ItemDataRole.BackgroundRole:
            if row[LEVEL] == DANGER:
                return self._DANGER_BRUSH
            if row[LEVEL] == NOTABLE:
                return self._NOTABLE_BRUSH
            return None
        if role == Qt.ItemDataRole.FontRole and row[LEVEL] == DANGER:
            return self._bold
        return None

    # --- feeding -------------------------------------------------------------------------
    def append(self, items: list[dict], coalesced: int = 0) -> None:
        """Add a batch of activity items (record data with ``type`` and ``ts``) with one insertion."""
        self.append_rows(describe_all(items), coalesced)

    def append_rows(self, rows: list[Row], coalesced: int = 0) -> None:
        """Add a batch of rows made by :func:`describe` with one insertion."""
        self.coalesced += coalesced
        if not rows:
            if coalesced:
                self.countsChanged.emit()
            return
        overflow = len(self._rows) + len(rows) - self.max_rows
        if overflow > 0:
            drop = min(len(self._rows), max(overflow, self.max_rows // 10))
            self.beginRemoveRows(QModelIndex(), 0, drop - 1)
            del self._rows[:drop]
            self.dropped += drop
            self.endRemoveRows()
            rows = rows[-self.max_rows:]
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self._rows.extend(rows)
        self.endInsertRows()
        self.countsChanged.emit()

    def clear(self) -> None:
        self.beginResetModel()
        self._rows.clear()
        self.coalesced = self.dropped = 0
        self.endResetModel()
        self.countsChanged.emit()

    def row(self, i: int) -> Row:
        return self._rows[i]


class ActivityFilter(QSortFilterProxyModel):
    """Case-insensitive text filter over kind, path and flags, optionally ways back in only."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._needle = ""
        self._only_danger = False

    def set_filter(self, text: str, only_danger: bool) -> None:
        self.beginFilterChange()
        self._needle = text.strip().casefold()
        self._only_danger = only_danger
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    @property
    def active(self) -> bool:
        return bool(self._needle or self._only_danger)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:
        if not self._needle and not self._only_danger:
            return True
        row = self.sourceModel().row(source_row)
        if self._only_danger and row[LEVEL] != DANGER:
            return False
        if not self._needle:
            return True
        return self._needle in f"{row[KIND]}\n{row[WHAT]}\n{row[FLAGS]}".casefold()


class ActivityWindow(QWidget):
    """The Activity… window: a filter box over the live table."""

    TITLE = "Chaperone — activity"

    def __init__(self, model: ActivityModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.setWindowTitle(self.TITLE)
        self.setWindowIcon(state_icon("active"))
        self.resize(920, 520)

        self.proxy = ActivityFilter(self)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)
        top = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by path, program or kind")
        self.filter_edit.setClearButtonEnabled(True)
        top.addWidget(self.filter_edit, 1)
        self.only_danger = QCheckBox("Only ways back in and alarms")
        top.addWidget(self.only_danger)
        layout.addLayout(top)

        self.table = QTableView()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self._show_model(model)
        layout.addWidget(self.table, 1)

        bottom = QHBoxLayout()
        self.count_label = PlainLabel("", selectable=False)
        bottom.addWidget(self.count_label, 1)
        legend = PlainLabel(f"{DANGER_MARK}a way back in (new account, key, service, scheduled job) "
                            "or remote access you did not allow", selectable=False, wrap=False)
        legend.setStyleSheet("color:#555;")
        bottom.addWidget(legend)
        layout.addLayout(bottom)

        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(200)
        self._filter_timer.timeout.connect(self.apply_filter_now)
        self.filter_edit.textChanged.connect(lambda _text: self._filter_timer.start())
        self.only_danger.toggled.connect(lambda _checked: self.apply_filter_now())

        self._follow = True
        model.rowsAboutToBeInserted.connect(self._remember_follow)
        model.rowsInserted.connect(self._after_insert)
        model.countsChanged.connect(self._update_count)
        self._update_count()

    def apply_filter_now(self) -> None:
        """Apply the filter box and check box without waiting for typing to pause."""
        self._filter_timer.stop()
        self.proxy.set_filter(self.filter_edit.text(), self.only_danger.isChecked())
        if self.proxy.active and self.proxy.sourceModel() is None:
            self.proxy.setSourceModel(self.model)
            self._show_model(self.proxy)
        elif not self.proxy.active and self.proxy.sourceModel() is not None:
            self._show_model(self.model)
            self.proxy.setSourceModel(None)

    @property
    def shown_rows(self) -> int:
        return self.table.model().rowCount()

    def _show_model(self, model) -> None:
        self.table.setModel(model)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(ActivityModel.WHAT, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(ActivityModel.TIME, 80)
        self.table.setColumnWidth(ActivityModel.KIND, 190)
        self.table.setColumnWidth(ActivityModel.FLAGS, 340)
        if self.isVisible():
            self.table.scrollToBottom()

    def _remember_follow(self, *_args) -> None:
        bar = self.table.verticalScrollBar()
        self._follow = bar.value() >= bar.maximum() - 2

    def _after_insert(self, *_args) -> None:
        if self._follow and self.isVisible():
            self.table.scrollToBottom()

    def _update_count(self) -> None:
        total = self.model.rowCount()
        text = f"{total:,} events"
        if self.model.coalesced:
            text += f" ({self.model.coalesced:,} more merged into these)"
        if self.model.dropped:
            text += f"; {self.model.dropped:,} older rows left out here (the log keeps them all)"
        self.count_label.setText(text)
