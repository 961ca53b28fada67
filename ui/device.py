"""The "This device" window: what to give the client (the device's fingerprint, the ledger's verifier key),
where the record goes (witnesses, the fleet store), how long it is kept, and where the settings file is.

It asks the agent (op ``device``) off the GUI thread and shows the answer; the
keys have Copy buttons, since they are meant to be pasted into the client's
``--devices`` file and witness configuration.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ui.icons import state_icon
from ui.widgets import PlainLabel, heading_font, shown


def _publish_text(publish: dict) -> str:
    if not publish.get("url"):
        return "Off: nothing leaves this computer (set publish.url in the settings file)."
    where = publish["url"] + (f" at {publish['endpoint_url']}" if publish.get("endpoint_url") else "")
    text = (f"To {where}, kept {publish.get('retain_days')} days ({publish.get('mode')}). "
            f"{publish.get('published', 0)} published, {publish.get('waiting', 0)} waiting")
    if publish.get("oldest_waiting"):
        text += f" (the oldest since {publish['oldest_waiting']})"
    text += "."
    if publish.get("last_error"):
        text += f"\nLast problem: {publish['last_error']}"
    return text


def _witness_text(witness: dict | None, ledger: dict | None) -> str:
    witnesses = (witness or {}).get("witnesses") or []
    if not witnesses:
        return "None: the record does not leave this computer while a session runs."
    names = ", ".join(w.get("url", "?") for w in witnesses)
    text = (f"{len(witnesses)} ({names}); {witness.get('quorum', 1)} must cosign, "
            f"at most {witness.get('max_lag_s')} s apart")
    if ledger and ledger.get("cosigned"):
        text += f"; last cosigned head: {ledger['cosigned']}"
    return text + "."


class DeviceWindow(QWidget):
    """Shows the agent's answer to the ``device`` op: ``ask(on_done, on_error)`` asks it off the GUI thread
    (``AgentBridge.call``) and calls one of them on the GUI thread."""

    TITLE = "Chaperone — This device"
    shownStatus = Signal(dict)
    copied = Signal(str)

    def __init__(self, ask: Callable[[Callable, Callable], object], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ask = ask
        self.setWindowTitle(self.TITLE)
        self.setWindowIcon(state_icon("idle"))
        self.resize(720, 320)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 14)
        title = PlainLabel("This device", selectable=False)
        title.setFont(heading_font(title))
        layout.addWidget(title)
        layout.addWidget(PlainLabel("Give the fingerprint and the ledger's verifier key to whoever checks this "
                                    "computer's sessions (your IT, or an auditor).", selectable=False))
        form = QFormLayout()
        self.fields: dict[str, PlainLabel] = {}
        self.copy_buttons: dict[str, QPushButton] = {}
        for key, label, copyable in (("mode", "Mode", False), ("fingerprint", "Device key", True),
                                     ("ledger", "Ledger verifier key", True), ("witness", "Witnesses", False),
                                     ("publish", "Fleet store", False), ("retention", "Kept for", False),
                                     ("settings", "Settings file", False)):
            value = PlainLabel("…")
            value.setWordWrap(True)
            self.fields[key] = value
            if copyable:
                row = QHBoxLayout()
                row.addWidget(value, 1)
                button = QPushButton("Copy")
                button.setEnabled(False)
                button.clicked.connect(lambda _checked=False, k=key: self.copy(k))
                self.copy_buttons[key] = button
                row.addWidget(button)
                form.addRow(label, row)
            else:
                form.addRow(label, value)
        layout.addLayout(form)
        layout.addStretch(1)
        self.refresh_button = QPushButton("Re&fresh")
        self.refresh_button.clicked.connect(self.refresh)
        layout.addWidget(self.refresh_button)
        self._values: dict[str, str] = {}

    def refresh(self) -> None:
        self._ask(self.show_status, self.show_unavailable)

    def show_unavailable(self, sentence: str) -> None:
        for value in self.fields.values():
            value.setText("")
        self.fields["mode"].setText(sentence)

    def show_status(self, status: dict) -> None:
        mode = status.get("mode")
        self.fields["mode"].setText(
            "System: the agent runs as a service and its key is readable by root only." if mode == "system" else
            "Personal: the agent runs in your account, so its key is readable by that account; whoever can log "
            "in as you could forge what has not yet left this computer.")
        fp = status.get("fingerprint") or ""
        self._values["fingerprint"] = fp
        self.fields["fingerprint"].setText(shown(f"{fp}  ({status.get('principal') or ''})" if fp else
                                                 "No device key yet (run 'chaperone init')."))
        ledger = status.get("ledger") or {}
        self._values["ledger"] = ledger.get("vkey") or ""
        self.fields["ledger"].setText(shown(ledger.get("vkey") or "No ledger on this device yet."))
        for key, button in self.copy_buttons.items():
            button.setEnabled(bool(self._values.get(key)))
        if status.get("settings_error"):
            for key in ("witness", "publish", "retention"):
                self.fields[key].setText("")
            self.fields["settings"].setText(shown(f"{status.get('settings_file')}: {status['settings_error']}"))
        else:
            self.fields["witness"].setText(shown(_witness_text(status.get("witness"), ledger)))
            self.fields["publish"].setText("\n".join(shown(line) for line in
                                                     _publish_text(status.get("publish") or {}).split("\n")))
            days = (status.get("retention") or {}).get("keep_days")
            self.fields["retention"].setText(f"{days} days, then a finished session is removed from this computer"
                                             + (" (once published)." if (status.get("publish") or {}).get("url")
                                                else "."))
            exists = "" if status.get("settings_exists") else " (not created: every setting has its default)"
            self.fields["settings"].setText(shown(f"{status.get('settings_file')}{exists}"))
        self.shownStatus.emit(status)

    def copy(self, key: str) -> None:
        text = self._values.get(key) or ""
        if text:
            QGuiApplication.clipboard().setText(text)
            self.copied.emit(text)
