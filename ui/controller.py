"""``TrayApp``: wires the bridge's signals to the tray, the dialogs and the windows.

Everything here runs on the GUI thread and only ever waits for the agent
through the bridge's callbacks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from agent.errors import ChaperoneError
from agent.home import Home
from ui.activity import ActivityModel, ActivityWindow, describe, describe_all
from ui.agent_process import AgentProcess
from ui.bridge import AgentBridge
from ui.consent import ConsentQueue
from ui.device import DeviceWindow
from ui.history import HistoryWindow
from ui.notifier import Notifier
from ui.session_bar import SessionBar
from ui.timefmt import countdown
from ui.tray import Tray, TrayStatus
from ui.widgets import clip, shown

log = logging.getLogger(__name__)

MAX_REQUEST_FILE = 1024 * 1024


def read_request_file(path: Path) -> str:
    """The text of a request file, or one sentence saying why it cannot be read. Blocking."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_REQUEST_FILE + 1)
    except OSError as exc:
        raise ChaperoneError(f"Cannot read the request file {path}: {exc.strerror or exc}.") from None
    if len(raw) > MAX_REQUEST_FILE:
        raise ChaperoneError(f"The request file {path} is larger than 1 MiB; it cannot be a Chaperone request.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ChaperoneError(f"The request file {path} is not UTF-8 text; it cannot be a Chaperone request.") from None


class TrayApp(QObject):
    """The tray application: one instance per user session."""

    stateChanged = Signal(str)    # the tray state: idle, consent, active, alarm, disconnected
    quitRequested = Signal()

    def __init__(self, home: Home, *, start_agent: bool = True, bridge: AgentBridge | None = None,
                 notifier: Notifier | None = None, tray_retries: int = 15, parent: QObject | None = None):
        super().__init__(parent)
        self.home = home
        self.agent_process = AgentProcess(home) if start_agent else None
        self.bridge = bridge or AgentBridge(home, launcher=self.agent_process, activity_transform=describe_all)
        self.notifier = notifier or Notifier()
        self.activity_model = ActivityModel(self)
        self.queue = ConsentQueue(self)
        self.bar = SessionBar()
        self.tray = Tray(self.status, self, retries=tray_retries)
        self.activity_window: ActivityWindow | None = None
        self.history_window: HistoryWindow | None = None
        self.device_window: DeviceWindow | None = None
        self.active: dict | None = None
        self.alarm: dict | None = None
        self.ledger: dict | None = None  # the device ledger's state (LedgerLink.status())
        self.old_alarm: dict | None = None  # an alarm from before the session the customer allowed
        self.info: dict = {}                # the agent's ping: its mode (system or personal), device, version
        self.ever_connected = False
        self.lost_contact = False
        self._state = ""
        self._wire()

    # --- wiring -----------------------------------------------------------------------------
    def _wire(self) -> None:
        b = self.bridge
        b.connected.connect(self._on_connected)
        b.disconnected.connect(self._on_disconnected)
        b.consentNeeded.connect(self._on_consent_needed)
        b.consentDecided.connect(self._on_consent_decided)
        b.sessionStarted.connect(self._on_session_started)
        b.sessionEnded.connect(self._on_session_ended)
        b.sessionSealed.connect(self._on_session_sealed)
        b.timeWarning.connect(self._on_time_warning)
        b.activity.connect(self._on_activity)
        b.alarm.connect(self._on_alarm)
        b.ledger.connect(self._on_ledger)
        b.witnessLag.connect(self._on_witness_lag)
        b.agentStopping.connect(self._on_agent_stopping)
        self.queue.decisionMade.connect(self._send_decision)
        self.queue.changed.connect(self._refresh)
        self.bar.endRequested.connect(lambda _sid: self.end_session())
        self.bar.warned.connect(self._on_bar_warned)
        t = self.tray
        t.activityRequested.connect(self.show_activity)
        t.historyRequested.connect(self.show_history)
        t.deviceRequested.connect(self.show_device)
        t.endSessionRequested.connect(self.end_session)
        t.openRequestRequested.connect(self.choose_request_file)
        t.dismissAlarmRequested.connect(self.dismiss_alarm)
        t.quitRequested.connect(self.request_quit)
        t.primaryActivated.connect(self._primary)

    def start(self) -> None:
        self.tray.start()
        self.notifier.set_tray(self.tray.notify_target())
        self.tray.fallbackShown.connect(lambda: self.notifier.set_tray(None))
        self.bridge.start()
        self._refresh()

    def shutdown(self) -> None:
        """Stop every thread and the agent we started; safe to call twice."""
        self.bridge.stop()
        if self.agent_process is not None:
            self.agent_process.stop()
        self.queue.clear()
        self.bar.end_session()
        self.tray.hide()
        for window in (self.activity_window, self.history_window):
            if window is not None:
                window.close()
        if self.history_window is not None:
            self.history_window.cleanup()

    # --- what the tray shows ------------------------------------------------------------------
    def mode_text(self) -> str:
        """What kind of agent records this computer, in the customer's words."""
        mode = self.info.get("mode")
        if mode == "system":
            return "Recorded by the system agent (its key is readable by administrators only)."
        if mode == "personal":
            return ("Personal mode: the log's signing key is readable by your account, so whoever can log in as "
                    "you could forge what has not yet left this computer.")
        return ""

    def status(self) -> TrayStatus:
        alarm = self.alarm is not None
        mode = self.mode_text()
        if not self.bridge.is_connected:
            why = "Not connected to the Chaperone agent; trying again."
            return TrayStatus("alarm" if alarm else "disconnected", why, self._alarm_text() if alarm else "",
                              alarm=alarm)
        if alarm:
            return TrayStatus("alarm", self._alarm_headline(), self._alarm_text(),
                              can_end=self.active is not None, alarm=True, mode=mode)
        if len(self.queue):
            count = len(self.queue)
            headline = "A technician asks to connect." if count == 1 else f"{count} technicians ask to connect."
            return TrayStatus("consent", headline, "Answer in the Chaperone window.",
                              can_end=self.active is not None, mode=mode)
        if self.active is not None:
            who = clip(shown(self.active.get("technician")) or "A technician", 60)
            detail = f"{who} is connected."
            if self.bar.isVisible() and self.bar.remaining_label.text():
                detail += f" {self.bar.remaining_label.text().capitalize()}."
            if self.bar.unwitnessed:
                detail += " Its record is not leaving this computer (no witness confirms it)."
            if self.old_alarm is not None:
                detail += f" (An earlier alarm, from before this session: {self._alarm_text(self.old_alarm)})"
            return TrayStatus("active", "A session is active.", detail, can_end=True, mode=mode)
        return TrayStatus("idle", "Nobody is connected.", mode=mode)

    def _alarm_headline(self) -> str:
        kind = (self.alarm or {}).get("kind")
        if (self.alarm or {}).get("tool") == "ledger":  # agent.service.ledger_link: a cut journal, a fork
            return "This computer's record was tampered with."
        if kind == "way-back-in":
            return "A new way back in to this computer."
        if kind == "refused-attempt":
            return "Someone else tried to decide for you."
        return "Remote access without a session you allowed."

    def _alarm_text(self, alarm: dict | None = None) -> str:
        alarm = alarm or self.alarm
        if not alarm:
            return ""
        if alarm.get("tool") == "ledger":
            return clip(shown(alarm.get("detail")) or "The device ledger raised an alarm.", 300)
        if alarm.get("kind") == "way-back-in":
            return clip(shown(alarm.get("detail")) or f"{shown(alarm.get('category'))}: {shown(alarm.get('item'))}",
                        160)
        if alarm.get("kind") == "refused-attempt":
            return clip(shown(alarm.get("detail")) or "A technician's process tried to decide for you.", 160)
        tool = shown(alarm.get("tool") or alarm.get("process") or "a remote-access tool")
        return f"{clip(tool, 60)} is running or connected."

    def _refresh(self) -> None:
        self.tray.refresh()
        state = self.status().state
        if state != self._state:
            self._state = state
            self.stateChanged.emit(state)

    # --- agent events ---------------------------------------------------------------------------
    def _on_connected(self, snapshot: dict) -> None:
        if self.lost_contact:
            self.notifier.notify("Chaperone", "Reconnected to the Chaperone agent.")
        self.ever_connected, self.lost_contact = True, False
        info = snapshot.get("info")
        self.info = info if isinstance(info, dict) else {}
        status = snapshot.get("status") if isinstance(snapshot.get("status"), dict) else {}
        self.ledger = status.get("ledger") if isinstance(status.get("ledger"), dict) else None
        self.bar.set_ledger(self.ledger)
        active = status.get("active")
        if isinstance(active, dict) and active.get("id"):
            if self.active is None or self.active.get("id") != active.get("id"):
                self.active = active
                self.bar.start_session(active)
        elif self.active is not None:
            self.active = None
            self.bar.end_session()
        pending = snapshot.get("pending")
        self.queue.replace_all(pending if isinstance(pending, list) else [])
        if self.history_window is not None and self.history_window.isVisible():
            self.refresh_history()
        self._refresh()

    def _on_disconnected(self, reason: str) -> None:
        if self.ever_connected and not self.lost_contact:
            self.lost_contact = True
            self.notifier.notify("Chaperone", "Lost contact with the Chaperone agent. Reconnecting…", "warning")
        log.info("agent connection: %s", reason)
        self._refresh()

    def _on_agent_stopping(self) -> None:
        log.info("the agent is stopping")

    def _on_consent_needed(self, item: dict) -> None:
        before = len(self.queue)
        self.queue.add(item)
        if len(self.queue) > before:
            who = clip(shown(item.get("technician")) or "A technician", 60)
            self.notifier.notify("Chaperone: consent needed", f"{who} asks to connect to this computer.", "warning")
        self._refresh()

    def _on_consent_decided(self, data: dict) -> None:
        self.queue.resolved(str(data.get("id", "")))
        self._refresh_history_if_shown()
        self._refresh()

    def _refresh_history_if_shown(self) -> None:
        if self.history_window is not None and self.history_window.isVisible():
            self.refresh_history()

    def _send_decision(self, request_id: str, decision: str, grant: dict | None = None) -> None:
        self.bridge.call("decide", id=request_id, decision=decision, how="click", **(grant or {}),
                         on_error=lambda sentence: self.notifier.notify("Chaperone", sentence, "warning"))

    def _on_session_started(self, summary: dict) -> None:
        if self.alarm is not None and self.alarm.get("kind") != "refused-attempt":
            # "Remote access without a session you allowed" is no longer true: keep it, marked as earlier.
            self.old_alarm, self.alarm = self.alarm, None
        self.active = summary
        self.bar.start_session(summary)
        who = clip(shown(summary.get("technician")) or "A technician", 60)
        self.notifier.notify("Chaperone: session started",
                             f"{who} is connected. Use \"End session\" at any moment to stop it.")
        self._refresh()

    def _on_session_ended(self, data: dict) -> None:
        if self.active is not None and data.get("id") not in (None, self.active.get("id")):
            return
        self.active = None
        self.old_alarm = None
        self.bar.end_session()
        self._refresh_history_if_shown()
        self._refresh()

    def _on_session_sealed(self, data: dict) -> None:
        """The ending is complete: say what it did (disconnected only when it did disconnect someone)."""
        n = data.get("disconnected")
        if isinstance(n, int) and n > 0:
            what = ("The technician was disconnected" if n == 1 else f"The technician's {n} connections were "
                    "closed")
            text = f"{what} and the log is sealed."
        else:
            text = "The session is over and its log is sealed."
        summary = data.get("summary") if isinstance(data.get("summary"), dict) else None
        if summary is not None:
            text += f" {clip(shown(summary.get('headline')), 200)}."
            ways = [w for w in summary.get("ways_back_in") or [] if isinstance(w, dict) and w.get("still_there")]
            for way in ways[:5]:
                origin = "from a package" if way.get("origin") == "package" else "unexplained"
                text += f"\n• {clip(shown(way.get('category')), 30)}: {clip(shown(way.get('item')), 80)} ({origin})"
            if len(ways) > 5:
                text += f"\n• and {len(ways) - 5} more (see the report)"
        level = "warning" if summary and summary.get("unexplained") else "info"
        self.notifier.notify("Chaperone: session ended", text, level)
        self._refresh_history_if_shown()
        self._refresh()

    def _on_time_warning(self, data: dict) -> None:
        remaining = data.get("remaining_s")
        self.bar.warn(remaining if isinstance(remaining, (int, float)) else 300)

    def _on_bar_warned(self, remaining_s: int) -> None:
        self.notifier.notify("Chaperone: time almost up",
                             f"The session ends in {countdown(remaining_s)}.", "warning")
        self._refresh()

    def _on_activity(self, items: list, coalesced: int) -> None:
        """Items arrive as rows when the bridge runs ``describe_all``; a bridge without it sends dicts."""
        rows = [item if isinstance(item, tuple) else describe(item) for item in items
                if isinstance(item, (tuple, dict))]
        self.activity_model.append_rows(rows, coalesced)

    def _on_alarm(self, data: dict) -> None:
        self.activity_model.append([{**data, "type": "alarm"}])
        if data.get("kind") == "way-back-in" and data.get("origin") == "package":
            # Installed software brought it: worth knowing, not an alarm state.
            self.notifier.notify("Chaperone: a package added a way back in", self._alarm_text(data))
            return
        self.alarm = data
        title = {"way-back-in": "Chaperone: a new way back in",
                 "refused-attempt": "Chaperone: an attempt to decide for you was refused"}.get(
            str(data.get("kind")), "Chaperone: remote access without consent")
        if data.get("tool") == "ledger":
            title = "Chaperone: the record was tampered with"
        self.notifier.notify(title, self._alarm_text(), "critical")
        self._refresh()

    def _on_ledger(self, data: dict) -> None:
        self.ledger = data if isinstance(data, dict) else None
        self.bar.set_ledger(self.ledger)
        self._refresh()

    def _on_witness_lag(self, data: dict) -> None:
        lag = data.get("lag_s")
        seconds = f" for {countdown(lag)}" if isinstance(lag, (int, float)) else ""
        ending = " The session ends now, as the settings say." if data.get("on_lag") == "end" else ""
        self.notifier.notify("Chaperone: the record is not leaving this computer",
                             f"No witness has confirmed this session's record{seconds}.{ending}", "warning")
        self._refresh()

    # --- user actions -----------------------------------------------------------------------------
    def end_session(self) -> None:
        session_id = self.active.get("id") if self.active else None
        params = {"id": session_id} if session_id else {}
        self.bridge.call("end", **params,
                         on_error=lambda sentence: self.notifier.notify("Chaperone", sentence, "warning"))

    def dismiss_alarm(self) -> None:
        self.alarm = None
        self._refresh()

    def request_quit(self) -> None:
        """Quit, after asking when a session is active (in personal mode quitting ends it)."""
        if self.active is not None and not self.confirm_quit():
            return
        self.quitRequested.emit()

    def confirm_quit(self) -> bool:
        """Ask the customer; a seam tests replace. True to quit."""
        ours = self.agent_process is not None and self.agent_process.running()
        consequence = ("Quitting stops the agent this tray started, which ends the session and seals its log."
                       if ours else
                       "The session goes on without the tray: you will not see its alarms or be able to end it "
                       "from here until you start the tray again.")
        answer = QMessageBox.question(None, "Chaperone — a session is active",
                                      f"A technician is connected. {consequence} Quit anyway?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def show_activity(self) -> None:
        if self.activity_window is None:
            self.activity_window = ActivityWindow(self.activity_model)
        _present(self.activity_window)

    def show_history(self) -> None:
        if self.history_window is None:
            self.history_window = HistoryWindow(self.home, self.bridge.run)
            self.history_window.refreshRequested.connect(self.refresh_history)
        _present(self.history_window)
        self.refresh_history()

    def show_device(self) -> None:
        if self.device_window is None:
            self.device_window = DeviceWindow(
                lambda on_done, on_error: self.bridge.call("device", on_done=on_done, on_error=on_error))
        _present(self.device_window)
        self.device_window.refresh()

    def refresh_history(self) -> None:
        window = self.history_window
        if window is None:
            return
        self.bridge.call("sessions", on_done=lambda sessions: window.set_sessions(sessions or []),
                         on_error=window.show_unavailable)

    def choose_request_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(None, "Open a Chaperone request file", str(Path.home()),
                                              "Chaperone request (*.chaperone *.json *.txt);;All files (*)")
        if path:
            self.open_request_file(Path(path))

    def open_request_file(self, path: Path) -> None:
        """Hand a request file to the agent; its consent dialog follows as for any request."""

        def submitted(_result) -> None:
            log.info("request file %s handed to the agent", path)

        def failed(sentence: str) -> None:
            self.notifier.notify("Chaperone: cannot open the request", sentence, "warning")

        def send(text: str) -> None:
            self.bridge.call("request", request_file=text, on_done=submitted, on_error=failed)

        self.bridge.run(read_request_file, path, on_done=send, on_error=failed)

    def handle_message(self, message: dict) -> None:
        """A message from a second ``chaperone-tray`` start: open its request file, or come forward."""
        file = message.get("open")
        if isinstance(file, str) and file:
            self.open_request_file(Path(file))
        elif len(self.queue):
            self.queue.raise_current()
        else:
            self.show_history()

    def _primary(self) -> None:
        if len(self.queue):
            self.queue.raise_current()
        elif self.active is not None:
            self.show_activity()
        else:
            self.show_history()


def _present(window) -> None:
    window.show()
    window.raise_()
    window.activateWindow()
