"""The History… window: past sessions, their reports and bundles, and checking a bundle from disk.

Exports, verification and report rendering are library calls that can take
seconds; they run through the bridge's workers and report back on the GUI
thread. Reports open in the user's browser from a private temporary folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QModelIndex, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from agent.home import Home
from ui.icons import state_icon
from ui.timefmt import counted, date_time
from ui.widgets import Banner, PlainLabel, RowTableModel, heading_font, shown

STATE_WORDS = {
    "requested": "Waiting for an answer",
    "allowed": "Allowed",
    "refused": "Refused",
    "expired": "No answer (refused)",
    "active": "Active now",
    "ended": "Ended",
    "sealed": "Ended and sealed",
}


def verification_words(session: dict) -> str:
    verified = session.get("verified")
    if verified is True:
        return "Verified"
    if verified is False:
        return "NOT VERIFIED"
    return "unknown"


class HistoryModel(RowTableModel):
    """Sessions from the agent, newest first."""

    HEADERS = ("Started", "Technician", "Organisation", "Ticket", "State", "Identity")

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        session = self.row_at(index)
        if session is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            column = index.column()
            if column == 0:
                return date_time(session.get("started") or session.get("requested"))
            if column == 4:
                state = str(session.get("state", ""))
                return STATE_WORDS.get(state, shown(state))
            if column == 5:
                return verification_words(session)
            return shown(session.get(("", "technician", "org", "ticket")[column]))
        if role == Qt.ItemDataRole.UserRole:
            return session
        return None

    def set_sessions(self, sessions: list[dict]) -> None:
        self.beginResetModel()
        self._rows = [s for s in sessions if isinstance(s, dict)]
        self.endResetModel()

    def session(self, row: int) -> dict:
        return self._rows[row]


def write_session_report(home: Home, session: dict, folder: Path) -> Path:
    """Render a session's report from its journal into ``folder``, checked against the device key; returns
    the HTML file. Blocking."""
    from agent.bundle.home_report import write_home_report

    session_id = str(session["id"])
    safe_name = "".join(c for c in session_id if c.isalnum() or c in "-_")[:80] or "session"
    out = folder / f"report-{safe_name}.html"
    write_home_report(home, session, out)
    return out


def export_session(home: Home, session_id: str, out: Path) -> Path:
    from agent.bundle import export_bundle

    return export_bundle(home, session_id, out)


def verify_file(path: Path):
    from agent.bundle import verify_bundle

    return verify_bundle(path)


class VerdictPanel(QFrame):
    """The answer to "is this bundle genuine?" in words, glyph and colour together."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.banner = Banner("", "ok")
        self.banner.setFont(heading_font(self, 1.3))
        self.reason = PlainLabel("")
        self.details = PlainLabel("")
        for widget in (self.banner, self.reason, self.details):
            layout.addWidget(widget)
        self.verdict_text = ""
        self.hide()

    def show_busy(self, path: Path) -> None:
        self._set("warning", f"Checking {path.name} …", "", "")

    def show_verdict(self, path: Path, verdict) -> None:
        reason = shown(getattr(verdict, "reason", ""))
        fingerprint = shown(getattr(verdict, "fingerprint", "") or "")
        details = []
        if fingerprint and fingerprint not in reason:
            details.append(f"Signed by device key {fingerprint}")
        if getattr(verdict, "pinned", False):
            details.append("The key matches the pinned fingerprint.")
        unsealed = getattr(verdict, "unsealed", 0)
        if unsealed:
            details.append(f"{unsealed} records after the last seal are not sealed")
        if not getattr(verdict, "readable", True):
            self._set("danger", f"✖  Cannot read {shown(path.name)}", reason, "\n".join(details))
        elif verdict.genuine:
            self._set("ok", f"✔  Genuine: {shown(path.name)}", reason, "\n".join(details))
        else:
            self._set("danger", f"✖  NOT genuine: {shown(path.name)}", reason, "\n".join(details))

    def show_error(self, path: Path, sentence: str) -> None:
        self._set("danger", f"✖  Cannot check {shown(path.name)}", sentence, "")

    def _set(self, level: str, headline: str, reason: str, details: str) -> None:
        self.verdict_text = headline
        self.banner.set_level(level)
        self.banner.setText(headline)
        self.reason.setText(reason)
        self.reason.setVisible(bool(reason))
        self.details.setText(details)
        self.details.setVisible(bool(details))
        self.show()


