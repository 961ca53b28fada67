"""The consent dialog: both decisions, every way to refuse, and hostile requests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from tests.ui.conftest import pending_item
from ui.consent import ALLOW, DENY, TIMEOUT, ConsentDialog, ConsentQueue


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def dialog(qtbot, make_item):
    def build(item=None, **kwargs):
        kwargs.setdefault("allow_delay_ms", 0)
        d = ConsentDialog(item or make_item(), **kwargs)
        qtbot.addWidget(d)
        d.show_on_top()
        qtbot.waitExposed(d)
        return d

    return build


def test_title_starts_with_chaperone_and_stays_on_top(dialog):
    d = dialog()
    assert d.windowTitle().startswith("Chaperone")
    assert d.windowFlags() & Qt.WindowType.WindowStaysOnTopHint


def test_allow_click_decides_allow(qtbot, dialog):
    d = dialog()
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.mouseClick(d.allow_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [d.request_id, ALLOW]
    assert not d.isVisible()


def test_deny_click_decides_deny(qtbot, dialog):
    d = dialog()
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.mouseClick(d.deny_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [d.request_id, DENY]


@pytest.mark.parametrize("key, decision", [(Qt.Key.Key_A, ALLOW), (Qt.Key.Key_D, DENY)])
def test_mnemonics_alt_a_and_alt_d(qtbot, dialog, key, decision):
    d = dialog()
    assert d.allow_button.text() == "&Allow" and d.deny_button.text() == "&Deny"
    d.activateWindow()
    qtbot.waitUntil(d.isActiveWindow)   # mnemonics, like every shortcut, go to the active window
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.keyClick(d, key, Qt.KeyboardModifier.AltModifier)
    assert blocker.args[1] == decision


def test_escape_denies(qtbot, dialog):
    d = dialog()
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.keyClick(d, Qt.Key.Key_Escape)
    assert blocker.args[1] == DENY


def test_enter_hits_the_default_button_which_is_deny(qtbot, dialog):
    d = dialog()
    assert d.deny_button.isDefault() and not d.allow_button.isDefault()
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.keyClick(d, Qt.Key.Key_Return)
    assert blocker.args[1] == DENY


def test_closing_the_window_denies(qtbot, dialog):
    d = dialog()
    with qtbot.waitSignal(d.decided) as blocker:
        d.close()
    assert blocker.args[1] == DENY


def test_countdown_runs_out_as_a_timeout_not_a_click(qtbot, dialog, clock, make_item):
    d = dialog(make_item(expires_at=rfc3339(clock.now + 90)), clock=clock)
    assert "1:30" in d.countdown_label.text()
    clock.advance(45)
    d.tick()
    assert "0:45" in d.countdown_label.text()
    clock.advance(45)
    with qtbot.waitSignal(d.decided) as blocker:
        d.tick()
    assert blocker.args[1] == TIMEOUT
    assert not d.isVisible()


def test_countdown_timer_closes_the_dialog_by_itself(qtbot, dialog, make_item):
    import time

    d = dialog(make_item(expires_at=rfc3339(time.time() + 0.3)))
    with qtbot.waitSignal(d.decided, timeout=5000) as blocker:
        pass
    assert blocker.args[1] == TIMEOUT


def test_allow_does_nothing_until_the_safety_pause_is_over(qtbot, dialog):
    d = dialog(allow_delay_ms=300)
    assert not d.allow_button.isEnabled()
    d.accept()                      # what Alt+A or a stray click would reach
    assert d.decision is None and d.isVisible()
    qtbot.waitUntil(d.allow_button.isEnabled)
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.mouseClick(d.allow_button, Qt.MouseButton.LeftButton)
    assert blocker.args[1] == ALLOW


def test_decides_only_once(qtbot, dialog):
    d = dialog()
    decisions = []
    d.decided.connect(lambda _rid, decision: decisions.append(decision))
    d.reject()
    d.accept()
    d.close()
    assert decisions == [DENY]


def test_verified_request_shows_key_and_calm_banner(dialog):
    d = dialog()
    assert d.banner.level == "ok"
    assert d.identity_label.text().startswith("Verified")
    assert d.fingerprint_label.text() == "SHA256:m1VfpELUJe5WVmMg1sNnkRQRxi/0GxMwtG8HD8XnFDE"
    assert d.ticket_label.text() == "T-1234"
    assert "Ada Lovelace" in d.technician_label.text() and "Acme Support" in d.org_label.text()
    assert d.duration_choice.currentText() == "30 minutes (as asked)"
    assert [b.text() for b in d.capability_boxes.values()] == ["Files: read and change files (SFTP)",
                                                                "Shell: run programs and commands"]
    assert all(b.isChecked() for b in d.capability_boxes.values())
    assert "/etc" in d.watch_box.toPlainText()
    recorded = d.recorded_box.toPlainText()
    assert "every file changed under /home/customer, /etc" in recorded and "every program the technician runs" \
        in recorded and "every way back in" in recorded


def test_unverified_request_carries_a_warning(dialog, make_item):
    item = make_item(verified=False, verification={"verified": False, "principal": None, "fingerprint": None,
                                                   "detail": "NOT VERIFIED: the request is not signed."})
    d = dialog(item)
    assert d.banner.level == "danger" and "NOT VERIFIED" in d.banner.text()
    assert d.identity_label.text().startswith("NOT VERIFIED")
    assert d.fingerprint_label.text() == "no signing key"


def test_flagged_request_carries_a_warning_even_when_verified(dialog, make_item):
    d = dialog(make_item(flags=["the ticket was used before"]))
    assert d.banner.level == "warning"
    assert "the ticket was used before" in d.flags_label.text()


def test_long_reason_scrolls_instead_of_growing_the_window(dialog, make_item):
    reason = ("Please let me in to fix the printer. " * 300)[:10_000]
    d = dialog(make_item(reason=reason))
    assert d.reason_box.toPlainText() == reason
    assert d.height() < 800 and d.width() <= 720
    assert d.reason_box.verticalScrollBar().maximum() > 0


def test_hostile_text_is_escaped_and_never_rich_text(dialog, make_item):
    item = make_item(
        technician="Ada\u202eelgooG",                        # right-to-left override
        org="<b>Microsoft</b> <a href='http://x'>Support</a>",
        ticket="T-1\x1b[31m\nrm -rf /",                       # terminal escape and newline
        reason="שלום \u2067hidden\u2069 and a bell \x07",
        verified=False,
    )
    d = dialog(item)
    for label in d.findChildren(QLabel):
        assert label.textFormat() == Qt.TextFormat.PlainText, label.objectName()
    visible = "\n".join(label.text() for label in d.findChildren(QLabel)) + d.reason_box.toPlainText()
    for raw in ("\u202e", "\x1b", "\u2067", "\u2069", "\x07"):
        assert raw not in visible
    assert "Ada\\u202eelgooG" in d.technician_label.text()
    assert "<b>Microsoft</b>" in d.org_label.text()        # shown literally, not bold
    assert "\\x1b" in d.ticket_label.text() and "\\x0a" in d.ticket_label.text()
    assert "unusual characters" in d.flags_label.text()


class TestQueue:
    @pytest.fixture
    def asked(self, monkeypatch):
        """Replace the dialog with the ask() seam: record what would be asked; answer by hand."""
        calls = []

        def ask(item, on_decided, parent=None):
            calls.append((item["id"], on_decided))
            return None

        monkeypatch.setattr(ConsentDialog, "ask", staticmethod(ask))
        return calls

    def test_requests_are_asked_one_at_a_time_oldest_first(self, qtbot, asked):
        queue = ConsentQueue()
        items = [pending_item() for _ in range(3)]
        for item in items:
            queue.add(item)
        assert [rid for rid, _ in asked] == [items[0]["id"]]
        with qtbot.waitSignal(queue.decisionMade) as blocker:
            asked[0][1](DENY)
        assert blocker.args == [items[0]["id"], DENY, None]
        assert [rid for rid, _ in asked] == [items[0]["id"], items[1]["id"]]
        assert len(queue) == 2

    def test_duplicate_events_do_not_ask_twice(self, asked):
        queue = ConsentQueue()
        item = pending_item()
        queue.add(item)
        queue.add(dict(item))
        assert len(asked) == 1 and len(queue) == 1

    def test_a_timeout_moves_on_without_sending_a_decision(self, qtbot, asked):
        queue = ConsentQueue()
        first, second = pending_item(), pending_item()
        queue.add(first)
        queue.add(second)
        with qtbot.assertNotEmitted(queue.decisionMade):
            asked[0][1](TIMEOUT)
        assert asked[-1][0] == second["id"]

    def test_an_already_expired_request_does_not_block_the_queue(self, qtbot):
        queue = ConsentQueue()
        expired, fresh = pending_item(expires_at="2000-01-01T00:00:00Z"), pending_item()
        queue.add(expired)
        queue.add(fresh)
        with qtbot.assertNotEmitted(queue.decisionMade):
            qtbot.waitUntil(lambda: queue.current_id == fresh["id"], timeout=5000)
        assert queue.ids() == [fresh["id"]]
        queue.clear()

    def test_decided_elsewhere_closes_the_current_dialog(self, qtbot):
        queue = ConsentQueue()
        first, second = pending_item(), pending_item()
        queue.add(first)
        queue.add(second)
        dialog = queue.current_dialog
        qtbot.waitExposed(dialog)
        assert "Request 1 of 2" in dialog.queue_label.text()
        queue.resolved(first["id"])
        qtbot.waitUntil(lambda: queue.current_id == second["id"])
        assert queue.current_dialog is not dialog and queue.current_dialog.isVisible()
        queue.clear()
        assert len(queue) == 0 and queue.current_dialog is None

    def test_replace_all_keeps_the_agents_list(self, asked):
        queue = ConsentQueue()
        stale, kept, new = pending_item(), pending_item(), pending_item()
        queue.add(stale)
        queue.add(kept)
        queue.replace_all([kept, new])
        assert queue.ids() == [kept["id"], new["id"]]
        assert asked[-1][0] == kept["id"]


def test_the_customer_can_allow_less_than_was_asked(qtbot, dialog, make_item):
    d = dialog(make_item(capabilities=["files", "shell", "admin"], duration_s=7200))
    assert d.grant is None and d.allow_button.text() == "&Allow"
    d.capability_boxes["admin"].setChecked(False)
    d.capability_boxes["shell"].setChecked(False)
    d.duration_choice.setCurrentIndex(d.duration_choice.findData(30 * 60))
    assert d.grant == {"only": ["files"], "for_s": 1800} and d.allow_button.text() == "&Allow less"
    assert [d.duration_choice.itemData(i) for i in range(d.duration_choice.count())] == [
        7200, 600, 900, 1800, 3600]  # as asked, or shorter: never longer
    with qtbot.waitSignal(d.decided) as blocker:
        qtbot.mouseClick(d.allow_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [d.request_id, ALLOW] and d.grant == {"only": ["files"], "for_s": 1800}


def test_allow_needs_files_or_shell(dialog, make_item):
    d = dialog(make_item(capabilities=["files", "shell", "admin"]))
    for name in ("files", "shell"):
        d.capability_boxes[name].setChecked(False)
    assert not d.allow_button.isEnabled()  # admin alone lets no one in
    d.capability_boxes["shell"].setChecked(True)
    assert d.allow_button.isEnabled()


def test_the_queue_sends_the_grant_with_the_decision(qtbot, make_item):
    queue = ConsentQueue()
    item = make_item(capabilities=["files", "shell"])
    queue.add(item)
    dialog = queue.current_dialog
    qtbot.addWidget(dialog)
    dialog.capability_boxes["shell"].setChecked(False)
    qtbot.waitUntil(dialog.allow_button.isEnabled)  # after the pause that stops stray clicks
    with qtbot.waitSignal(queue.decisionMade) as blocker:
        qtbot.mouseClick(dialog.allow_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [item["id"], ALLOW, {"only": ["files"]}]


def test_without_an_ssh_login_the_dialog_says_everything_is_recorded(dialog, make_item):
    ssh_dialog = dialog(make_item(source="ssh"))
    assert "Your own programs are counted by name only" in ssh_dialog.recorded_box.toPlainText()
    file_dialog = dialog(make_item(source="file"))
    assert "every program that runs is recorded, yours included" in file_dialog.recorded_box.toPlainText()
