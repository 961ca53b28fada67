"""One agent per home: an exclusive lock on ``home/agent.lock`` holding the pid."""

from __future__ import annotations

import fcntl
import os

from agent.errors import AlreadyRunning
from agent.home import Home


class AgentLock:
    """Held for the agent's lifetime; the kernel releases it if the process dies."""

    def __init__(self, home: Home):
        self.path = home.lock_path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"An agent is already running for {self.path.parent} (pid {pid}); "
                "stop it first or pass another --home."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> AgentLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
