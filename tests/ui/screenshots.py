"""Take the screenshots in docs/screenshots/ under Xvfb with trayer and a real agent.

    python -m tests.ui.screenshots [OUT_DIR]

The tray runs in this process (so the script can move it through every
state), on a fresh Xvfb display with trayer docked top right, against a real
``chaperone agent`` subprocess on a temporary home. Every picture comes from
``import -window root`` (cropped, and the tray scaled up so its icon can be seen).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.display import TRAY_HEIGHT, XDisplay, _start_xvfb, _stop, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_display() -> XDisplay:
    xvfb, name = _start_xvfb()
    env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=name, QT_QPA_PLATFORM="xcb")
    display = XDisplay(name, xvfb, env=env)
    display.trayer = subprocess.Popen(
        ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", str(TRAY_HEIGHT),
         "--transparent", "false", "--tint", "0x2b2f36", "--SetDockType", "true"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(display.tray_panel, 10):
        raise SystemExit("trayer did not start")
    os.environ.update(DISPLAY=name, QT_QPA_PLATFORM="xcb")
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return display


class Shooter:
    def __init__(self, display: XDisplay, out: Path, app):
        self.display, self.out, self.app = display, out, app

    def settle(self, seconds: float = 0.6) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.app.processEvents()
            time.sleep(0.02)

    def tray(self, name: str) -> None:
        """The top-right corner with the tray, four times larger."""
        self.settle()
        x, y, w, h = self.display.tray_panel()
        self.display.screenshot(self.out / name, crop=f"{w}x{h}+{x}+{y}", scale=400)

    def region(self, name: str, widget, margin: int = 12) -> None:
        """The part of the screen where ``widget`` is, with a margin."""
        self.settle()
        g = widget.frameGeometry()
        x, y = max(0, g.x() - margin), max(0, g.y() - margin)
        self.display.screenshot(self.out / name, crop=f"{g.width() + 2 * margin}x{g.height() + 2 * margin}+{x}+{y}")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ROOT / "docs" / "screenshots").absolute()
    out.mkdir(parents=True, exist_ok=True)
    display = start_display()
    workdir = Path(tempfile.mkdtemp(prefix="chaperone-shots-"))
    agent = None
    try:
        from PySide6.QtCore import QPoint
        from PySide6.QtWidgets import QApplication

        from agent.devicekey import DeviceKey
        from agent.home import Home
        from tests.fixtures.agent import AgentProcess
        from ui.controller import TrayApp
        from ui.notifier import NullNotifier

        home = Home(workdir / "home")
        DeviceKey.init(home)
        key = workdir / "technician"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ada@acme.example", "-f", str(key)],
                       check=True)
        public = (workdir / "technician.pub").read_text().split()
        home.trusted_technicians_path.write_text(
            f'ada@acme.example namespaces="chaperone-request" {public[0]} {public[1]}\n')
        agent = AgentProcess(home, consent_timeout=600).start()

        app = QApplication(["chaperone-tray"])
        app.setQuitOnLastWindowClosed(False)
        tray_app = TrayApp(home, start_agent=False, notifier=NullNotifier())
        shots = Shooter(display, out, app)
        tray_app.start()
        wait_for(lambda: (app.processEvents(), tray_app.bridge.is_connected)[1], 20)
        tray_app.dismiss_alarm()
        shots.tray("tray-idle.png")

        # A signed request from a trusted technician: verified.
        signed = workdir / "request.chaperone"
        made = agent.cli("request", "--technician", "Ada Lovelace", "--email", "ada@acme.example",
                         "--org", "Acme IT Support", "--ticket", "INC-20431", "--duration", "45m",
                         "--reason", "The shared printer on the second floor drops every job; I need to "
                         "reinstall its driver and check the CUPS configuration.",
                         "--watch", "/etc", "--sign-key", str(key), "-o", str(signed),
                         "--device", DeviceKey.load(home).fingerprint)
        assert made.returncode == 0, made.stderr
        tray_app.open_request_file(signed)
        wait_for(lambda: (app.processEvents(), tray_app.queue.current_dialog)[1], 20)
        dialog = tray_app.queue.current_dialog
        shots.settle(1.5)
        shots.region("consent-verified.png", dialog)
        shots.tray("tray-consent.png")
        dialog.allow_button.click()
        wait_for(lambda: (app.processEvents(), tray_app.active)[1], 20)
        tray_app.dismiss_alarm()
        shots.tray("tray-active.png")
        shots.region("session-bar.png", tray_app.bar)
        menu = tray_app.tray.menu
        menu.popup(QPoint(1280 - 230, TRAY_HEIGHT + 2))
        shots.settle(0.8)
        g = menu.geometry()
        display.screenshot(out / "tray-menu.png", crop=f"{1280 - g.x() + 12}x{g.bottom() + 12}+{g.x() - 12}+0")
        menu.hide()

        # What capture would send while the technician works.
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        items = [
            {"type": "file", "op": "modified", "path": "/etc/cups/printers.conf", "ts": now},
            {"type": "process", "op": "started", "cmdline": ["lpadmin", "-p", "floor2", "-E"], "user": "root",
             "technician": True, "ts": now},
            {"type": "file", "op": "created", "path": "/etc/cups/ppd/floor2.ppd", "ts": now},
            {"type": "file", "op": "modified", "path": "/home/customer/.ssh/authorized_keys", "secret": True,
             "ts": now},
            {"type": "inventory-change", "category": "authorized keys", "op": "added",
             "item": "ssh-ed25519 AAAAC3…x9 tech@laptop", "way_back_in": True,
             "why": "a new SSH key can log in later", "ts": now},
            {"type": "file-burst", "root": "/var/cache/cups", "counts": {"created": 214, "deleted": 12}, "ts": now},
            {"type": "process", "op": "ended", "cmdline": ["systemctl", "restart", "cups"], "user": "root",
             "technician": True, "ts": now},
            {"type": "note", "author": "ada", "text": "Driver reinstalled; test page printed.", "ts": now},
        ]
        tray_app.bridge.dispatch({"event": "activity", "data": {"items": items, "coalesced": 0}})
        tray_app.show_activity()
        window = tray_app.activity_window
        window.resize(980, 330)
        window.move(150, 120)
        shots.region("activity.png", window)
        window.hide()

        tray_app.bridge.dispatch({"event": "alarm", "data": {"tool": "AnyDesk", "process": "anydesk", "pid": 4242}})
        shots.tray("tray-alarm.png")
        tray_app.dismiss_alarm()

        # An unsigned request with hostile text: NOT VERIFIED, escaped, flagged.
        session_id = tray_app.active["id"]
        agent.call("request", request={
            "technician": "Microsoft Support \u202eetomeR\u202c", "email": "help@micros0ft-support.example",
            "org": "<b>Microsoft</b> Windows Defender", "ticket": "URGENT\x1b[31m-0001",
            "reason": "Your computer is infected!!! " * 25 + "\u2067Do not turn off your computer.\u2069",
            "duration_s": 8 * 3600, "capabilities": ["files", "shell", "admin"], "watch": []})
        wait_for(lambda: (app.processEvents(), len(tray_app.queue))[1], 20)
        dialog = tray_app.queue.current_dialog
        shots.settle(1.5)
        shots.region("consent-not-verified.png", dialog)
        dialog.reject()

        agent.call("end", id=session_id, reason="customer")
        wait_for(lambda: (app.processEvents(), tray_app.active is None)[1], 20)
        wait_for(lambda: agent.call("sessions")[0]["state"] == "sealed", 20)
        tray_app.show_history()
        history = tray_app.history_window
        history.resize(900, 520)
        history.move(150, 100)
        wait_for(lambda: (app.processEvents(), history.model.rowCount() >= 2)[1], 20)
        bundle = workdir / "INC-20431.zip"
        from ui.history import export_session

        export_session(home, session_id, bundle)
        history.verify(bundle)
        wait_for(lambda: (app.processEvents(), history.verdict.verdict_text.startswith("✔"))[1], 30)
        for row in range(history.model.rowCount()):
            if history.model.session(row)["id"] == session_id:
                history.table.selectRow(row)
        shots.region("history-verdict.png", history)

        tampered = workdir / "INC-20431-edited.zip"
        import zipfile

        with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "session.jsonl":
                    data = data.replace(b"customer", b"technician", 1)
                dst.writestr(info, data)
        history.verify(tampered)
        wait_for(lambda: (app.processEvents(), history.verdict.verdict_text.startswith("✖"))[1], 30)
        shots.region("history-not-genuine.png", history)

        tray_app.show_device()
        device = tray_app.device_window
        device.resize(760, 300)
        device.move(150, 100)
        shown: list[dict] = []
        device.shownStatus.connect(shown.append)
        device.refresh()
        wait_for(lambda: (app.processEvents(), bool(shown))[1], 20)
        shots.region("device.png", device)

        tray_app.shutdown()
        print(f"screenshots written to {out}")
        return 0
    finally:
        if agent is not None:
            agent.close()
        _stop(display.trayer)
        _stop(display.xvfb)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
