"""The tray on a real X display (Xvfb) with a real system tray (trayer) and a real agent.

These check what only a desktop can show: that trayer really embeds our icon,
that the icon changes when a request arrives, that a request raises a window
titled "Chaperone…", and that the tray stops the agent it started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from agent.api.client import AgentClient
from agent.errors import AgentUnavailable
from tests.fixtures.display import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WM_CLASS = "chaperone-tray"
CONSENT_TITLE = "Chaperone — a technician asks to connect"
REQUEST = {"technician": "Ada Lovelace", "email": "ada@example.com", "org": "Acme", "ticket": "T-1",
           "reason": "printer", "duration_s": 600, "watch": []}


@pytest.fixture
def start_tray(xdisplay, home):
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "ui.app", "--home", str(home.path), *args],
                                cwd=ROOT, env={**xdisplay.env, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def icon_pixels(xdisplay, tmp_path: Path, name: str) -> QImage:
    x, y, w, h = xdisplay.tray_panel()
    shot = xdisplay.screenshot(tmp_path / f"{name}.png", crop=f"{w}x{h}+{x}+{y}")
    image = QImage(str(shot))
    assert not image.isNull()
    return image


def count(image: QImage, predicate) -> int:
    return sum(1 for px in range(image.width()) for py in range(image.height())
               if predicate(image.pixelColor(px, py)))


def is_amber(c) -> bool:       # the consent icon's fill, #f4b400
    return c.red() > 200 and 140 < c.green() < 215 and c.blue() < 80


def is_slate(c) -> bool:       # the idle icon's outline, #3b4a5a
    return abs(c.red() - 0x3b) < 40 and abs(c.green() - 0x4a) < 40 and abs(c.blue() - 0x5a) < 40


def consent_windows(xdisplay) -> list[str]:
    names = []
    for wid in xdisplay.search("--onlyvisible", "--name", "^Chaperone"):
        names.append(xdisplay.run("xdotool", "getwindowname", wid).stdout.strip())
    return [n for n in names if n == CONSENT_TITLE]


def test_icon_is_embedded_and_a_request_raises_the_consent_window(xdisplay, agent, start_tray, tmp_path):
    tray = start_tray("--no-start-agent")
    assert wait_for(lambda: xdisplay.embedded_in_tray(WM_CLASS), 20), xdisplay.tree()
    assert wait_for(lambda: count(icon_pixels(xdisplay, tmp_path, "idle"), is_slate) > 20, 10)
    assert count(icon_pixels(xdisplay, tmp_path, "idle"), is_amber) == 0

    agent.call("request", request=REQUEST)
    assert wait_for(lambda: consent_windows(xdisplay), 20) == [CONSENT_TITLE]
    # The tray icon changed shape and colour: the consent bubble is amber.
    assert wait_for(lambda: count(icon_pixels(xdisplay, tmp_path, "consent"), is_amber) > 30, 10)
    assert tray.poll() is None


def test_a_second_start_hands_its_file_to_the_first(xdisplay, agent, start_tray, tmp_path):
    start_tray("--no-start-agent")
    assert wait_for(lambda: xdisplay.embedded_in_tray(WM_CLASS), 20)
    request_file = tmp_path / "request.chaperone"
    made = agent.cli("request", "--technician", "Ada", "--org", "Acme", "--ticket", "T-9", "--reason", "fix it",
                     "-o", str(request_file))
    assert made.returncode == 0, made.stderr
    second = start_tray("--no-start-agent", str(request_file))
    assert second.wait(20) == 0                # forwarded to the first tray, and gone
    assert wait_for(lambda: [p["ticket"] for p in agent.call("pending")], 20) == ["T-9"]
    assert wait_for(lambda: consent_windows(xdisplay), 20) == [CONSENT_TITLE]


def test_starts_its_own_agent_and_stops_it_on_quit(xdisplay, home, start_tray):
    tray = start_tray(env={"CHAPERONE_CAPTURE": "off"})
    assert wait_for(lambda: xdisplay.embedded_in_tray(WM_CLASS), 20)

    def agent_pid():
        try:
            return AgentClient(home).call("ping")["pid"]
        except AgentUnavailable:
            return None

    pid = wait_for(agent_pid, 30)
    assert pid
    tray.send_signal(signal.SIGTERM)
    assert tray.wait(30) == 0, tray.stdout.read()
    with pytest.raises(AgentUnavailable):
        AgentClient(home).call("ping")
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
