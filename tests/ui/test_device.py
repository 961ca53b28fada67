"""The "This device" window against a real agent: mode, the keys to copy, the store, retention, settings."""

from __future__ import annotations

import json

import pytest
from PySide6.QtGui import QGuiApplication

from ui.bridge import AgentBridge
from ui.device import DeviceWindow


@pytest.fixture
def device_window(qtbot, home):
    (home.path / "settings.json").write_text(json.dumps({
        "publish": {"url": "s3://fleet/acme", "endpoint_url": "http://127.0.0.1:9", "retain_days": 30},
        "retention": {"keep_days": 45},
        "witness": {"witnesses": [{"url": "http://127.0.0.1:7380", "vkey": "w1+01234567+AAAA"}]}}))
    return home


def test_this_device_shows_what_to_give_the_client(qtbot, agent, device_window, device_key, home):
    bridge = AgentBridge(home)
    bridge.start()
    window = DeviceWindow(lambda on_done, on_error: bridge.call("device", on_done=on_done, on_error=on_error))
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(window.shownStatus, timeout=20_000) as shown:
            window.refresh()
        status = shown.args[0]
        assert status["fingerprint"] == device_key.fingerprint
        text = {key: label.text() for key, label in window.fields.items()}
        assert device_key.fingerprint in text["fingerprint"]
        assert text["mode"].startswith("System" if status["mode"] == "system" else "Personal")
        assert "s3://fleet/acme at http://127.0.0.1:9, kept 30 days (COMPLIANCE). 0 published, 0 waiting" \
            in text["publish"]
        assert text["retention"].startswith("45 days") and "once published" in text["retention"]
        assert str(home.settings_path) in text["settings"]
        assert "1 (http://127.0.0.1:7380); 1 must cosign" in text["witness"]
        assert window.copy_buttons["fingerprint"].isEnabled()
        with qtbot.waitSignal(window.copied, timeout=5_000):
            window.copy_buttons["fingerprint"].click()
        assert QGuiApplication.clipboard().text() == device_key.fingerprint
        assert not window.copy_buttons["ledger"].isEnabled() or status.get("ledger")
    finally:
        bridge.stop()


def test_an_agent_that_does_not_answer_is_said_in_one_sentence(qtbot):
    window = DeviceWindow(lambda on_done, on_error: on_error("No agent answers; start Chaperone."))
    qtbot.addWidget(window)
    window.refresh()
    assert window.fields["mode"].text() == "No agent answers; start Chaperone."
    assert not window.copy_buttons["fingerprint"].isEnabled()
