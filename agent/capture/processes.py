"""Programs started during the session: :class:`ProcessRecorder` turns every exec the lineage
reports into records. As root the lineage follows the kernel's process events (``how:
"proc-connector"``), so an exec is recorded however short the process; without root it samples
(``how: "sampled"``, a guess: a process that lives less than 100 ms may be missed).

**Privacy.** When the technician's processes are known (an SSH session: their login is marked
in the lineage), only theirs are recorded in full: ``process`` records with the redacted command
line, user, parent, start, end and lineage. The customer's own programs are counted by name
only, in a ``process-summary`` record every ``summary_s`` seconds and at the end: no arguments,
no paths, and their arguments are not even read. When the two cannot be told apart (no
technician lineage, e.g. a GUI remote-control session), every program is recorded in full.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from agent.capture.lineage import Lineage, LineageEvent, ProcView, Subscription
from agent.capture.procfs import wall_from_monotonic_ns
from agent.clock import rfc3339_from_timestamp
from agent.records import RecordType
from agent.redact import Redactor, default_redactor

TechnicianPids = Callable[[], Iterable[int]]
ROOTS_EVERY_S = 1.0
DEFER_S = 1.5
MAX_PROGRAM_NAMES = 500
CHAIN_IN_RECORDS = 8


class ProcessRecorder:
    """``process`` and ``process-summary`` records from a :class:`Lineage`'s events, in a thread of its own.

    ``label``: the session's technician lineage; while it has a marked root (``lineage.has_label``)
    the customer's programs are only counted. A process of *any* technician lineage is the
    technician's."""

    def __init__(self, sink, lineage: Lineage, *, label: str | None = None,
                 split: Callable[[], bool] | None = None, summary_s: float = 60.0,
                 technician_roots: TechnicianPids | None = None, redactor: Redactor | None = None):
        """``technician_roots``: the session's login processes (the SSH hook's ``technician_pids``),
        asked at the start and every second and marked in the lineage as ``label``'s roots."""
        self._sink = sink
        self._lineage = lineage
        self._label = label
        self._split = split or (lambda: label is not None and lineage.has_label(label))
        self.summary_s = summary_s
        self._own_pid = os.getpid()
        self._counts: dict[str, int] = {}
        self._other_names = 0
        self._since = time.time()
        self._recorded: set[tuple[int, int]] = set()  # processes with a "started" record, to end them
        self._pending_loss: dict | None = None
        self._overflows_seen = lineage.overflows
        self._dropped_seen = 0
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._splitting = False
        self.records = 0
        self._technician_roots = technician_roots
        self._redactor = redactor or default_redactor()
        self._marked: set[tuple[int, int]] = set()
        self._deferred: deque[tuple[float, ProcView]] = deque()

    def mark_roots(self) -> None:
        """Mark the technician's logins known now (a failing callback means: none known now)."""
        if self._technician_roots is None or self._label is None:
            return
        try:
            pids = list(self._technician_roots())
        except Exception:  # noqa: BLE001 - the login source's callback; a failure means "unknown"
            return
        for pid in pids:
            ref = self._lineage.identify(pid)
            if ref is not None and ref not in self._marked and pid not in (0, 1, self._own_pid):
                if self._lineage.mark(pid, self._label, ref.start_ticks):
                    self._marked.add(ref)

    def start(self) -> None:
        self.mark_roots()
        self._splitting = self._split()
        self._sub = self._lineage.subscribe(argv_of_all=not self._splitting)
        self._since = time.time()
        self._thread = threading.Thread(target=self._run, name="chaperone-process-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Record what the lineage has seen up to now, the last summary and any loss; then stop."""
        if self._thread is None:
            return
        self._lineage.sync()
        self._stop.set()
        self._thread.join()
        self._thread = None
        assert self._sub is not None
        self.mark_roots()
        self._handle(self._sub.get(timeout=0))
        self._decide_deferred(everything=True)
        self._sub.close()
        self._flush_loss()
        self._summarise()

    def _run(self) -> None:
        assert self._sub is not None
        next_summary = time.monotonic() + self.summary_s
        next_roots = time.monotonic() + ROOTS_EVERY_S
        while not self._stop.is_set():
            events = self._sub.get(timeout=0.5)
            try:
                if time.monotonic() >= next_roots:
                    self.mark_roots()
                    next_roots = time.monotonic() + ROOTS_EVERY_S
                self._handle(events)
                self._decide_deferred()
                if time.monotonic() >= next_summary:
                    self._summarise()
                    next_summary = time.monotonic() + self.summary_s
            except Exception as exc:  # noqa: BLE001 - the recorder must not die silently
                self._sink.emit(RecordType.CAPTURE_ERROR, {"what": "process-recorder", "path": None, "error": str(exc)})

    def _handle(self, events: list[LineageEvent]) -> None:
        splitting = self._split()
        if splitting != self._splitting:
            self._splitting = splitting
            self._lineage.read_argv_of_all(not splitting)
        for event in events:
            if event.kind == "exec" and event.proc is not None:
                self._exec(event.proc, splitting)
            elif event.kind == "exit" and event.proc is not None:
                self._exit(event.proc)
            elif event.kind == "lost":
                self._pending_loss = self._pending_loss or {}
            elif event.kind == "reseed":
                self._pending_loss = {**(self._pending_loss or {}), "found": event.count, "ended_unseen": event.ended}
                self._flush_loss()
        self._note_dropped()

    def _exec(self, proc: ProcView, splitting: bool) -> None:
        if proc.pid == self._own_pid:
            return
        if proc.label is None and splitting:
            # Not known as the technician's yet. A login that joined the session is marked when the
            # login source names it (at most ROOTS_EVERY_S later), and the mark reaches back to what
            # it started: decide once that had the time to happen.
            self._deferred.append((time.monotonic() + DEFER_S, proc))
            return
        self._recorded.add(proc.ref)
        self._emit(self._record(proc, "started"))

    def _decide_deferred(self, everything: bool = False) -> None:
        now = time.monotonic()
        while self._deferred and (everything or self._deferred[0][0] <= now):
            _due, proc = self._deferred.popleft()
            current = self._lineage.view(proc.pid, proc.start_ticks)
            if current is None or current.label is None:
                self._count(proc)
                continue
            self._recorded.add(current.ref)
            self._emit(self._record(current, "started"))
            if current.ended_ns is not None:  # it ended before it was known to be the technician's
                self._exit(current)

    def _count(self, proc: ProcView) -> None:
        name = program_name(proc.exe)
        if name in self._counts or len(self._counts) < MAX_PROGRAM_NAMES:
            self._counts[name] = self._counts.get(name, 0) + 1
        else:
            self._other_names += 1

    def _exit(self, proc: ProcView) -> None:
        if proc.ref not in self._recorded:
            return  # forked and never exec'd during the session, or the customer's (counted at exec)
        self._recorded.discard(proc.ref)
        data = self._record(proc, "ended")
        data["ended"] = rfc3339_from_timestamp(wall_from_monotonic_ns(proc.ended_ns)) if proc.ended_ns else None
        data["exit_code"] = proc.exit_code
        self._emit(data)

    def _record(self, proc: ProcView, op: str) -> dict:
        lineage = self._lineage.record_of(proc, chain=CHAIN_IN_RECORDS)
        data = {
            "op": op,
            "pid": proc.pid,
            "ppid": proc.ppid,
            "user": lineage["user"],
            "exe": self._redactor.hide_known(proc.exe) if proc.exe else proc.exe,
            "cmdline": self._redactor.redact_cmdline(list(proc.argv)) if proc.argv else [],
            "started": lineage["started"],
            "ended": None,
            "technician": proc.label is not None,
            "how": self._lineage.how,
            "lineage": {"label": proc.label, "via": proc.via, "chain": lineage["chain"]},
        }
        if proc.argv is None:
            data["cmdline_unavailable"] = "it exited before its arguments could be read"
        return data

    def _emit(self, data: dict) -> None:
        self.records += 1
        self._sink.emit(RecordType.PROCESS, data)

    def _summarise(self) -> None:
        now = time.time()
        if self._counts or self._other_names:
            data = {
                "since": rfc3339_from_timestamp(self._since),
                "until": rfc3339_from_timestamp(now),
                "programs": dict(sorted(self._counts.items())),
                "execs": sum(self._counts.values()) + self._other_names,
                "other_programs": self._other_names,
                "how": self._lineage.how,
                "detail": "The customer's own programs, counted by name only (no arguments, no paths).",
            }
            self._sink.emit(RecordType.PROCESS_SUMMARY, data)
        self._counts = {}
        self._other_names = 0
        self._since = now

    def _flush_loss(self) -> None:
        if self._pending_loss is None:
            return
        loss, self._pending_loss = self._pending_loss, None
        overflows = self._lineage.overflows  # every overflow since the last record (one may predate our events)
        count, self._overflows_seen = max(1, overflows - self._overflows_seen), overflows
        self._sink.emit(RecordType.OVERFLOW, {
            "root": None,
            "source": "proc-connector",
            "count": count,
            "detail": "The kernel dropped process events (the reader fell behind): programs that started "
                      "and ended meanwhile are not recorded. The process table was read again from /proc.",
            "rescanned": "found" in loss,
            "changes": loss.get("found", 0) + loss.get("ended_unseen", 0),
        })

    def _note_dropped(self) -> None:
        assert self._sub is not None
        dropped = self._sub.dropped
        if dropped > self._dropped_seen:
            self._sink.emit(RecordType.OVERFLOW, {
                "root": None, "source": "process-recorder", "count": dropped - self._dropped_seen,
                "detail": "Process events were dropped because the recorder fell behind.",
                "rescanned": False, "changes": 0})
            self._dropped_seen = dropped


def program_name(exe: str | None) -> str:
    """A program's name without its folder (the customer's summary keeps no paths)."""
    if not exe:
        return "(unknown)"
    return os.path.basename(exe.rstrip("/")) or "(unknown)"

