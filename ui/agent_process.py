"""The agent the tray starts for the user when none answers (the embedded default).

No Qt here: :meth:`AgentProcess.ensure_running` is called from the bridge's
subscription thread, :meth:`AgentProcess.stop` when the tray quits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading

from agent.errors import ChaperoneError
from agent.home import Home

log = logging.getLogger(__name__)


class AgentProcess:
    """Starts ``python -m agent agent --home H`` as a child and stops it on quit."""

    def __init__(self, home: Home, argv: list[str] | None = None):
        self.home = home
        self.argv = argv or [sys.executable, "-m", "agent", "agent", "--home", str(home.path)]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self.starts = 0

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure_running(self) -> None:
        """Start the agent unless our child is still running.

        Raises ``ChaperoneError`` with the agent's own last error sentence when
        the previous child exited with an error, so the tray can say why.
        """
        with self._lock:
            if self.running():
                return
            failure = self._last_failure()
            self._start()
        if failure:
            raise ChaperoneError(f"The Chaperone agent stopped with an error: {failure} Starting it again.")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask our agent to stop (SIGTERM, so it seals what is open), then kill it if it hangs."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("the agent (pid %d) did not stop within %.0f s; killing it", proc.pid, timeout)
                    proc.kill()
                    proc.wait()
            self._close_stderr()

    def _start(self) -> None:
        self._close_stderr()
        self.home.create()
        self._stderr = tempfile.TemporaryFile(prefix="chaperone-agent-", suffix=".err")
        env = dict(os.environ)
        env.pop("QT_QPA_PLATFORM", None)
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            start_new_session=True,   # a Ctrl+C meant for the tray does not reach the agent first
        )
        self.starts += 1
        log.info("started the Chaperone agent (pid %d) for %s", self._proc.pid, self.home.path)

    def _last_failure(self) -> str | None:
        proc = self._proc
        if proc is None or proc.returncode in (None, 0):
            return None
        text = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read()[-2000:].decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {proc.returncode}."

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
