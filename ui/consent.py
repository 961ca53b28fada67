"""Asking the customer: the consent dialog and the queue of pending requests.

The dialog shows everything needed to decide, escaped and in plain text. No
answer is a "no": Deny is the default button, Escape and closing the window
deny, and when the countdown runs out the dialog closes and the agent records
the refusal itself (the UI never claims a click that did not happen).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from agent import text as agent_text
from ui.icons import state_icon
from ui.timefmt import countdown, parse_ts, spoken_duration
from ui.widgets import Banner, PlainLabel, PlainTextBox, clip, heading_font, monospace_font, shown, shown_multiline

ALLOW, DENY, TIMEOUT = "allow", "deny", "timeout"
# What each capability lets the technician do, in the customer's words.
CAPABILITY_WORDS = {
    "files": "Files: read and change files (SFTP)",
    "shell": "Shell: run programs and commands",
    "admin": "Admin: administrator rights (root, or sudo for the session)",
}
# Shorter times the customer may choose instead of what was asked (seconds).
SHORTER_TIMES = (10 * 60, 15 * 60, 30 * 60, 60 * 60, 2 * 3600, 4 * 3600)


def what_is_recorded(item: dict) -> str:
    """Everything the session will record, in plain words (the dialog shows it before anyone decides)."""
    folders = item.get("watch") if isinstance(item.get("watch"), list) else []
    where = ", ".join(clip(shown(f), 80) for f in folders[:4]) or "your home folder and the system settings"
    if len(folders) > 4:
        where += f" and {len(folders) - 4} more"
    own = ("Your own programs are counted by name only, with no details."
           if item.get("source") == "ssh" else
           "Chaperone cannot tell your programs from the technician's in this kind of session, so every "
           "program that runs is recorded, yours included.")
    return (f"While the session runs, Chaperone records: every file changed under {where} (and anything "
            "the technician changes anywhere else), with fingerprints before and after and the changed lines "
            "of settings files, secrets hidden; every program the technician runs; and this computer's setup "
            "before, during and after: software, services, scheduled jobs, accounts, keys and every way back "
            f"in. {own} The record is signed and can be checked later.")


def request_flags(item: dict) -> list[str]:
    """The agent's flags for a request, plus the UI's own check of the text fields."""
    flags = [str(f) for f in item.get("flags") or [] if f]
    for field, what in (("technician", "technician"), ("org", "organisation"), ("ticket", "ticket"),
                        ("reason", "reason")):
        value = item.get(field)
        if isinstance(value, str):
            flag = agent_text.show(value).flag(what)
            if flag and not any(flag.split(" (")[0] in f for f in flags):
                flags.append(flag)
    return flags


def is_verified(item: dict) -> bool:
    verification = item.get("verification") if isinstance(item.get("verification"), dict) else {}
    return bool(item.get("verified", verification.get("verified", False)))


def _listed(values: object, empty: str) -> str:
    if isinstance(values, (list, tuple)) and values:
        return "\n".join(shown(v) for v in values)
    return empty


def _field(text: str) -> PlainLabel:
    return PlainLabel(text, wrap=False, selectable=False)


class ConsentDialog(QDialog):
    """One technician's request; emits ``decided(request_id, "allow"|"deny"|"timeout")`` once."""

    decided = Signal(str, str)

    TITLE = "Chaperone — a technician asks to connect"

    def __init__(
        self,
        item: dict,
        parent: QWidget | None = None,
        *,
        clock: Callable[[], float] = time.time,
        allow_delay_ms: int = 1000,
    ):
        super().__init__(parent)
        self.item = item
        self.request_id = str(item.get("id", ""))
        self._clock = clock
        self._deadline = parse_ts(item.get("expires_at"))
        self._finished = False
        self.decision: str | None = None

        self.setWindowTitle(self.TITLE)
        self.setWindowIcon(state_icon("consent"))
        self.setWindowFlag(Qt.WindowType.WindowStaysOnTopHint, True)
        self.setWindowFlag(Qt.WindowType.WindowContextHelpButtonHint, False)
        self.setMinimumWidth(560)
        self.setMaximumWidth(720)
        self._build()
        self.resize(600, self.heightForWidth(600) if self.hasHeightForWidth() else self.sizeHint().height())
        self._tick_timer = QTimer(self)
        self._tick_timer.setInterval(250)
        self._tick_timer.timeout.connect(self.tick)
        self._tick_timer.start()
        # Only show the countdown here: a request that has already run out is
        # closed by the first tick, once whoever opened the dialog listens.
        self._show_countdown(self.remaining())
        # A short pause before Allow works, so a click or keystroke meant for
        # another window cannot let someone in by accident.
        self._usable = True
        self._allow_armed = allow_delay_ms <= 0
        self.allow_button.setEnabled(allow_delay_ms <= 0)
        if allow_delay_ms > 0:
            QTimer.singleShot(allow_delay_ms, self, self._arm_allow)

    # --- layout ----------------------------------------------------------------------
    def _build(self) -> None:
        item = self.item
        verified = is_verified(item)
        verification = item.get("verification") if isinstance(item.get("verification"), dict) else {}
        fingerprint = verification.get("fingerprint")
        self.flags = request_flags(item)

        root = QVBoxLayout(self)
        # Wrapped labels need more height than a plain size hint says: never let
        # the window squeeze them into each other.
        root.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        root.setSpacing(12)
        root.setContentsMargins(18, 18, 18, 14)

        if not verified:
            text = (
                "NOT VERIFIED: Chaperone could not confirm who sent this request. "
                "Allow it only if you asked for help and you know this person."
            )
            self.banner = Banner(text, "danger")
        elif self.flags:
            self.banner = Banner("Be careful: parts of this request look unusual (listed below).", "warning")
        else:
            self.banner = Banner("Verified: this request is signed by a technician your organisation trusts.", "ok")
        self.banner.setObjectName("consentBanner")
        root.addWidget(self.banner)

        technician = clip(shown(item.get("technician")) or "Someone", 120)
        org = clip(shown(item.get("org")), 120)
        headline = f"{technician} from {org} asks to connect to this computer." if org else (
            f"{technician} asks to connect to this computer."
        )
        self.headline = PlainLabel(headline)
        self.headline.setFont(heading_font(self, 1.2))
        root.addWidget(self.headline)

        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(8)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        who = clip(shown(item.get("technician")), 240)
        email = clip(shown(item.get("email")), 240)
        self.technician_label = PlainLabel(f"{who} <{email}>" if email else who)
        form.addRow(_field("Technician:"), self.technician_label)
        self.org_label = PlainLabel(clip(shown(item.get("org")), 240) or "not stated")
        form.addRow(_field("Organisation:"), self.org_label)

        if verified:
            principal = shown(verification.get("principal"))
            identity = "Verified" + (f" as {clip(principal, 120)}" if principal else "")
        else:
            detail = clip(shown(verification.get("detail")), 200)
            if detail.startswith("NOT VERIFIED"):
                identity = detail
            else:
                identity = "NOT VERIFIED" + (f": {detail}" if detail else "")
        self.identity_label = PlainLabel(identity)
        self.identity_label.setObjectName("identity")
        identity_font = heading_font(self, 1.0, bold=True)
        self.identity_label.setFont(identity_font)
        self.identity_label.setStyleSheet("color:#0d3b1e;" if verified else "color:#b71c1c;")
        form.addRow(_field("Identity:"), self.identity_label)
        self.fingerprint_label = PlainLabel(shown(fingerprint) if fingerprint else "no signing key")
        self.fingerprint_label.setFont(monospace_font())
        form.addRow(_field("Key:"), self.fingerprint_label)

        self.ticket_label = PlainLabel(clip(shown(item.get("ticket")), 240) or "not stated")
        form.addRow(_field("Ticket:"), self.ticket_label)
        self.reason_box = PlainTextBox(shown_multiline(item.get("reason")) or "not stated", max_lines=5)
        self.reason_box.setObjectName("reason")
        form.addRow(_field("Reason:"), self.reason_box)
        asked = [c for c in item.get("capabilities") or [] if c in CAPABILITY_WORDS]
        self.capability_boxes: dict[str, QCheckBox] = {}
        access = QVBoxLayout()
        access.setSpacing(2)
        for capability in asked:
            box = QCheckBox(CAPABILITY_WORDS[capability])
            box.setChecked(True)
            box.setObjectName(f"grant-{capability}")
            box.toggled.connect(self._grant_changed)
            self.capability_boxes[capability] = box
            access.addWidget(box)
        if not asked:
            access.addWidget(PlainLabel("not stated"))
        form.addRow(_field("Access asked:"), access)
        self.watch_box = PlainTextBox(_listed(item.get("watch"), "the default folders"), max_lines=3)
        form.addRow(_field("Watched folders:"), self.watch_box)
        self.duration_choice = QComboBox()
        self.duration_choice.setObjectName("grant-duration")
        asked_s = item.get("duration_s") if isinstance(item.get("duration_s"), int) else None
        self.asked_duration_s = asked_s
        self.duration_choice.addItem(f"{spoken_duration(asked_s)} (as asked)", asked_s)
        for seconds in SHORTER_TIMES:
            if asked_s is not None and seconds < asked_s:
                self.duration_choice.addItem(spoken_duration(seconds), seconds)
        self.duration_choice.setEnabled(self.duration_choice.count() > 1)
        form.addRow(_field("For:"), self.duration_choice)
        root.addLayout(form)

        self.recorded_box = PlainTextBox(what_is_recorded(item), max_lines=6)
        self.recorded_box.setObjectName("recorded")
        form.addRow(_field("Recorded:"), self.recorded_box)

        if self.flags:
            self.flags_label = Banner("Unusual: " + "; ".join(clip(shown(f), 300) for f in self.flags), "warning")
            self.flags_label.setObjectName("flags")
            root.addWidget(self.flags_label)
        else:
            self.flags_label = None

        self.countdown_label = PlainLabel("", selectable=False)
        self.countdown_label.setObjectName("countdown")
        root.addWidget(self.countdown_label)
        self.queue_label = PlainLabel("", selectable=False)
        self.queue_label.hide()
        root.addWidget(self.queue_label)

        buttons = QDialogButtonBox(self)
        self.deny_button = QPushButton("&Deny")
        self.allow_button = QPushButton("&Allow")
        buttons.addButton(self.deny_button, QDialogButtonBox.ButtonRole.RejectRole)
        buttons.addButton(self.allow_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow_button.setAutoDefault(False)
        self.allow_button.setDefault(False)
        self.deny_button.setAutoDefault(True)
        self.deny_button.setDefault(True)
        self.deny_button.clicked.connect(self.reject)
        self.allow_button.clicked.connect(self.accept)
        root.addWidget(buttons)
        self.deny_button.setFocus()

    # --- behaviour ---------------------------------------------------------------------
    @property
    def grant(self) -> dict | None:
        """What the customer allows when less than asked: ``{"only": [...], "for_s": n}`` (keys only when
        changed); None when everything asked is allowed."""
        out: dict = {}
        chosen = [c for c, box in self.capability_boxes.items() if box.isChecked()]
        if chosen != list(self.capability_boxes):
            out["only"] = chosen
        seconds = self.duration_choice.currentData()
        if isinstance(seconds, int) and seconds != self.asked_duration_s:
            out["for_s"] = seconds
        return out or None

    def _grant_changed(self) -> None:
        """Allow needs at least files or shell: a session with neither could not be used."""
        usable = any(box.isChecked() for c, box in self.capability_boxes.items() if c in ("files", "shell"))
        self._usable = usable or not self.capability_boxes
        if getattr(self, "_allow_armed", False):
            self.allow_button.setEnabled(self._usable)
        self.allow_button.setText("&Allow" if self.grant is None else "&Allow less")

    def remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - self._clock()

    def tick(self) -> None:
        """Refresh the countdown; at zero the request is left to the agent's automatic refusal."""
        left = self.remaining()
        if left is not None and left <= 0:
            self._finish(TIMEOUT)
            return
        self._show_countdown(left)

    def _arm_allow(self) -> None:
        self._allow_armed = True
        self.allow_button.setEnabled(self._usable)

    def _show_countdown(self, left: float | None) -> None:
        if left is None:
            self.countdown_label.setText("If nobody answers, the request is refused automatically.")
        else:
            self.countdown_label.setText(f"If you do not answer, the request is refused in {countdown(left)}.")

    def set_queue_position(self, index: int, total: int) -> None:
        """Show "Request 1 of 3" when more than one request waits."""
        self.queue_label.setVisible(total > 1)
        self.queue_label.setText(f"Request {index} of {total}. The others wait until you answer this one.")

    def accept(self) -> None:
        if self.allow_button.isEnabled():
            self._finish(ALLOW)

    def reject(self) -> None:
        self._finish(DENY)

    def dismiss(self) -> None:
        """Close without a decision: the request was answered elsewhere or expired."""
        self._finished = True
        self._tick_timer.stop()
        super().done(QDialog.DialogCode.Rejected)

    def _finish(self, decision: str) -> None:
        if self._finished:
            return
        self._finished = True
        self.decision = decision
        self._tick_timer.stop()
        super().done(QDialog.DialogCode.Accepted if decision == ALLOW else QDialog.DialogCode.Rejected)
        self.decided.emit(self.request_id, decision)

    def show_on_top(self) -> None:
        self.show()
        self.raise_()
        self.activateWindow()

    @classmethod
    def ask(cls, item: dict, on_decided: Callable[[str], None], parent: QWidget | None = None) -> ConsentDialog:
        """Show the dialog for ``item``; ``on_decided(decision)`` is called once.

        This is the seam for code and tests that need a decision, not the
        widget: replace it to answer without showing anything.
        """
        dialog = cls(item, parent)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        dialog.decided.connect(lambda _rid, decision: on_decided(decision))
        dialog.show_on_top()
        return dialog


class ConsentQueue(QObject):
    """Pending requests, asked one at a time, oldest first.

    ``decisionMade(id, decision)`` is emitted for a click (allow or deny); a
    timeout only moves on, since the agent records that refusal itself.
    """

    decisionMade = Signal(str, str, object)  # request id, "allow"/"deny", the grant (dict) or None
    changed = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._items: OrderedDict[str, dict] = OrderedDict()
        self.current_id: str | None = None
        self.current_dialog: ConsentDialog | None = None

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[str]:
        return list(self._items)

    def add(self, item: dict) -> None:
        request_id = str(item.get("id", ""))
        if not request_id or request_id in self._items:
            return
        self._items[request_id] = item
        self._show_next()
        self._update_position()
        self.changed.emit()

    def replace_all(self, items: list[dict]) -> None:
        """After a reconnect: the agent's pending list is the truth."""
        wanted = {str(i.get("id", "")): i for i in items if isinstance(i, dict) and i.get("id")}
        for request_id in [rid for rid in self._items if rid not in wanted]:
            self.resolved(request_id)
        for item in wanted.values():
            self.add(item)
        self.changed.emit()

    def resolved(self, request_id: str) -> None:
        """The request was decided elsewhere (terminal, timeout): forget it and close its dialog."""
        if self._items.pop(request_id, None) is None:
            return
        if request_id == self.current_id:
            dialog = self.current_dialog
            self.current_id, self.current_dialog = None, None
            if dialog is not None:
                dialog.dismiss()
            self._show_next()
        self._update_position()
        self.changed.emit()

    def raise_current(self) -> None:
        if self.current_dialog is not None:
            self.current_dialog.show_on_top()

    def clear(self) -> None:
        for request_id in list(self._items):
            self.resolved(request_id)

    def _show_next(self) -> None:
        if self.current_id is not None or not self._items:
            return
        request_id, item = next(iter(self._items.items()))
        self.current_id = request_id
        self.current_dialog = None
        dialog = ConsentDialog.ask(item, lambda decision, rid=request_id: self._on_decided(rid, decision))
        if self.current_id == request_id:   # the seam may already have answered
            self.current_dialog = dialog

    def _on_decided(self, request_id: str, decision: str) -> None:
        if request_id != self.current_id:
            return
        self._items.pop(request_id, None)
        dialog = self.current_dialog
        self.current_id, self.current_dialog = None, None
        grant = dialog.grant if dialog is not None and decision == ALLOW else None
        if decision in (ALLOW, DENY):
            self.decisionMade.emit(request_id, decision, grant)
        self._show_next()
        self._update_position()
        self.changed.emit()

    def _update_position(self) -> None:
        if self.current_dialog is not None:
            self.current_dialog.set_queue_position(1, len(self._items))
