"""Starting and stopping the agent the tray owns, and the tray's own start-up errors (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from agent.errors import ChaperoneError
from ui.agent_process import AgentProcess

FAILING_AGENT = ("import sys; print('chaperone agent: The home is broken; fix it.', file=sys.stderr); "
                 "sys.exit(2)")


def test_a_failing_agent_is_reported_in_its_own_words(home):
    process = AgentProcess(home, argv=[sys.executable, "-c", FAILING_AGENT])
    process.ensure_running()
    deadline = time.monotonic() + 20
    while process.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process.running()
    with pytest.raises(ChaperoneError, match="The home is broken; fix it"):
        process.ensure_running()           # says why, and starts it again
    assert process.starts == 2
    process.stop()


def test_stop_ends_a_running_agent_and_is_idempotent(home):
    process = AgentProcess(home, argv=[sys.executable, "-c", "import time; time.sleep(60)"])
    process.ensure_running()
    process.ensure_running()               # still running: not started twice
    assert process.starts == 1 and process.running()
    process.stop(timeout=10)
    assert not process.running()
    process.stop()


def test_tray_refuses_an_unusable_home_in_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "ui.app", "--home", str(blocker / "home")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaperone-tray: ") and "Traceback" not in result.stderr
