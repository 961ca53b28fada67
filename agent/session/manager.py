"""SessionManager: requests, consent, timers, capture and the journal of each session.

It runs on the agent's asyncio loop: every state change happens on the loop
thread, so no locks guard the sessions. Slow work (capture's prepare/stop,
the login hooks) runs in threads via ``asyncio.to_thread``.

Invariants (the lifecycle's table is ``agent.session.lifecycle``):

- every step of a session is taken by ``_transition``, in one order: the
  journal record, the state (through ``advance``), the history row, the event;
- every journal is closed by ``_seal``: flush, seal, close, history, forget;
- no decision precedes a durable request (the decision waits for the
  request's checkpoint);
- no decision within ``consent_timeout`` seconds is a refusal (``expired``);
- the customer is warned 5 minutes before the limit (halfway through
  sessions shorter than 10 minutes), and the session ends at the limit;
- one session at a time: other requests wait as pending, and allowing one
  while another session is live is refused with the reason.

What the manager is handed (by the service, the composition root): the
capture factory, the login hooks per request source, the default watch paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta

from agent.capture.inventory.summary import journal_summary
from agent.clock import rfc3339, utc_now
from agent.errors import ApiError, ChaperoneError, JournalError, RequestError, error_detail
from agent.history import History
from agent.home import Home
from agent.journal import Journal
from agent.journal.writer import LineHook
from agent.records import RecordType, Sink
from agent.redact import Redactor
from agent.session.caller import Caller
from agent.session.endings import Ended, end_technician_processes, run_login_hook
from agent.session.failclosed import EndAccess, FailClosed
from agent.session.grant import Grant
from agent.session.hooks import CaptureFactory, LoginHooks, Recorder, TechnicianPids
from agent.session.intake import take_request
from agent.session.lifecycle import END_REASONS, State, advance
from agent.session.model import Session, new_session_id, warning_lead_s
from agent.session.recovery import Step, journal_facts, plan_recovery
from agent.session.request import SessionRequest, Verification, watch_flags
from agent.session.sink import Publish, SessionSink
from agent.settings import Settings
from agent.text import escape, show

log = logging.getLogger("chaperone.session")


MAX_PENDING = 16
STOP_GRACE_S = 30.0
MAX_NOTE_CHARS = 4000
#: A session journal writes a checkpoint at least this often, records or not (see agent.bundle.witnessing).
HEARTBEAT_S = 30.0


def _no_capture(sink: Sink, watch_paths: list[str], technician_pids: TechnicianPids | None, *,
                redactor: Redactor) -> Recorder:
    raise RuntimeError("no capture was given to this agent")


class SessionManager:
    def __init__(self, home: Home, device_key, *, publish: Publish, consent_timeout: float = 120.0,
                 capture_factory: CaptureFactory = _no_capture,
                 login_hooks: Mapping[str, LoginHooks] | None = None,
                 default_watch_paths: Callable[[], list[str]] = list,
                 end_technician: Callable[[str], Ended] | None = None,
                 history: History | None = None, ledger_hook: LineHook | None = None,
                 end_access: EndAccess | None = None, journal_facts: Mapping[str, object] | None = None):
        self.home = home
        self.device_key = device_key
        self.consent_timeout = consent_timeout
        self.capture_factory = capture_factory
        self.login_hooks = dict(login_hooks or {})
        self.default_watch_paths = default_watch_paths
        self.end_technician = end_technician
        self.history = history if history is not None else History(home)
        self.ledger_hook = ledger_hook  # the journals' checkpoint and seal lines go to the device ledger
        self.journal_facts = dict(journal_facts or {})  # for each journal-start: the agent's mode
        self._publish = publish
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task] = set()
        self._running_loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.failclosed = FailClosed(self, end_access)  # when recording stops (agent/session/failclosed.py)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """The agent's loop, known once ``start`` ran."""
        if self._running_loop is None:
            raise RuntimeError("SessionManager.start() was not called")
        return self._running_loop

    # --- queries -------------------------------------------------------------------
    def _live(self) -> Session | None:
        return next((s for s in self._sessions.values() if s.state in (State.ALLOWED, State.ACTIVE)), None)

    def session_live(self) -> bool:
        """Whether a session is allowed or active; safe to call from any thread."""
        return any(s.state in (State.ALLOWED, State.ACTIVE) for s in list(self._sessions.values()))

    def _pending(self) -> list[Session]:
        return [s for s in self._sessions.values() if s.state is State.REQUESTED]

    def source_of(self, sid: str) -> str | None:
        """Where a live session's request came from (``cli``, ``file``, ``ssh``), or None."""
        session = self._sessions.get(sid)
        return session.source if session is not None else None

    def status(self) -> dict:
        live, pending = self._live(), self._pending()
        state = "active" if live else "pending" if pending else "idle"
        return {"state": state, "session": live.id if live else None,
                "active": live.summary() if live else None, "pending": len(pending)}

    def pending(self) -> list[dict]:
        return [s.pending_item() for s in self._pending()]

    def sessions(self) -> list[dict]:
        return self.history.list()

    # --- the two steps every session takes ------------------------------------------------
    def _transition(self, session: Session, to: State, record: tuple[str, dict], *,
                    history: dict | None = None, event: tuple[str, dict] | None = None,
                    checkpoint: bool = False) -> None:
        """One step of the lifecycle: the journal record, the state, the history row, the event."""
        session.record(*record)
        if checkpoint:
            session.journal.checkpoint()
        session.state = advance(session.state, to)
        self.history.upsert(session.id, state=to.value, **(history or {}))
        if to in (State.ALLOWED, State.REFUSED, State.EXPIRED):
            session.decided.set()
        if to in (State.ACTIVE, State.REFUSED, State.EXPIRED, State.ENDED):
            session.settled.set()
        if event is not None:
            self._publish(*event)

    async def _seal(self, session: Session, reason: str) -> None:
        """The end of every journal: flush, seal, close, the history row, forget the session."""
        if session.sink is not None:
            session.sink.flush()
        await asyncio.to_thread(session.journal.seal, {"reason": reason})
        session.journal.close()
        if session.state is State.ENDED:
            session.state = advance(session.state, State.SEALED)
            self.history.upsert(session.id, state=State.SEALED.value, sealed=True)
        else:
            self.history.upsert(session.id, sealed=True)
        self._sessions.pop(session.id, None)

    # --- requests ---------------------------------------------------------------------
    async def submit(self, *, fields=None, request_file=None, source: str = "cli",
                     caller: Caller | None = None) -> dict:
        """A new request: journal it, then either refuse it by policy or hold it for a decision."""
        if self._stopping:
            raise ApiError("unavailable", "The agent is stopping; try again when it is back.")
        now = utc_now()
        request, verification, digest = take_request(fields, request_file, source, now,
                                                     device=self.device_key.fingerprint,
                                                     trusted=self.home.trusted_technicians_path)
        if len(self._pending()) >= MAX_PENDING:
            raise ApiError(
                "unavailable", f"{MAX_PENDING} requests are already waiting for a decision; try again later."
            )
        try:
            settings = self.home.settings()
        except ChaperoneError as exc:
            raise ApiError("unavailable", str(exc)) from None
        if not request.watch:
            request = replace(request, watch=tuple(self.default_watch_paths()))
        if source != "ssh" and request.ssh is not None:
            request = replace(request, ssh=None)  # only ssh-authorize speaks for an SSH login
        flags = request.text_flags() + watch_flags(request.watch)
        if source == "file" and not verification.verified:
            flags.append("the request file's signer is not trusted")

        sid = new_session_id(now, lambda i: i in self._sessions or self.home.session_dir(i).exists())
        if digest is not None:
            used_by = await asyncio.to_thread(self.history.claim_request_file, digest, sid, rfc3339(now),
                                              request.expires)
            if used_by is not None:
                raise ApiError("conflict", f"This request file was already used (for {used_by}); a request file "
                                           "opens one session only, so ask the technician for a new one.")
        journal = await asyncio.to_thread(self._create_journal, sid)
        expires = now + timedelta(seconds=self.consent_timeout)
        session = Session(id=sid, request=request, source=source, verification=verification, flags=flags,
                          journal=journal, state=State.REQUESTED, requested=rfc3339(now),
                          expires_at=rfc3339(expires))
        data = {**request.fields(), "source": source, "verification": verification.to_dict(), "flags": flags,
                "requested_by": caller.who() if caller else None}
        for transient in ("created", "expires"):
            data.pop(transient, None)
        # Written now, synced (with a checkpoint) just after the customer is told: the
        # decision waits for that, so no decision ever precedes a durable request.
        journal.append(RecordType.REQUEST, data, sync=False)
        self._sessions[sid] = session
        refuse = settings.consent.require_verified and not verification.verified
        if not refuse:
            session.timers.append(
                self._loop.call_later(self.consent_timeout, lambda: self._spawn(self._expire(session)))
            )
            self._publish("consent-needed", session.pending_item())
        session.recorded = self._spawn(asyncio.to_thread(self._record_request, session))
        try:
            await session.recorded
        except ChaperoneError:  # the disk refused it: withdraw the request, say why
            session.cancel_timers()
            self._sessions.pop(sid, None)
            self._publish("consent-decided", {"id": sid, "state": "expired"})
            raise
        if refuse:
            await self._refuse(session, State.REFUSED, "policy", None,
                               f"This computer accepts only verified requests, and this one is "
                               f"{verification.detail}")
        return {"id": sid, "verification": verification.to_dict(), "flags": flags, "state": session.state.value,
                "expires_at": session.expires_at}

    def _record_request(self, session: Session) -> None:
        """Make the request durable (checkpoint) and add it to the history; runs in a thread."""
        session.journal.checkpoint()
        r, v = session.request, session.verification
        self.history.upsert(
            session.id, state="requested", technician=r.technician, email=r.email, org=r.org, ticket=r.ticket,
            reason=r.reason, duration_s=r.duration_s, capabilities=list(r.capabilities), watch=list(r.watch),
            verified=v.verified, signer=v.principal if v.verified else None, key_fingerprint=v.fingerprint,
            flags=session.flags, requested=session.requested, journal=str(session.journal.path),
        )

    def _create_journal(self, sid: str) -> Journal:
        path = self.home.journal_path(sid)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Journal.create(path, sid, self.device_key, on_line=self.ledger_hook, heartbeat=HEARTBEAT_S,
                              facts=self.journal_facts)

    # --- decisions ------------------------------------------------------------------------
    def _decidable(self, sid: str) -> Session:
        session = self._sessions.get(sid)
        if session is None:
            past = self.history.get(sid) if isinstance(sid, str) else None
            if past:
                raise ApiError("conflict", f"Request {escape(sid)} was already decided (it is {past['state']}).")
            raise ApiError("not-found", f"There is no request {escape(str(sid))[:40]}; see 'chaperone pending'.")
        if session.state is not State.REQUESTED:
            raise ApiError("conflict", f"Request {sid} was already decided (it is {session.state.value}).")
        return session

    async def decide(self, sid, decision: str, how: str, caller: Caller, *,
                     only: list[str] | None = None, for_s: int | None = None) -> dict:
        """The customer's decision; ``only`` grants a subset of the capabilities asked for, ``for_s`` a
        shorter time. Refuses (forbidden) any caller the service did not establish as the customer."""
        if caller.role != "customer":
            raise ApiError("forbidden", "Only the customer at this computer may allow or refuse a session.")
        if decision not in ("allow", "deny"):
            raise ApiError("bad-request", "The decision must be \"allow\" or \"deny\".")
        if how not in ("click", "terminal"):
            raise ApiError("bad-request", "How the customer decided must be \"click\" or \"terminal\".")
        if self._stopping:
            raise ApiError("unavailable", "The agent is stopping; decide when it is back.")
        session = self._decidable(sid)
        if session.recorded is not None:
            await asyncio.shield(session.recorded)
            session = self._decidable(sid)  # still undecided after the wait?
        if decision == "deny":
            await self._refuse(session, State.REFUSED, how, caller.provenance(), "The customer refused.")
            return {"id": sid, "state": session.state.value}
        grant = self._grant(session.request, only, for_s)
        live = self._live()
        if live is not None:
            raise ApiError("conflict", f"Session {live.id} is still running; end it before allowing another.")
        self._allow(session, how, caller.provenance(), grant)
        return {"id": sid, "state": session.state.value}

    @staticmethod
    def _grant(request: SessionRequest, only: list[str] | None, for_s: int | None) -> Grant:
        """What the customer grants: all that was asked, or less (never more)."""
        try:
            return Grant.of(request, only, for_s)
        except RequestError as exc:
            raise ApiError("bad-request", str(exc)) from None

    def _allow(self, session: Session, how: str, by: dict, grant: Grant) -> None:
        r = session.request
        now = utc_now()
        session.cancel_timers()
        session.grant = grant
        session.until = now + timedelta(seconds=grant.duration_s)
        granted = {"capabilities": list(grant.capabilities), "watch": list(r.watch), "until": rfc3339(session.until)}
        reason = ("The customer allowed the session." if grant.is_all(r)
                  else f"The customer allowed less than was asked: {grant.describe(r)}.")
        self._transition(
            session, State.ALLOWED,
            (RecordType.DECISION, {"decision": "allow", "how": how, "by": by, "granted": granted,
                                   "reason": reason}),
            checkpoint=True,
            history={"decided": rfc3339(now), "decided_by": by, "how": how, "until": granted["until"],
                     "granted": list(grant.capabilities)},
            event=("consent-decided", {"id": session.id, "state": "allowed"}),
        )
        session.sink = SessionSink(session.journal, self._loop, self._publish, self.home.session_dir(session.id),
                                   redactor=session.redactor)
        session.activation = self._spawn(self._activate(session))

    async def _refuse(self, session: Session, state: State, how: str, by: dict | None, reason: str) -> None:
        session.cancel_timers()
        self._transition(
            session, state,
            (RecordType.DECISION, {"decision": "deny", "how": how, "by": by, "granted": None, "reason": reason}),
            history={"decided": rfc3339(utc_now()), "decided_by": by, "how": how},
            event=("consent-decided", {"id": session.id, "state": state.value}),
        )
        await self._seal(session, state.value)

    async def _expire(self, session: Session, reason: str = "Nobody answered in time; no answer is a refusal.",
                      how: str = "timeout") -> None:
        if session.recorded is not None:
            await asyncio.shield(session.recorded)
        if session.state is State.REQUESTED:
            await self._refuse(session, State.EXPIRED, how, None, reason)

    async def wait(self, sid, timeout, until: str = "decided") -> dict:
        """The request's state once decided (``until="decided"``), or once it records or never will
        (``until="active"``: what a login waits for before it is let in), or after ``timeout`` seconds."""
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 <= timeout <= 86400:
            raise ApiError("bad-request", "The wait timeout must be between 0 and 86400 seconds.")
        if until not in ("decided", "active"):
            raise ApiError("bad-request", "Wait until \"decided\" or \"active\".")
        session = self._sessions.get(sid) if isinstance(sid, str) else None
        if session is None:
            past = self.history.get(sid) if isinstance(sid, str) else None
            if not past:
                raise ApiError("not-found", f"There is no request {escape(str(sid))[:40]}.")
            return {"id": sid, "state": past["state"]}
        event = session.decided if until == "decided" else session.settled
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        return {"id": sid, "state": session.state.value}

    # --- running sessions -----------------------------------------------------------------
    async def _activate(self, session: Session, resumed: bool = False, warned: bool = False) -> None:
        """Start capture off the loop, then mark the session active and arm its timers."""
        await self._start_capture(session)
        if session.state is not State.ALLOWED and not resumed:
            return  # ended while capture was starting
        assert session.until is not None and session.sink is not None
        if not resumed:
            session.started = rfc3339(utc_now())
            self._transition(
                session, State.ACTIVE,
                (RecordType.SESSION_START, {"until": rfc3339(session.until),
                                            "capabilities": list(session.capabilities),
                                            "watch": list(session.request.watch)}),
                history={"started": session.started},
            )
        # What the grant gives at the door beyond the key (sudo for admin) is in place before anyone is let in.
        await self._run_login_hook(session, "on_session_started")
        session.settled.set()  # also for a session resumed after a restart: it records again
        self._arm_timers(session, warned)
        self._publish("session-started", session.summary())

    def _hooks(self, session: Session) -> LoginHooks | None:
        return self.login_hooks.get(session.source)

    async def _start_capture(self, session: Session) -> None:
        hooks = self._hooks(session)
        assert session.sink is not None
        pids = (lambda: hooks.technician_pids(session.hook_view(str(self.home.path)))) if hooks else None
        try:
            capture = self.capture_factory(session.sink, list(session.request.watch), pids,
                                           redactor=session.redactor)
            session.capture = capture
            await asyncio.to_thread(capture.prepare)
        except Exception as exc:  # noqa: BLE001 - whatever capture raises, the session must still be recorded
            log.warning("capture did not start for %s: %s", session.id, exc)
            session.record(RecordType.CAPTURE_ERROR, {"what": "capture", "path": None, "error": error_detail(exc)})

    def _arm_timers(self, session: Session, warned: bool = False) -> None:
        assert session.until is not None
        remaining = (session.until - utc_now()).total_seconds()
        lead = warning_lead_s(session.request.duration_s)
        if remaining > lead:
            session.timers.append(self._loop.call_later(remaining - lead, self._warn, session))
        elif not warned:  # resumed after the warning was due: warn now
            session.timers.append(self._loop.call_later(0, self._warn, session))
        session.timers.append(self._loop.call_later(
            max(0.0, remaining), lambda: self._spawn(self.finish(session, "time-limit", None))
        ))

    def _warn(self, session: Session) -> None:
        if session.state is not State.ACTIVE or session.until is None:
            return
        remaining = max(0, round((session.until - utc_now()).total_seconds()))
        session.record(RecordType.TIME_WARNING, {"remaining_s": remaining})
        self._publish("time-warning", {"id": session.id, "remaining_s": remaining})

    def note(self, sid, text, caller: Caller) -> dict:
        session = self._target(sid, "add a note to")
        if not isinstance(text, str) or not text.strip():
            raise ApiError("bad-request", "The note is empty; give its text.")
        if len(text) > MAX_NOTE_CHARS:
            raise ApiError("bad-request", f"The note is {len(text)} characters long; the limit is {MAX_NOTE_CHARS}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError("bad-request", "The note is not valid text (it holds a lone surrogate).") from None
        note = session.redactor.redact_note(text)  # the technician is told that something was hidden
        data = {"author": caller.user, "uid": caller.uid, "role": caller.role, "text": note.text}
        if note.hidden:
            data["hidden"] = note.hidden
        flag = show(note.text).flag("the note")
        if flag:
            data["flags"] = [flag]
        return {"id": session.id, "seq": session.record(RecordType.NOTE, data), "hidden": note.hidden}

    def record_alarm(self, data: dict) -> bool:
        """Journal an alarm in the live session (and send it to subscribers); False when none is live."""
        return self.record_live(RecordType.ALARM, data) is not None

    def _target(self, sid, doing: str) -> Session:
        live = self._live()
        if sid is None:
            if live is None:
                raise ApiError("conflict", f"No session is running, so there is nothing to {doing}.")
            return live
        if live is None or live.id != sid:
            past = self.history.get(sid) if isinstance(sid, str) else None
            if past:
                raise ApiError("conflict", f"Session {escape(sid)} is not running (it is {past['state']}).")
            raise ApiError("not-found", f"There is no session {escape(str(sid))[:40]}; see 'chaperone status'.")
        return live

    async def end(self, sid, caller: Caller) -> dict:
        """End the session now: the customer's ending, or the technician's own (as the caller's role says)."""
        if caller.role not in ("customer", "technician"):
            raise ApiError("forbidden", "Only the customer or the session's technician may end a session.")
        session = self._target(sid, "end")
        await self.finish(session, caller.role, caller.provenance())
        return {"id": session.id, "state": session.state.value}

    async def end_live(self, reason: str) -> str | None:
        """End the live session for a reason of the agent's own (``witness-lag``); its id, or None."""
        live = self._live()
        if live is not None:
            await self.finish(live, reason, None)
        return live.id if live is not None else None

    def record_live(self, type: str, data: dict) -> int | None:
        """Journal a record of the agent's own (an alarm, a witness gap) in the live session, live to
        subscribers; its seq, or None when no session is live."""
        live = self._live()
        if live is None or live.sink is None or live.finishing is not None:
            return None
        return live.record(type, data)

    async def finish(self, session: Session, reason: str, by: dict | None) -> None:
        """End a live session and seal it; concurrent callers share the same ending."""
        if session.finishing is None:
            session.finishing = asyncio.ensure_future(self._finish(session, reason, by))
        await asyncio.shield(session.finishing)

    async def _finish(self, session: Session, reason: str, by: dict | None) -> None:
        assert reason in END_REASONS
        if session.activation is not None and session.activation is not asyncio.current_task():
            await asyncio.shield(session.activation)  # let capture finish starting, then stop it
        session.cancel_timers()
        self._transition(
            session, State.ENDED, (RecordType.SESSION_END, {"reason": reason, "by": by}),
            history={"ended": rfc3339(utc_now()), "end_reason": reason},
            event=("session-ended", {"id": session.id, "reason": reason}),
        )
        outcome = await self._run_login_hook(session, "on_session_ended")
        await self._end_technician_processes(session)
        if session.capture is not None:
            try:
                await asyncio.to_thread(session.capture.stop)
            except Exception as exc:  # noqa: BLE001 - whatever capture raises, journal it and still seal
                session.record(RecordType.CAPTURE_ERROR, {"what": "capture-stop", "path": None,
                                                          "error": error_detail(exc)})
        await self._seal(session, reason)
        connections = outcome.get(RecordType.SSH_CONNECTIONS) or {}
        summary = await asyncio.to_thread(journal_summary, getattr(session.journal, "path", None))
        self._publish("session-sealed", {
            "id": session.id, "reason": reason, "summary": summary,  # what changed, every way back in
            # how many of the technician's connections this ending closed (0: nobody was disconnected)
            "disconnected": len(connections.get("connections") or []) if connections.get("action") == "ended" else 0,
        })

    async def _end_technician_processes(self, session: Session) -> None:
        await end_technician_processes(self.end_technician, session)

    async def _run_login_hook(self, session: Session, which: str) -> dict:
        try:
            settings = self.home.settings()
        except ChaperoneError:
            settings = Settings()
        return await run_login_hook(self._hooks(session), which, session, str(self.home.path), settings)

    # --- start, stop, recovery -------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task failed", exc_info=task.exception())

    async def start(self) -> None:
        """Take over from a previous run: resume, end or expire what it left unsealed."""
        self._running_loop = asyncio.get_running_loop()
        for row in self.history.list():
            if row.get("state") in ("requested", "allowed", "active", "ended") and not row.get("sealed"):
                try:
                    await self._recover(row)
                except ChaperoneError as exc:
                    log.error("cannot recover session %s: %s", row.get("id"), exc)

    async def _recover(self, row: dict) -> None:
        """Carry out ``plan_recovery`` for a session the last run left unsealed."""
        sid = row["id"]
        path = self.home.journal_path(sid)
        facts = journal_facts(path)
        state = State(row["state"])
        plan = plan_recovery(state, facts, utc_now())
        try:
            # Journal.open writes the one `recovery` record: what was set aside, the gap, and whether we go on.
            journal = Journal.open(path, sid, self.device_key,
                                   recovery={"gap_s": plan.gap_s, "resumed": plan.resumed},
                                   on_line=self.ledger_hook, heartbeat=HEARTBEAT_S, facts=self.journal_facts)
        except (JournalError, FileNotFoundError) as exc:
            # Sealed before the crash (the history lagged behind), or the journal is gone.
            self.history.upsert(sid, state="sealed" if facts.get("sealed") else row["state"],
                                sealed=bool(facts.get("sealed")), end_reason=row.get("end_reason") or "recovery")
            log.warning("session %s: %s", sid, exc)
            return
        if plan.step is Step.SEAL_EMPTY:
            await asyncio.to_thread(journal.seal, {"reason": "recovery"})
            journal.close()
            self.history.upsert(sid, state="expired", sealed=True, end_reason="recovery")
            return
        session = self._revive(row, facts, state, journal)
        if plan.step is Step.EXPIRE:
            await self._expire(session, "The agent stopped before anyone decided.", how="policy")
            return
        session.sink = SessionSink(journal, self._loop, self._publish, self.home.session_dir(sid),
                                   redactor=session.redactor)
        session.until = plan.until
        session.started = facts.get("started")
        await self.failclosed.after_restart(session, facts, plan.step)  # the gap; a last look if it cannot resume
        if plan.step is Step.SEAL_ENDED:
            await self._seal(session, row.get("end_reason") or "recovery")
        elif plan.step is Step.RESUME:  # active goes on recording; allowed (capture was starting) starts now
            session.activation = self._spawn(self._activate(
                session, resumed=session.state is State.ACTIVE, warned=bool(facts.get("warned"))))
            await asyncio.shield(session.activation)
        else:
            await self.finish(session, "recovery", None)

    def _revive(self, row: dict, facts: dict, state: State, journal: Journal) -> Session:
        """The Session of a recovered journal, registered with the manager."""
        request_data = facts["request"]
        request = SessionRequest.from_fields(request_data, minimum_duration_s=1)
        verification = Verification(**{k: request_data["verification"][k]
                                       for k in ("verified", "principal", "fingerprint", "detail")})
        session = Session(id=row["id"], request=request, source=request_data.get("source", "cli"),
                          verification=verification, flags=request_data.get("flags", []), journal=journal,
                          state=state, requested=row.get("requested") or "", expires_at=rfc3339(utc_now()))
        if facts.get("capabilities") is not None:
            granted = tuple(c for c in request.capabilities if c in facts["capabilities"])
            session.grant = Grant(granted, request.duration_s)
        self._sessions[session.id] = session
        return session

    async def stop(self) -> None:
        """The agent is stopping: end the live session, expire pending requests, seal everything."""
        self._stopping = True
        for session in list(self._sessions.values()):
            if session.state is State.REQUESTED:
                await self._expire(session, "The agent stopped before anyone decided.", how="policy")
            elif session.state in (State.ALLOWED, State.ACTIVE):
                await self.finish(session, "agent-stopped", None)
            elif session.finishing is not None:
                await asyncio.shield(session.finishing)
        if self._tasks:  # expiries and endings already under way: let them seal
            _, late = await asyncio.wait(list(self._tasks), timeout=STOP_GRACE_S)
            for task in late:
                task.cancel()
