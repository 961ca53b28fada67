"""When recording stops, the technician's access stops: the session manager's side of failing closed.

The service's watchdog (``agent.service.watchdog``) calls, on the loop:

- ``tick()`` at every heartbeat: a live session whose journal cannot be
  written (``journal.failing``: a full disk, a read-only or failing one) or
  whose capture lost a thread (``capture.dead_workers()``) fails closed; and
  every few seconds ``access.json`` is brought up to date for the guard;
- ``note_gap(since, until)`` when the agent itself was stalled (stopped,
  hung) and runs again: a ``gap`` record (with the guard's report when it
  ended the technician's access meanwhile), then capture's rescan after the
  gap;
- ``guard_lost(detail)`` when the guard died or stopped answering: an
  ``alarm``, and the session fails closed (someone is taking the watchdog
  away).

Failing closed (``fail``): the technician's processes are ended at once
(``end_access``, handed down by the service: the same code the guard runs),
a ``fail-closed`` record says why, and the session ends (reason
``fail-closed``) so that no new login is let in. With a full disk the
records of all this are held in memory by the journal; the seal waits until
the disk takes them (or the agent stops: then they are lost, and the next
start's recovery seals what is on disk).

After a restart, ``after_restart`` ends what is left of the technician's
access (all of it when the guard was killed along with the agent), records
the gap (cause from the guard's report, else unknown) before the session
resumes, and gives a session that cannot resume its final rescan and
"after" inventory before it is sealed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import psutil

from agent.capture.inventory.summary import journal_summary
from agent.clock import rfc3339, rfc3339_from_timestamp, utc_now
from agent.errors import ChaperoneError, error_detail
from agent.home import Home
from agent.records import RecordType
from agent.session.access import read_reports, write_access
from agent.session.hooks import LoginHooks
from agent.session.lifecycle import State
from agent.session.model import Session
from agent.session.recovery import Step, gap_data

log = logging.getLogger("chaperone.session")

EndAccess = Callable[[str], dict]  # session id -> {"ended": [...], "survivors": [...], ...}
# session id -> the technician's processes as (pid, start time as psutil gives it): the agent's lineage
TechnicianProcesses = Callable[[str], list[tuple[int, float]]]
ACCESS_EVERY_S = 2.0
SEAL_RETRY_S = 0.5


class Manager(Protocol):
    """What of the SessionManager this uses (it holds us; a protocol keeps the import one-way)."""

    home: Home
    _sessions: dict[str, Session]
    _stopping: bool

    def _publish(self, name: str, data: dict) -> None: ...

    def _live(self) -> Session | None: ...

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...

    def _hooks(self, session: Session) -> LoginHooks | None: ...

    async def finish(self, session: Session, reason: str, by: dict | None) -> None: ...

    async def _seal(self, session: Session, reason: str) -> None: ...

    async def _start_capture(self, session: Session) -> None: ...


class FailClosed:
    """Held by the SessionManager (``manager.failclosed``); every method runs on the agent's loop."""

    def __init__(self, manager: Manager, end_access: EndAccess | None = None):
        self.manager = manager
        self.end_access = end_access
        # set by the service when it has a process lineage: what access.json names, detached processes too
        self.technician_processes: TechnicianProcesses | None = None
        self._failing: set[str] = set()
        self._access_due = 0.0
        self._access_busy = False
        self._access_written: dict[str, set] = {}
        self._ended: dict[str, list] = {}

    def live_id(self) -> str | None:
        live = self.manager._live()
        return live.id if live is not None else None

    # --- watching the live session ---------------------------------------------------------------
    def tick(self) -> None:
        session = self.manager._live()
        if session is None or session.id in self._failing:
            return
        failing = session.journal.failing
        if failing is not None:
            self._spawn_fail(session, "disk", f"The journal cannot be written ({failing['error']}).")
            return
        dead = self._dead_workers(session)
        if dead:
            detail = f"Capture lost its {', '.join(dead)}: from then on, what happens is not recorded."
            session.record(RecordType.CAPTURE_ERROR, {"what": "worker-died", "path": None, "error": detail})
            self._spawn_fail(session, "capture", detail)
            return
        now = time.monotonic()
        if session.state is State.ACTIVE and not self._access_busy and now >= self._access_due:
            self._access_due = now + ACCESS_EVERY_S
            self._access_busy = True
            task = self.manager._spawn(asyncio.to_thread(self._keep_access_file, session))
            task.add_done_callback(lambda _: setattr(self, "_access_busy", False))

    def guard_lost(self, detail: str) -> None:
        session = self.manager._live()
        if session is None or session.id in self._failing:
            return
        session.record(RecordType.ALARM, {"kind": "guard-lost", "tool": None, "pid": None, "process": None,
                                          "connections": [], "detail": detail})
        self._spawn_fail(session, "guard", detail)

    def guard_signalled(self, detail: str) -> None:
        """Someone tried to stop the guard (it stays): an alarm in the live session."""
        session = self.manager._live()
        if session is not None and session.id not in self._failing:
            session.record(RecordType.ALARM, {"kind": "guard-signalled", "tool": None, "pid": None, "process": None,
                                              "connections": [], "detail": detail})

    def note_gap(self, since: float, until: float, default_cause: str = "stalled", only_reports: bool = False) -> None:
        """The agent ran again after not running from ``since`` to ``until`` (Unix times). With
        ``only_reports``, a gap is recorded only if the guard left a report (it acted meanwhile)."""
        session = self.manager._live()
        if session is None:
            return
        if only_reports and not read_reports(self.manager.home.session_dir(session.id)):
            return
        gaps = self._take_reports(session, rfc3339_from_timestamp(since), rfc3339_from_timestamp(until),
                                  default_cause)
        capture = session.capture
        if capture is not None and hasattr(capture, "after_gap") and session.id not in self._failing:
            self.manager._spawn(asyncio.to_thread(capture.after_gap, gaps[-1]))

    def _dead_workers(self, session: Session) -> list[str]:
        check = getattr(session.capture, "dead_workers", None)
        if check is None:
            return []
        try:
            return list(check())
        except Exception as exc:  # noqa: BLE001 - a check that fails is itself a sign of trouble
            return [f"health check ({error_detail(exc)})"]

    def _keep_access_file(self, session: Session) -> None:
        """Write ``access.json`` when the technician's processes change (a thread): those of the agent's
        lineage (detached ones included) and those the login hooks know of (the SSH logins' trees)."""
        processes: set[tuple[int, float]] = set()
        if self.technician_processes is not None:
            try:
                processes.update(self.technician_processes(session.id))
            except Exception as exc:  # noqa: BLE001 - the lineage's failure only leaves the hooks' view
                log.warning("session %s: the lineage did not answer: %s", session.id, exc)
        hooks = self.manager._hooks(session)
        if hooks is not None:
            try:
                pids = hooks.technician_pids(session.hook_view(str(self.manager.home.path)))
            except Exception as exc:  # noqa: BLE001 - the hook's failure only leaves the last file in place
                log.warning("session %s: the technician's processes are not known: %s", session.id, exc)
                pids = set()
            for pid in pids:
                with contextlib.suppress(psutil.Error, OSError):
                    processes.add((pid, psutil.Process(pid).create_time()))
        if not processes and session.id not in self._access_written:
            return
        if self._access_written.get(session.id) == processes:
            return
        try:
            write_access(self.manager.home.session_dir(session.id), session.id, sorted(processes))
        except OSError as exc:
            log.warning("session %s: cannot write access.json: %s", session.id, exc)
            return
        self._access_written[session.id] = processes

    # --- failing closed -----------------------------------------------------------------------------
    def _spawn_fail(self, session: Session, cause: str, detail: str) -> None:
        self._failing.add(session.id)
        self.manager._spawn(self.fail(session, cause, detail))

    async def fail(self, session: Session, cause: str, detail: str) -> None:
        """End the technician's access now, record why, end the session; seal once the disk allows."""
        self._failing.add(session.id)
        log.warning("session %s fails closed (%s): %s", session.id, cause, detail)
        access: dict | None = None
        if self.end_access is not None:
            try:
                access = await asyncio.to_thread(self.end_access, session.id)
            except Exception as exc:  # noqa: BLE001 - record that ending failed; the session still ends
                access = {"error": error_detail(exc)}
        self._ended[session.id] = list((access or {}).get("ended") or [])
        session.record(RecordType.FAIL_CLOSED, {"cause": cause, "detail": detail, "access": access})
        try:
            await self.manager.finish(session, "fail-closed", None)
        except ChaperoneError as exc:  # the seal (or the history) waits for the disk
            log.warning("session %s ended; its seal waits for the disk: %s", session.id, exc)
            session.finishing = self.manager._spawn(self._seal_when_possible(session))
            await asyncio.shield(session.finishing)

    async def _seal_when_possible(self, session: Session) -> None:
        while session.journal.failing is not None and not self.manager._stopping:
            await asyncio.sleep(SEAL_RETRY_S)
        if session.capture is not None:
            with contextlib.suppress(Exception):  # already stopped, or failing: the seal matters more
                await asyncio.to_thread(session.capture.stop)
        try:
            await self.manager._seal(session, "fail-closed")
        except ChaperoneError as exc:  # stopping with a disk still full: what is on disk is sealed next start
            log.error("session %s could not be sealed (%s); the next start seals what was written", session.id, exc)
            session.journal.close()
            self.manager._sessions.pop(session.id, None)
            return
        summary = await asyncio.to_thread(journal_summary, getattr(session.journal, "path", None))
        self.manager._publish("session-sealed", {"id": session.id, "reason": "fail-closed", "summary": summary,
                                                 "disconnected": len(self._ended.get(session.id, []))})

    # --- gaps -----------------------------------------------------------------------------------------
    def _take_reports(self, session: Session, since: str | None, until: str, default_cause: str,
                      access: dict | None = None) -> list[dict]:
        """One ``gap`` record per guard report (or one of our own, with ``access`` if we ended it); the
        reports are then removed."""
        folder = self.manager.home.session_dir(session.id)
        reports = read_reports(folder)
        gaps = [gap_data(report, since, until, default_cause=default_cause) for _, report in reports]
        if not gaps:
            gaps = [gap_data(None, since, until, default_cause=default_cause)]
            gaps[0]["access"] = access
        elif access and (access.get("ended") or access.get("survivors")):
            gaps[-1]["access_at_restart"] = access
        for gap in gaps:
            session.record(RecordType.GAP, gap)
        if reports:
            with contextlib.suppress(ChaperoneError):  # durable before the reports go (unless the disk is full)
                session.journal.checkpoint()
        for path, _ in reports:
            with contextlib.suppress(OSError):
                path.unlink()
        return gaps

    async def after_restart(self, session: Session, facts: dict, step: Step) -> None:
        """Before a recovered session goes on (or ends): the technician's access ended (if the guard could
        not: it was killed with the agent), the gap, and capture's last look if it cannot resume."""
        access = None
        if step in (Step.RESUME, Step.FINISH) and self.end_access is not None:
            try:
                access = await asyncio.to_thread(self.end_access, session.id)
            except Exception as exc:  # noqa: BLE001 - say so in the gap record; recovery goes on
                access = {"error": error_detail(exc)}
        self._take_reports(session, facts.get("last_ts"), rfc3339(utc_now()), "unknown", access)
        closing = step is Step.FINISH or (step is Step.SEAL_ENDED and not facts.get("after_taken"))
        if closing and facts.get("baseline"):  # capture ran before the restart: rescan and take the "after"
            await self.manager._start_capture(session)
            if step is Step.SEAL_ENDED and session.capture is not None:
                with contextlib.suppress(Exception):  # recorded by capture itself; the seal matters more
                    await asyncio.to_thread(session.capture.stop)
