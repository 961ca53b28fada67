"""What the session layer is handed by the service (the composition root), as protocols.

The session manager drives capture and the hooks of login sources (SSH)
without importing them: the service builds the real ones and passes them in,
tests pass stand-ins. ``agent.capture.Capture`` and ``agent.ssh.lifecycle``
are the real implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from agent.records import Sink
from agent.redact import Redactor
from agent.settings import Settings

TechnicianPids = Callable[[], Iterable[int]]


class Recorder(Protocol):
    """One session's capture: ``prepare`` before the session is active, ``stop`` at its end."""

    def prepare(self) -> None: ...

    def stop(self) -> None: ...


class CaptureFactory(Protocol):
    """Makes one session's capture; ``redactor`` is the session's (capture feeds it the baseline's
    configuration texts and redacts diffs and command lines with it)."""

    def __call__(self, sink: Sink, watch_paths: list[str],
                 technician_pids: TechnicianPids | None, *, redactor: Redactor) -> Recorder: ...


class LoginHooks(Protocol):
    """What a login source (e.g. SSH) does for the sessions its logins asked for.

    ``session`` is the hook view: the session summary plus ``source``, ``ssh``,
    ``state`` and ``home``."""

    def technician_pids(self, session: dict) -> set[int]: ...

    def on_session_started(self, session: dict, settings: Settings,
                           emit: Callable[[str, dict], object]) -> None: ...

    def on_session_ended(self, session: dict, settings: Settings,
                         emit: Callable[[str, dict], object]) -> None: ...
