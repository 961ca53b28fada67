"""The device ledger in the agent: journals' lines in, tree heads out to the witnesses, checks at start.

``LedgerLink`` is built by the service (the composition root), which hands its
``hook`` to the session manager and the unattended journal (the journal never
imports the ledger). It:

- **logs** every checkpoint and seal line of every session journal, and the
  checkpoints, seals and alarms of the unattended journal, byte for byte
  (``hook``, called by the journals from any thread; an append costs ~15 us);
- **checks at start**, before any journal is reopened, that every open journal
  and the unattended journal still hold the newest line the ledger holds for
  them: one that lacks it was cut short (or rewritten) while the agent was
  down. That is an ``alarm`` record in that journal (so in its bundle), a
  ledger entry, and an ``alarm`` event. Then it logs the lines the ledger
  lacks (written after the last ledger sync before a crash, or by
  ``ssh-authorize``, which appends to the unattended journal itself). The
  unattended journal is checked again whenever it changes (every
  ``CATCH_UP_S``), so cutting it while the agent runs is caught too;
- **pushes** the ledger's head to the configured witnesses (``witness.*``)
  from the agent's loop without blocking it: at once after a seal, else at
  most every ``PUSH_INTERVAL_S`` when something was logged (so at every
  decision, whose checkpoint is immediate). Every cosignature is kept in the
  ledger. A witness that starts or stops answering is a ``witness`` record in
  the live session's journal (the gap is on the record); a 409 or a 422 after
  the retry (the witness holds a head ours does not extend: this device's
  history was forked or cut) is an ``alarm``;
- **applies the policy**: while a session is live, if no head was cosigned by
  ``witness.quorum`` witnesses for ``witness.max_lag_s``, it publishes a
  ``witness-lag`` event, journals it and, with ``on_lag: "end"``, ends the
  session (reason ``witness-lag``): the technician's access ends with it;
- **reports** its state (``status()``, in the ``status`` operation and the
  ``ledger`` events): the last cosigned head, its age, and a warning when the
  record is not leaving the machine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.clock import parse_rfc3339, rfc3339, utc_now
from agent.errors import ChaperoneError, LedgerError
from agent.home import Home
from agent.journal.reader import iter_lines, match_tail, parse_record
from agent.journal.shared import SHARED_LEDGER_TYPES, append_shared
from agent.journal.writer import LEDGER_TYPES, Journal
from agent.ledger import Ledger
from agent.records import RecordType
from agent.settings import WitnessSettings
from agent.witness import Cosigned, PushResult, WitnessPool

log = logging.getLogger("chaperone.agent")

PUSH_INTERVAL_S = 2.0
TICK_S = 1.0
#: How long the agent waits for the ledger's lock at start (a command exporting may hold it briefly).
LOCK_WAIT_S = 15.0
#: How often the unattended journal is read for lines ssh-authorize wrote.
CATCH_UP_S = 10.0
UNATTENDED = "unattended"


@dataclass(frozen=True)
class Finding:
    """A journal that lacks the newest line the ledger holds for it."""

    session: str
    journal: Path
    index: int  # the ledger entry
    seq: int
    type: str
    detail: str

    def alarm(self) -> dict:
        return {"tool": "ledger", "kind": "journal-cut", "session": self.session, "ledger_index": self.index,
                "seq": self.seq, "record": self.type, "detail": self.detail}


def _envelope(line: bytes) -> tuple[str, int, str]:
    """``(session, seq, type)`` of a journal line."""
    tail = match_tail(line if line.endswith(b"\n") else line + b"\n")
    if tail is not None:
        _, seq, session, _, kind = tail
        return session.decode("utf-8"), int(seq), kind.decode("ascii")
    record = parse_record(line if line.endswith(b"\n") else line + b"\n")
    return str(record["session"]), int(record["seq"]), str(record["type"])


def _line_at(path: Path, seq: int) -> bytes | None:
    """The journal's line with ``seq`` (without its newline), or None if it has none."""
    with open(path, "rb") as stream:
        for line in iter_lines(stream):
            try:
                _, at, _ = _envelope(line)
            except ValueError:
                return None
            if at == seq:
                return line.rstrip(b"\n")
            if at > seq:
                return None
    return None