class HistoryWindow(QWidget):
    """Past sessions; open a report, export a bundle, verify a bundle (button or drag and drop)."""

    TITLE = "Chaperone — history"
    refreshRequested = Signal()
    verdictShown = Signal(str)   # the verdict's headline, for notifications and tests
    exported = Signal(str)       # the path written

    def __init__(self, home: Home, run: Callable, parent: QWidget | None = None):
        """``run(fn, *args, on_done=..., on_error=...)`` runs blocking work off the GUI thread."""
        super().__init__(parent)
        self.home = home
        self._run = run
        self._report_dir: tempfile.TemporaryDirectory | None = None
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl
        self.setWindowTitle(self.TITLE)
        self.setWindowIcon(state_icon("idle"))
        self.setAcceptDrops(True)
        self.resize(860, 560)

        self.model = HistoryModel(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(10)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column, width in ((0, 130), (2, 150), (3, 100), (4, 150), (5, 110)):
            self.table.setColumnWidth(column, width)
        self.table.doubleClicked.connect(lambda _index: self.open_report())
        layout.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.report_button = QPushButton("Open &report")
        self.export_button = QPushButton("&Export bundle…")
        self.refresh_button = QPushButton("Re&fresh")
        for button in (self.report_button, self.export_button):
            button.setEnabled(False)
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        layout.addLayout(buttons)
        self.status = PlainLabel("", selectable=False)
        layout.addWidget(self.status)

        check = QGroupBox("Check a bundle")
        check_layout = QVBoxLayout(check)
        row = QHBoxLayout()
        self.verify_button = QPushButton("&Verify a bundle…")
        row.addWidget(self.verify_button)
        hint = QLabel("or drop a bundle (.zip) on this window.")
        hint.setTextFormat(Qt.TextFormat.PlainText)
        row.addWidget(hint, 1)
        check_layout.addLayout(row)
        self.verdict = VerdictPanel()
        check_layout.addWidget(self.verdict)
        layout.addWidget(check)

        self.report_button.clicked.connect(self.open_report)
        self.export_button.clicked.connect(self.export_selected)
        self.refresh_button.clicked.connect(self.refreshRequested)
        self.verify_button.clicked.connect(self.verify_from_dialog)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)

    # --- sessions -------------------------------------------------------------------------
    def set_sessions(self, sessions: list[dict]) -> None:
        selected = self.selected_session()
        self.model.set_sessions(sessions)
        if selected:
            for row in range(self.model.rowCount()):
                if self.model.session(row).get("id") == selected.get("id"):
                    self.table.selectRow(row)
        self._selection_changed()
        self.status.setText(f"{counted(len(sessions), 'session')}." if sessions else "No sessions yet.")

    def show_unavailable(self, sentence: str) -> None:
        self.status.setText(sentence)

    def selected_session(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.session(rows[0].row()) if rows else None

    def _selection_changed(self, *_args) -> None:
        session = self.selected_session()
        has_journal = bool(session) and session.get("state") in ("active", "ended", "sealed")
        self.report_button.setEnabled(has_journal)
        self.export_button.setEnabled(has_journal)

    # --- reports and exports ------------------------------------------------------------------
    def open_report(self) -> None:
        session = self.selected_session()
        if not session:
            return
        self.status.setText("Preparing the report …")
        self._run(write_session_report, self.home, session, self._reports_folder(),
                  on_done=self._report_ready, on_error=self.status.setText)

    def _report_ready(self, path: Path) -> None:
        self.status.setText(f"Opened the report in your browser ({path.name}).")
        self.open_url(QUrl.fromLocalFile(str(path)))

    def _reports_folder(self) -> Path:
        if self._report_dir is None:
            self._report_dir = tempfile.TemporaryDirectory(prefix="chaperone-reports-")
        return Path(self._report_dir.name)

    def export_selected(self) -> None:
        session = self.selected_session()
        if not session:
            return
        out = self.ask_export_path(session)
        if not out:
            return
        self.status.setText(f"Exporting to {out} …")
        self._run(export_session, self.home, str(session["id"]), Path(out),
                  on_done=self._exported, on_error=self.status.setText)

    def _exported(self, path) -> None:
        self.status.setText(f"Saved the bundle to {path}.")
        self.exported.emit(str(path))

    def ask_export_path(self, session: dict) -> str:
        """Where to save the bundle (a file dialog; replaced in tests)."""
        ticket = "".join(c for c in str(session.get("ticket") or "") if c.isalnum() or c in "-_")[:40]
        name = f"chaperone-{ticket + '-' if ticket else ''}{session.get('id')}.zip"
        path, _ = QFileDialog.getSaveFileName(self, "Export the session's bundle",
                                              str(Path.home() / name), "Chaperone bundle (*.zip)")
        return path

    # --- verification ------------------------------------------------------------------------
    def ask_bundle_path(self) -> str:
        """Which bundle to check (a file dialog; replaced in tests)."""
        path, _ = QFileDialog.getOpenFileName(self, "Check a Chaperone bundle", str(Path.home()),
                                              "Chaperone bundle (*.zip);;All files (*)")
        return path

    def verify_from_dialog(self) -> None:
        path = self.ask_bundle_path()
        if path:
            self.verify(Path(path))

    def verify(self, path: Path) -> None:
        self.verdict.show_busy(path)
        self._run(verify_file, path,
                  on_done=lambda verdict: self._verdict(path, verdict),
                  on_error=lambda sentence: self._verify_failed(path, sentence))

    def _verdict(self, path: Path, verdict) -> None:
        self.verdict.show_verdict(path, verdict)
        self.verdictShown.emit(self.verdict.verdict_text)

    def _verify_failed(self, path: Path, sentence: str) -> None:
        self.verdict.show_error(path, sentence)
        self.verdictShown.emit(self.verdict.verdict_text)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _local_files(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        files = _local_files(event.mimeData())
        if files:
            event.acceptProposedAction()
            self.verify(files[0])

    def cleanup(self) -> None:
        """Remove the temporary reports (on quit)."""
        if self._report_dir is not None:
            self._report_dir.cleanup()
            self._report_dir = None


def _local_files(mime) -> list[Path]:
    if mime is None or not mime.hasUrls():
        return []
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
