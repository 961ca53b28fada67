"""Programs started during the session: :class:`ProcessRecorder` (from the lineage's events) and the
older :class:`ProcessSampler` (psutil sampling, kept until capture takes its lineage from the service).

:class:`ProcessRecorder` turns every exec the lineage reports into records. As root the
lineage follows the kernel's process events (``how: "proc-connector"``), so an exec is recorded
however short the process; without root it samples (``how: "sampled"``, a guess).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from agent.capture.lineage import Lineage, LineageEvent, ProcView
from agent.capture.procfs import wall_from_monotonic_ns
from agent.capture.redact import redact_cmdline
from agent.clock import rfc3339_from_timestamp

TechnicianPids = Callable[[], Iterable[int]]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SeenProcess:
    pid: int
    ppid: int | None
    create_time: float | None
    technician: bool
    data: dict = field(default_factory=dict)
    ended_at: float | None = None


class ProcessSampler:
    """Emits ``process`` records (``started``/``ended``) for processes born during the session."""

    def __init__(self, sink, *, technician_pids: TechnicianPids | None = None, interval: float = 0.1):
        self._sink = sink
        self._technician_pids = technician_pids
        self.interval = interval
        self._known: set[int] = set()
        self._tracked: dict[int, SeenProcess] = {}
        self._technician: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._own_pid = os.getpid()

    def take_baseline(self) -> None:
        """The processes running now: they are the machine's state, not the session's doing."""
        self._known = set(psutil.pids())

    def start(self) -> None:
        self.take_baseline()
        self._thread = threading.Thread(target=self._run, name="chaperone-processes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling after one last tick (whatever started or ended since the previous one)."""
        if self._thread is None:
            return  # never started: there is no baseline to compare with
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample()

    @property
    def watched(self) -> int:
        """How many processes the last tick saw."""
        return len(self._known)

    def recent(self, within_s: float = 2.0) -> list[SeenProcess]:
        """Processes of the session alive now or ended within ``within_s``, newest first."""
        now = time.time()
        with self._lock:
            procs = [p for p in self._tracked.values() if p.ended_at is None or now - p.ended_at <= within_s]
        return sorted(procs, key=lambda p: p.create_time or 0.0, reverse=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a sampler must not die silently
                self._sink.emit("capture-error", {"what": "process-sampler", "path": None, "error": str(exc)})

    def sample(self) -> None:
        """One tick: new pids are queried and recorded, vanished ones are recorded as ended."""
        with self._lock:
            now_pids = set(psutil.pids())
            new = now_pids - self._known
            gone = self._known - now_pids
            self._known = now_pids
            technician_roots = self._technician_roots()
            for pid in sorted(new):
                self._started(pid, technician_roots)
            for pid in sorted(gone):
                self._ended(pid)

    def _technician_roots(self) -> set[int]:
        if self._technician_pids is None:
            return set()
        try:
            roots = set(self._technician_pids())
        except Exception:  # noqa: BLE001 - the session manager's callback; a failure means "unknown"
            return set()
        self._technician |= roots
        return roots

    def _started(self, pid: int, technician_roots: set[int]) -> None:
        if pid == self._own_pid:
            return
        info = _describe(pid)
        ppid = info.get("ppid")
        technician = pid in technician_roots or pid in self._technician or ppid in self._technician
        if technician:
            self._technician.add(pid)
        create_time = info.pop("create_time", None)
        data = {
            "op": "started",
            "pid": pid,
            "started": rfc3339(create_time) if create_time else None,
            "ended": None,
            "technician": technician,
            "how": "sampled",
            **info,
        }
        self._tracked[pid] = SeenProcess(pid, ppid, create_time, technician, data)
        self._sink.emit("process", dict(data))

    def _ended(self, pid: int) -> None:
        proc = self._tracked.get(pid)
        if proc is None or proc.ended_at is not None:
            return
        proc.ended_at = time.time()
        data = {k: v for k, v in proc.data.items() if k != "error"}
        data.update(op="ended", ended=rfc3339(proc.ended_at))
        self._sink.emit("process", data)
        self._technician.discard(pid)


def _describe(pid: int) -> dict:
    """ppid, user, exe, redacted command line and start time of ``pid``; what could not be read is null."""
    info: dict = {"ppid": None, "user": None, "exe": None, "cmdline": [], "create_time": None}
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            info["ppid"] = proc.ppid()
            info["create_time"] = proc.create_time()
            for key, getter in (("user", proc.username), ("exe", proc.exe), ("cmdline", proc.cmdline)):
                try:
                    info[key] = getter()
                except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                    pass
            if not info["exe"]:
                try:
                    info["exe"] = proc.name()
                except psutil.Error:
                    pass
    except psutil.NoSuchProcess:
        info["error"] = "ended before it could be read"
    except psutil.Error as exc:
        info["error"] = f"could not be read: {exc}"
    info["cmdline"] = redact_cmdline(list(info["cmdline"] or []))
    return info


MAX_PROGRAM_NAMES = 500
CHAIN_IN_RECORDS = 8


class ProcessRecorder:
    """``process`` and ``process-summary`` records from a :class:`Lineage`'s events, in a thread of its own.

    ``label``: the session's technician lineage; while it has a marked root (``lineage.has_label``)
    the customer's programs are only counted. A process of *any* technician lineage is the
    technician's."""

    def __init__(self, sink, lineage: Lineage, *, label: str | None = None,
                 split: Callable[[], bool] | None = None, summary_s: float = 60.0):
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
        self._dropped_seen = 0
        self._sub = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._splitting = False
        self.records = 0

    def start(self) -> None:
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
        self._handle(self._sub.get(timeout=0))
        self._sub.close()
        self._flush_loss()
        self._summarise()

    def _run(self) -> None:
        assert self._sub is not None
        next_summary = time.monotonic() + self.summary_s
        while not self._stop.is_set():
            events = self._sub.get(timeout=0.5)
            try:
                self._handle(events)
                if time.monotonic() >= next_summary:
                    self._summarise()
                    next_summary = time.monotonic() + self.summary_s
            except Exception as exc:  # noqa: BLE001 - the recorder must not die silently
                self._sink.emit("capture-error", {"what": "process-recorder", "path": None, "error": str(exc)})

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
                self._pending_loss = {"count": event.count}
            elif event.kind == "reseed":
                self._pending_loss = {**(self._pending_loss or {"count": 0}), "found": event.count,
                                      "ended_unseen": event.ended}
                self._flush_loss()
        self._note_dropped()

    def _exec(self, proc: ProcView, splitting: bool) -> None:
        if proc.pid == self._own_pid:
            return
        if proc.label is None and splitting:
            name = program_name(proc.exe)
            if name in self._counts or len(self._counts) < MAX_PROGRAM_NAMES:
                self._counts[name] = self._counts.get(name, 0) + 1
            else:
                self._other_names += 1
            return
        self._recorded.add(proc.ref)
        self._emit(self._record(proc, "started"))

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
            "exe": proc.exe,
            "cmdline": redact_cmdline(list(proc.argv)) if proc.argv else [],
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
        self._sink.emit("process", data)

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
            self._sink.emit("process-summary", data)
        self._counts = {}
        self._other_names = 0
        self._since = now

    def _flush_loss(self) -> None:
        if self._pending_loss is None:
            return
        loss, self._pending_loss = self._pending_loss, None
        self._sink.emit("overflow", {
            "root": None,
            "source": "proc-connector",
            "count": loss.get("count", 0),
            "detail": "The kernel dropped process events (the reader fell behind): programs that started "
                      "and ended meanwhile are not recorded. The process table was read again from /proc.",
            "rescanned": "found" in loss,
            "changes": loss.get("found", 0) + loss.get("ended_unseen", 0),
        })

    def _note_dropped(self) -> None:
        assert self._sub is not None
        dropped = self._sub.dropped
        if dropped > self._dropped_seen:
            self._sink.emit("overflow", {
                "root": None, "source": "process-recorder", "count": dropped - self._dropped_seen,
                "detail": "Process events were dropped because the recorder fell behind.",
                "rescanned": False, "changes": 0})
            self._dropped_seen = dropped


def program_name(exe: str | None) -> str:
    """A program's name without its folder (the customer's summary keeps no paths)."""
    if not exe:
        return "(unknown)"
    return os.path.basename(exe.rstrip("/")) or "(unknown)"