class LedgerLink:
    def __init__(self, home: Home, config: WitnessSettings, publish: Callable[[str, dict], None]) -> None:
        self.home = home
        self.config = config
        self._publish = publish
        self.ledger: Ledger | None = None
        self.problem: str | None = None  # why there is no ledger, as a sentence
        self.pool: WitnessPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._urgent = False
        self._dirty = False
        self._stop = asyncio.Event()
        self._append_errors = 0
        self._last_push = 0.0
        self._push_task: asyncio.Task | None = None
        self._witness_ok: dict[str, bool] = {}
        self._witness_since: dict[str, float] = {}
        self._forked: dict[str, int] = {}  # witness -> what it answered, for one alarm per fork
        self._last_quorum: float | None = None  # wall time of the newest head a quorum cosigned
        self._live_since: float | None = None
        self._lag_reported = False
        self._unattended_size = 0
        self._lock = threading.Lock()
        self._record_live: Callable[[str, dict], object] = lambda type, data: None
        self._unattended_alarm: Callable[[dict], object] = lambda data: None

    # --- opening and the checks at start -------------------------------------------------------
    def open(self) -> None:
        """Open the ledger as its writer. A ledger that no longer matches its signed head (cut or changed
        while the agent was stopped) is an alarm; the agent then runs without one."""
        try:
            self.ledger = Ledger.open(self.home, lock_wait=LOCK_WAIT_S)
        except LedgerError as exc:
            self.problem = str(exc)
            log.error("the device ledger cannot be used: %s", exc)
            return
        if self.ledger.recovered:
            log.warning("the device ledger recovered from a crash: %s", self.ledger.recovered)
        last = self.ledger.last_cosigned
        if last is not None:
            self._last_quorum = parse_rfc3339(last.at).timestamp()
        if self.config.witnesses:
            self.pool = WitnessPool(self.ledger, [(w.url, w.vkey) for w in self.config.witnesses],
                                    quorum=self.config.quorum)

    def ledger_problem_alarm(self) -> dict | None:
        if self.problem is None:
            return None
        return {"tool": "ledger", "kind": "ledger-damaged", "detail": self.problem}

    def check_journals(self, journals: Iterable[tuple[str, Path]]) -> list[Finding]:
        """The restart checks (see the module's docstring): findings, and the missing lines logged."""
        if self.ledger is None:
            return []
        wanted = {sid: path for sid, path in journals if path.is_file()}
        newest = self._newest_entries(set(wanted))
        findings = []
        for sid, path in wanted.items():
            entry = newest.get(sid)
            after = -1
            if entry is not None:
                index, line = entry
                _, seq, kind = _envelope(line)
                have = _line_at(path, seq)
                if have != line:
                    what = "lacks" if have is None else "holds another version of"
                    findings.append(Finding(sid, path, index, seq, kind,
                                            f"The journal of {sid} {what} its {kind} at seq {seq}, which the device "
                                            f"ledger holds (entry {index}): it was cut short or rewritten while the "
                                            "agent was stopped."))
                    continue
                after = seq
            self._catch_up(sid, path, after)
        return findings

    def _newest_entries(self, sessions: set[str]) -> dict[str, tuple[int, bytes]]:
        """The newest ledger entry of each session, by one scan from the ledger's end."""
        found: dict[str, tuple[int, bytes]] = {}
        if not sessions or self.ledger is None:
            return found
        for index, entry in self.ledger.store.iter_entries_backward():
            try:
                sid, _, _ = _envelope(entry)
            except ValueError:
                continue  # not a journal line (entries are opaque to the ledger)
            if sid in sessions and sid not in found:
                found[sid] = (index, entry)
                if len(found) == len(sessions):
                    break
        return found

    def _catch_up(self, sid: str, path: Path, after_seq: int) -> int:
        """Log the journal's ledger lines after ``after_seq`` that the ledger lacks; how many."""
        types = SHARED_LEDGER_TYPES if sid == UNATTENDED else LEDGER_TYPES
        count = 0
        with open(path, "rb") as stream:
            for line in iter_lines(stream):
                if not line.endswith(b"\n"):
                    break  # a torn tail: the journal's own recovery sets it aside
                try:
                    _, seq, kind = _envelope(line)
                except ValueError:
                    break
                if seq > after_seq and kind in types:
                    self.hook(line.rstrip(b"\n"))
                    count += 1
        if sid == UNATTENDED:
            self._unattended_size = path.stat().st_size
        return count

    def record_findings(self, findings: list[Finding], device_key) -> None:
        """Each finding as an ``alarm`` record in its journal (and so in the ledger) and an ``alarm`` event."""
        for finding in findings:
            log.error("%s", finding.detail)
            data = finding.alarm()
            try:
                if finding.session == UNATTENDED:
                    append_shared(finding.journal, UNATTENDED, device_key, RecordType.ALARM, data, on_line=self.hook)
                else:
                    journal = Journal.open(finding.journal, finding.session, device_key, mark_restart=False,
                                           on_line=self.hook, ledger_types=SHARED_LEDGER_TYPES)
                    try:
                        journal.append(RecordType.ALARM, data)
                        journal.checkpoint()
                    finally:
                        journal.close()
            except (ChaperoneError, OSError) as exc:
                log.error("cannot journal the alarm for %s: %s", finding.session, exc)
            self._publish("alarm", data)

    # --- logging lines (any thread) --------------------------------------------------------------
    def hook(self, line: bytes) -> None:
        ledger = self.ledger
        if ledger is None:
            return
        try:
            ledger.append(line)
        except (LedgerError, ValueError) as exc:
            with self._lock:
                self._append_errors += 1
            log.error("cannot add a line to the device ledger: %s", exc)
            return
        urgent = b'"type":"seal"' in line[-80:]
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._poke, urgent)
            except RuntimeError:
                pass  # the loop is closing: the next start pushes what is left
        else:
            self._dirty = True

    def _poke(self, urgent: bool) -> None:
        self._dirty = True
        self._urgent = self._urgent or urgent
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------
    async def run(self, live: Callable[[], bool], record_live: Callable[[str, dict], object],
                  end_live: Callable[[str], Any], unattended_alarm: Callable[[dict], object]) -> None:
        """Push heads and apply the policy until ``stop()``. ``live`` says whether a session is live;
        ``record_live`` journals a record in it; ``end_live(reason)`` ends it; ``unattended_alarm`` journals
        an alarm when no session is live."""
        self._loop = asyncio.get_running_loop()
        self._record_live, self._unattended_alarm = record_live, unattended_alarm
        last_catch_up = time.monotonic()
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            now = time.monotonic()
            pushing = self._push_task is not None and not self._push_task.done()
            if (self.pool is not None and self._dirty and not pushing
                    and (self._urgent or now - self._last_push >= PUSH_INTERVAL_S)):
                self._dirty = self._urgent = False
                self._last_push = now
                # A task of its own: a slow witness (up to its time-out) never delays the policy below.
                self._push_task = asyncio.ensure_future(self._push())
            try:
                if now - last_catch_up >= CATCH_UP_S:
                    last_catch_up = now
                    await asyncio.to_thread(self._catch_up_unattended)
                await self._policy(live(), end_live)
            except Exception:  # noqa: BLE001 - a bug here must not stop the witnessing (nor the agent)
                log.exception("the ledger's loop failed; it goes on")
        if self._push_task is not None:
            await asyncio.gather(self._push_task, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def close(self) -> None:
        """A last push of what was logged (the final seals), then close the ledger."""
        if self.pool is not None:
            if self._dirty and self.ledger is not None:
                try:
                    await asyncio.wait_for(self._push(), 15.0)
                except TimeoutError:
                    log.warning("the witnesses did not answer the last push in time")
            await self.pool.close()
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)

    def _catch_up_unattended(self) -> None:
        path = self.home.unattended_journal_path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size == self._unattended_size:
            return
        # The same check as at start: a cut while the agent runs is caught here, within CATCH_UP_S.
        for finding in self.check_journals([(UNATTENDED, path)]):
            log.error("%s", finding.detail)
            self._unattended_alarm(finding.alarm())  # journaled (so logged) and published by the sink
        self._unattended_size = path.stat().st_size

    async def _push(self) -> None:
        assert self.pool is not None
        try:
            result = await self.pool.push()
            self._note_results(result)
        except (ChaperoneError, OSError) as exc:  # the ledger itself failed (disk): no head to send
            log.error("cannot sign a ledger head: %s", exc)
            return
        except Exception:  # noqa: BLE001 - a bug here must not stop the witnessing (nor the agent)
            log.exception("a push to the witnesses failed")
            return
        if self._dirty:
            self._wake.set()  # lines came during the push: the next one goes at the next tick

    def _note_results(self, result: PushResult) -> None:
        now = time.time()
        if result.quorum_met:
            self._last_quorum = now
            self._lag_reported = False
        for name, answer in result.results.items():
            ok = isinstance(answer, Cosigned)
            was = self._witness_ok.get(name)
            if was is None or was != ok:
                gap = now - self._witness_since.get(name, now)
                self._witness_since[name] = now
                self._witness_ok[name] = ok
                if was is not None or not ok:
                    data: dict[str, Any] = {"witness": name, "event": "answering" if ok else "not-answering",
                                            "size": result.head.size}
                    if ok:
                        data["gap_s"] = int(gap)  # the journal holds no floats
                    else:
                        data["reason"] = getattr(answer, "reason", type(answer).__name__)[:300]
                    self._record_live(RecordType.WITNESS, data)
        for name in set(self._forked) - set(result.forks):
            del self._forked[name]  # that witness cosigns again
        for name, answer in result.forks.items():
            seen = getattr(answer, "witness_size", getattr(answer, "status", 0))
            if self._forked.get(name) == seen:
                continue  # the same fork at every push: one alarm, not one every two seconds
            self._forked[name] = seen
            data = {"tool": "ledger", "kind": "fork", "witness": name, "size": result.head.size,
                    "detail": f"The witness {name} holds a head of this device's ledger that the ledger does not "
                              f"extend ({getattr(answer, 'reason', '')}): its history was forked or cut."}
            log.error("%s", data["detail"])
            if self._record_live(RecordType.ALARM, data) is None:
                self._unattended_alarm(data)
            self._publish("alarm", data)
        self._publish("ledger", self.status())

    async def _policy(self, live: bool, end_live: Callable[[str], Any]) -> None:
        if not live:
            self._live_since = None
            return
        now = time.time()
        if self._live_since is None:
            self._live_since = now
        if not self.config.witnesses:
            return
        since = max(self._live_since, self._last_quorum or 0.0)
        lag = now - since
        if lag <= self.config.max_lag_s or self._lag_reported:
            return
        self._lag_reported = True
        data = {"lag_s": int(lag), "max_lag_s": int(self.config.max_lag_s), "on_lag": self.config.on_lag,
                "quorum": self.config.quorum}  # whole seconds: the journal holds no floats
        log.warning("no ledger head was cosigned by %d witness(es) for %.0f s", self.config.quorum, lag)
        self._record_live(RecordType.WITNESS, {"event": "lagging", **data})
        self._publish("witness-lag", data)
        self._publish("ledger", self.status())
        if self.config.on_lag == "end":
            await end_live("witness-lag")

    # --- what the tray shows ------------------------------------------------------------------
    def status(self) -> dict:
        """The ledger's state for the ``status`` operation and the ``ledger`` event (see the docstring)."""
        if self.ledger is None:
            return {"ok": False, "origin": None, "size": None, "witnesses": len(self.config.witnesses),
                    "cosigned": None, "warning": self.problem or "The device ledger is not open."}
        last = self.ledger.last_cosigned
        cosigned = None
        if last is not None:
            age = max(0.0, (utc_now() - parse_rfc3339(last.at)).total_seconds())
            cosigned = {"size": last.size, "at": last.at, "age_s": round(age, 1), "witnesses": list(last.witnesses)}
        warning = None
        if not self.config.witnesses:
            warning = "No witness is configured: this device's record does not leave the machine."
        elif self._lag_reported or (self._live_since is not None and cosigned is None):
            warning = "The record is not leaving the machine: no witness has cosigned it recently."
        elif any(ok is False for ok in self._witness_ok.values()):
            down = sorted(n for n, ok in self._witness_ok.items() if not ok)
            warning = f"Not answering: {', '.join(down)}."
        return {"ok": warning is None, "origin": self.ledger.origin, "size": self.ledger.size,
                "witnesses": len(self.config.witnesses), "quorum": self.config.quorum, "cosigned": cosigned,
                "warning": warning, "append_errors": self._append_errors, "now": rfc3339(utc_now())}
