"""The history window against a real agent: sessions, the report, export, and checking bundles."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from ui.bridge import AgentBridge
from ui.history import HistoryModel, HistoryWindow

REQUEST = {"technician": "Ada <b>Lovelace</b>", "email": "ada@example.com", "org": "Acme", "ticket": "T-77",
           "reason": "printer", "duration_s": 600, "watch": []}


@pytest.fixture
def sealed_session(agent):
    request_id = agent.call("request", request=REQUEST)["id"]
    agent.call("decide", id=request_id, decision="allow", how="terminal")
    agent.call("note", id=request_id, text="restarted cups")
    agent.call("end", id=request_id, reason="customer")
    refused = agent.call("request", request={**REQUEST, "ticket": "T-78"})["id"]
    agent.call("decide", id=refused, decision="deny", how="terminal")
    return request_id


@pytest.fixture
def window(qtbot, home):
    bridge = AgentBridge(home)
    bridge.start()
    w = HistoryWindow(home, bridge.run)
    qtbot.addWidget(w)
    w.show()
    yield w
    bridge.stop()
    w.cleanup()


def drop(window, path: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, event)


def verdict_after(qtbot, window, action) -> str:
    with qtbot.waitSignal(window.verdictShown, timeout=20_000) as blocker:
        action()
    return blocker.args[0]


def test_model_passes_the_model_tester(qtmodeltester):
    model = HistoryModel()
    model.set_sessions([
        {"id": "s-1", "state": "sealed", "technician": "Ada", "org": "Acme", "ticket": "T-1",
         "started": "2026-11-22T03:04:05Z", "verified": True},
        {"id": "s-2", "state": "refused", "technician": "\u202eEve", "verified": False},
        {"id": "s-3", "state": "weird"},
    ])
    qtmodeltester.check(model)
    assert model.index(1, 1).data() == "\\u202eEve"
    assert model.index(0, 4).data() == "Ended and sealed" and model.index(1, 4).data() == "Refused"
    assert model.index(0, 5).data() == "Verified" and model.index(1, 5).data() == "NOT VERIFIED"
    assert model.index(2, 5).data() == "unknown"


def test_sessions_report_export_and_verdicts(qtbot, agent, sealed_session, window, tmp_path):
    window.set_sessions(agent.call("sessions"))
    assert window.model.rowCount() == 2
    states = {window.model.index(r, 4).data() for r in range(2)}
    assert states == {"Ended and sealed", "Refused"}
    row = next(r for r in range(2) if window.model.session(r)["id"] == sealed_session)
    window.table.selectRow(row)
    assert window.report_button.isEnabled() and window.export_button.isEnabled()

    opened = []
    window.open_url = opened.append
    window.report_button.click()
    qtbot.waitUntil(lambda: len(opened) == 1, timeout=20_000)
    report = Path(opened[0].toLocalFile())
    html = report.read_text(encoding="utf-8")
    assert "Genuine: checked when this report was written" in html  # the tray checked the home's journal
    assert "restarted cups" in html and "<b>Lovelace</b>" not in html   # hostile markup stays text
    assert oct(report.stat().st_mode & 0o777) == "0o600"

    out = tmp_path / "bundle.zip"
    window.ask_export_path = lambda session: str(out)
    with qtbot.waitSignal(window.exported, timeout=20_000):
        window.export_button.click()
    assert zipfile.is_zipfile(out)

    assert verdict_after(qtbot, window, lambda: drop(window, out)).startswith("✔  Genuine")
    assert window.verdict.banner.level == "ok"
    assert "SHA256:" in window.verdict.reason.text() + window.verdict.details.text()   # the signing key is named

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "session.jsonl":
                data = data.replace(b"restarted cups", b"restarted CUPS")
            dst.writestr(info, data)
    headline = verdict_after(qtbot, window, lambda: drop(window, tampered))
    assert headline.startswith("✖  NOT genuine")
    assert window.verdict.banner.level == "danger" and window.verdict.reason.text()


def test_a_corrupt_bundle_dropped_on_the_window(qtbot, window, tmp_path):
    junk = tmp_path / "bundle.zip"
    junk.write_bytes(b"PK\x03\x04" + b"\x00garbage" * 100)
    headline = verdict_after(qtbot, window, lambda: drop(window, junk))
    assert headline.startswith(("✖  Cannot read", "✖  NOT genuine"))
    reason = window.verdict.reason.text()
    assert reason and "\n" not in reason and "Traceback" not in reason


def test_verify_from_the_file_dialog_and_a_missing_file(qtbot, window, tmp_path):
    window.ask_bundle_path = lambda: str(tmp_path / "nowhere.zip")
    headline = verdict_after(qtbot, window, window.verify_button.click)
    assert headline.startswith("✖") and window.verdict.reason.text()
    window.ask_bundle_path = lambda: ""          # cancelled
    window.verify_button.click()
    assert window.verdict.verdict_text == headline


def test_drag_of_something_that_is_not_a_file_is_refused(window):
    mime = QMimeData()
    mime.setText("http://example.com/bundle.zip")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert not enter.isAccepted()
