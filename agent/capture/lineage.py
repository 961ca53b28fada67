"""Process lineage: which processes are a technician's, known from the kernel's process events.

One :class:`Lineage` per agent (the service builds it and hands it to consent and to capture). As root
on Linux it reads the proc connector (``how = "proc-connector"``): every fork, exec, exit, uid and sid
event, however short the process; elsewhere it samples with psutil every 100 ms (``how = "sampled"``, a
guess: it misses short processes and a fork-and-detach between two samples). Records say which.

::

    lineage = Lineage()                 # or Lineage(prefer="sampled")
    lineage.start()                     # seeds the table from /proc, then follows the events
    lineage.mark(pid, "s-2026…")        # the technician's login process: the root of their lineage
    lineage.is_technician(pid)          # that process and everything forked from it since
    lineage.describe(pid)               # the lineage for a record
    lineage.living("s-2026…")           # its processes alive now, detached ones included
    lineage.end_lineage("s-2026…")      # stop them all (frozen first, so none can fork away)
    sub = lineage.subscribe()           # fork/exec/exit events for the process recorder
    lineage.stop()

A technician's lineage is the marked process and everything forked from it
(by fork history, so ``setsid -f``, ``nohup``, double forks and re-parenting
to init change nothing), plus: a process a technician's process attached to
with ``ptrace``; a process in a Unix session a technician's process leads or
in the technician's audit login session (``/proc/<pid>/sessionid``, set by
``pam_loginuid`` at an sshd login) when it was forked by a reaper (the
``clone(CLONE_PARENT)`` escape); and processes of systemd units the
technician started (:mod:`agent.capture.units` says exactly which).

The netlink socket may overflow under a flood: the loss is counted
(``overflows``), subscribers get a ``lost`` event, and the table is
re-seeded from ``/proc`` once the reader has caught up. Processes that a
technician detached *during* the loss are then known only by their session.
"""

from __future__ import annotations

import os
import pwd
import select
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from agent.capture import procfs
from agent.capture.ending import EndResult, ProcessRef, end_processes
from agent.capture.execs import ExecOpens
from agent.capture.fanotify import FanotifyUnavailable
from agent.capture.mountinfo import PSEUDO_FILESYSTEMS
from agent.capture.proc_connector import EventsLost, ProcConnector, ProcConnectorUnavailable, ProcEvent
from agent.capture.proctable import LabelState, Proc, ProcessTable, ProcfsReader, ProcReader
from agent.capture.sampling import PsutilReader, Sampler
from agent.clock import rfc3339_from_timestamp

PROC_CONNECTOR = "proc-connector"
SAMPLED = "sampled"
BATCH = 256
BUSY_S = 0.01
COALESCE_MS = 20
REST_AFTER_S = 5.0  # no subscriber and no technician's process alive this long: stop the events
REST_CHECK_MS = 5000


@dataclass(frozen=True, slots=True)
class LineageEvent:
    """What a subscriber receives. ``kind``: ``fork``, ``exec``, ``exit`` (``proc`` is a frozen view
    of the process then), ``lost`` (events were dropped: ``count`` overflows so far) or ``reseed``
    (the table was re-read from /proc: ``count`` processes found, ``ended`` found gone)."""

    kind: str
    proc: ProcView | None = None
    count: int = 0
    ended: int = 0
    wall: float = 0.0


@dataclass(frozen=True, slots=True)
class ProcView:
    pid: int
    start_ticks: int
    start_ns: int
    ppid: int
    uid: int | None
    exe: str | None
    argv: tuple[str, ...] | None
    label: str | None
    via: str | None
    exit_code: int | None
    ended_ns: int | None
    parent: Proc | None = field(compare=False, repr=False)

    @property
    def ref(self) -> ProcessRef:
        return ProcessRef(self.pid, self.start_ticks)


def _view(proc: Proc) -> ProcView:
    return ProcView(proc.pid, proc.start_ticks, proc.start_ns, proc.ppid, proc.uid, proc.exe,
                    tuple(proc.argv) if proc.argv is not None else None, proc.label, proc.via,
                    proc.exit_code, proc.ended_ns, proc.parent)


class Subscription:
    """A bounded queue of :class:`LineageEvent` filled by the reader without ever waiting; what does
    not fit is counted in ``dropped`` (the subscriber records the loss)."""

    def __init__(self, lineage: Lineage, maxsize: int):
        self._lineage = lineage
        self._items: deque[LineageEvent] = deque()
        self._maxsize = maxsize
        self._ready = threading.Event()
        self.dropped = 0

    def put(self, event: LineageEvent) -> None:
        if len(self._items) >= self._maxsize:
            self.dropped += 1
        else:
            self._items.append(event)
        self._ready.set()

    def get(self, timeout: float | None = None) -> list[LineageEvent]:
        """Everything queued (waiting up to ``timeout`` for something); [] when nothing came."""
        if not self._items:
            self._ready.wait(timeout)
        self._ready.clear()
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out

    def close(self) -> None:
        self._lineage._unsubscribe(self)
        self._ready.set()


class Lineage:
    """The process table, kept by a reader thread; every public method is thread-safe."""

    def __init__(self, *, prefer: str = "auto", rcvbuf: int = 8 << 20, sample_interval: float = 0.1,
                 reader: ProcReader | None = None):
        self._own_pid = os.getpid()
        self._connector: ProcConnector | None = None
        self.why_sampled: str | None = None
        if prefer != SAMPLED:
            try:
                self._connector = ProcConnector(rcvbuf=rcvbuf)
            except ProcConnectorUnavailable as exc:
                if prefer == PROC_CONNECTOR:
                    raise
                self.why_sampled = str(exc)
        else:
            self.why_sampled = "sampling was asked for."
        self.how = PROC_CONNECTOR if self._connector is not None else SAMPLED
        self._opens: ExecOpens | None = None
        self.why_no_programs: str | None = None
        if self._connector is not None:
            try:
                self._opens = ExecOpens()
            except FanotifyUnavailable as exc:
                self.why_no_programs = f"{exc} Programs of processes that exit at once may be unknown."
        if reader is None:
            reader = ProcfsReader() if sys.platform.startswith("linux") else PsutilReader()
        offset = procfs.boot_offset_ns() if sys.platform.startswith("linux") else 0
        self._table = ProcessTable(reader, own_pid=self._own_pid, offset_ns=offset)
        if self._opens is not None:
            self._table.exec_program = self._opens.take
            self._table.forget_program = self._opens.forget
        self._lock = threading.RLock()
        self._subs: list[Subscription] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler: Sampler | None = None
        self._sample_interval = sample_interval
        self._wake_r, self._wake_w = os.pipe()
        self._caught_up = threading.Condition()
        self._caught_up_ns = 0
        self._sync_waiters = 0
        self.events = 0
        self.overflows = 0
        self.reseeds = 0
        self._need_reseed = False
        self._resting = False
        self._wake_up = False
        self._wanted_at = time.monotonic()
        self.rest_after_s = REST_AFTER_S
        self.rest_check_ms = REST_CHECK_MS
        self._users: dict[int, str | None] = {}
        self._started_text: dict[int, str] = {}

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Seed the table from /proc and follow the events (subscribed first, so none is missed)."""
        with self._lock:
            self._table.seed("seed")
        if self._connector is not None:
            self._thread = threading.Thread(target=self._run, name="chaperone-lineage", daemon=True)
            self._thread.start()
        else:
            self._sampler = Sampler(self._table.reader, self._apply_batch, self._table.offset_ns,
                                    interval=self._sample_interval, wanted=self._wanted)
            self._sampler.start(set(self._table.live))

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sampler is not None:
            self._sampler.stop()
        if self._connector is not None:
            self._connector.close()
            self._connector = None
        if self._opens is not None:
            self._opens.close()
            self._opens = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        with self._caught_up:
            self._caught_up.notify_all()

    def _run(self) -> None:
        connector = self._connector
        assert connector is not None
        poller = select.poll()
        poller.register(connector.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        pause = select.poll()
        pause.register(self._wake_r, select.POLLIN)
        last_wake = 0.0
        while not self._stop.is_set():
            batch: list[ProcEvent] = []
            try:
                batch = connector.read_batch(BATCH)
            except EventsLost as lost:
                if self._opens is not None:
                    self._opens.drain()
                self._apply_batch(lost.events)
                self._lost()
                continue
            except OSError as exc:  # the socket itself failed: say so to subscribers, then sample
                self._apply_batch(batch)
                self._fail(exc)
                return
            if batch:
                if self._opens is not None:
                    self._opens.drain()
                self._apply_batch(batch)
                if len(batch) == BATCH:
                    continue
            if self._need_reseed:
                self._reseed()
            self._mark_caught_up()
            # Busy (events again within BUSY_S): let the next ones gather for COALESCE_MS instead of
            # waking for each, which costs more than the events themselves. A sync or stop request
            # ends the pause at once; a quiet reader wakes for the first event.
            busy = bool(batch) and time.monotonic() - last_wake < BUSY_S
            for fd, _ in (pause.poll(COALESCE_MS) if busy else poller.poll(self.rest_check_ms)):
                if fd == self._wake_r:
                    os.read(self._wake_r, 512)
            last_wake = time.monotonic()
            if not busy and self._should_rest():
                self._rest(connector, pause)

    @property
    def resting(self) -> bool:
        """Whether the kernel's events are paused now (nothing needed them for a while)."""
        return self._resting

    def _should_rest(self) -> bool:
        """Following every process costs CPU on a busy machine: with no subscriber and no technician's
        process alive for REST_AFTER_S, the kernel is asked to stop sending events."""
        if self._wanted():
            self._wanted_at = time.monotonic()
            return False
        return time.monotonic() - self._wanted_at > self.rest_after_s

    def _rest(self, connector: ProcConnector, pause: select.poll) -> None:
        connector.pause()
        with self._lock:
            self._resting = True
        self._apply_batch(connector.read_batch(1 << 20))  # what was sent before the pause
        while not self._stop.is_set():
            self._mark_caught_up()  # nothing to apply while resting
            for fd, _ in pause.poll():
                os.read(fd, 512)
            if self._wake_up:
                break
        connector.resume()
        if self._opens is not None:
            self._opens.discard()
        with self._lock:
            self._wake_up = False
            self._resting = False
            self._need_reseed = True  # the table is re-read from /proc before anything is answered
        self._wanted_at = time.monotonic()

    def _ensure_following(self) -> None:
        """Wake a resting reader and wait until the table is re-read (before a mark or a question)."""
        if self._resting:
            self._wake_up = True
            self._caught_up_ns = 0
            os.write(self._wake_w, b"w")
            deadline = time.monotonic() + 5.0
            while self._resting and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.001)
            self.sync(timeout=5.0)

    def _apply_batch(self, batch: list[ProcEvent]) -> None:
        if not batch:
            return
        out: list[LineageEvent] = []
        # A process whose exit is further on in this batch is gone already: its /proc is not read.
        exits = {event[2]: i for i, event in enumerate(batch) if event[0] == "exit"}
        with self._lock:
            self.events += len(batch)
            table = self._table
            subscribed = bool(self._subs)
            for i, event in enumerate(batch):
                table.gone_already = exits.get(event[2], -1) > i
                proc = table.apply(event)
                if proc is not None and subscribed and event.kind in ("fork", "exec", "exit"):
                    out.append(LineageEvent(event.kind, _view(proc)))
            subs = list(self._subs)
        for item in out:
            for sub in subs:
                sub.put(item)

    def _lost(self) -> None:
        self.overflows += 1
        self._need_reseed = True
        self._broadcast(LineageEvent("lost", count=self.overflows, wall=time.time()))

    def _reseed(self) -> None:
        self._need_reseed = False
        with self._lock:
            added, ended = self._table.seed("reseed")
            self.reseeds += 1
        self._broadcast(LineageEvent("reseed", count=added, ended=ended, wall=time.time()))

    def _fail(self, exc: OSError) -> None:
        self.why_sampled = f"the proc connector failed: {exc}."
        self.how = SAMPLED
        self._broadcast(LineageEvent("lost", count=self.overflows + 1, wall=time.time()))
        self._sampler = Sampler(self._table.reader, self._apply_batch, self._table.offset_ns,
                                interval=self._sample_interval, wanted=self._wanted)
        with self._lock:
            self._table.seed("reseed")
            known = set(self._table.live)
        self._sampler.start(known)

    def _wanted(self) -> bool:
        """Whether anything needs the events now: a subscriber (a session's capture), or a technician's
        process alive. Sampling runs only then, and the kernel's events rest after a while without."""
        return bool(self._subs) or any(p.label is not None for p in list(self._table.live.values()))

    def _broadcast(self, event: LineageEvent) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.put(event)

    def _mark_caught_up(self) -> None:
        self._caught_up_ns = time.monotonic_ns()
        if self._sync_waiters:
            with self._caught_up:
                self._caught_up.notify_all()

    def sync(self, timeout: float = 2.0) -> bool:
        """Wait until every event the kernel sent before this call is applied. False on timeout or
        when sampling (a sample is taken now instead)."""
        if self._sampler is not None:
            self._sampler.sample_now()
            return False
        if self._thread is None:
            return False
        asked = time.monotonic_ns()
        deadline = time.monotonic() + timeout
        os.write(self._wake_w, b"s")
        with self._caught_up:
            self._sync_waiters += 1
            try:
                while self._caught_up_ns <= asked and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._caught_up.wait(min(left, 0.05))
            finally:
                self._sync_waiters -= 1
        return self._caught_up_ns > asked

    # --- subscriptions -------------------------------------------------------------------------

    def subscribe(self, maxsize: int = 200_000, *, argv_of_all: bool = False) -> Subscription:
        """Fork/exec/exit events from now on. With ``argv_of_all``, every exec's command line is read
        (otherwise only a technician's: the customer's arguments are not read at all)."""
        self._ensure_following()
        sub = Subscription(self, maxsize)
        with self._lock:
            self._subs.append(sub)
            if argv_of_all:
                self._table.read_argv_of_all = True
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
            if not self._subs:
                self._table.read_argv_of_all = False

    def read_argv_of_all(self, value: bool) -> None:
        with self._lock:
            self._table.read_argv_of_all = value

    # --- questions -----------------------------------------------------------------------------

    def identify(self, pid: int) -> ProcessRef | None:
        """The process that has ``pid`` now, with its start time (None if there is none)."""
        stat = self._table.reader.stat(pid)
        return ProcessRef(pid, stat.start_ticks) if stat is not None else None

    def _find(self, pid: int, start_ticks: int | None) -> Proc | None:
        self._ensure_following()
        with self._lock:
            proc = self._table.find(pid, start_ticks)
        if proc is None:
            self.sync()
            with self._lock:
                proc = self._table.find(pid, start_ticks)
        return proc

    def owner(self, pid: int, start_ticks: int | None = None, *, fresh: bool = True) -> str | None:
        """The label of the technician lineage ``pid`` belongs to, or None (the customer's, or unknown).

        ``fresh`` (the default) first applies every event already sent, so a process forked or
        ptraced a moment ago is answered for correctly; the filesystem capture passes False."""
        if self._resting:
            return None  # it rests only while no technician's process is alive
        if fresh:
            self.sync()
        proc = self._find(pid, start_ticks)
        return proc.label if proc is not None else None

    def peek(self, pid: int) -> tuple[bool, str | None]:
        """(whether the table knows ``pid`` now, its label): no lock, no waiting, for a hot path that
        takes the slow way (:meth:`owner`) when the pid is not known."""
        proc = self._table.live.get(pid)  # (only living: a pid of the recently dead may be reused already)
        return (proc is not None, proc.label if proc is not None else None)

    def is_technician(self, pid: int, start_ticks: int | None = None) -> bool:
        """True for a process of any technician's lineage (see the module's docstring)."""
        return self.owner(pid, start_ticks) is not None

    def has_label(self, label: str) -> bool:
        with self._lock:
            state = self._table.labels.get(label)
            return bool(state and state.roots)

    def label_state(self, label: str) -> LabelState | None:
        with self._lock:
            return self._table.labels.get(label)

    def mark(self, pid: int, label: str, start_ticks: int | None = None) -> bool:
        """Make the process the root of ``label``'s lineage (with its living descendants). False if
        there is no such process (gone, or ``start_ticks`` names another one)."""
        if pid in (0, 1, 2, self._own_pid):
            raise ValueError(f"process {pid} cannot be a technician's login.")
        if pid in procfs.ancestors(self._own_pid):
            # The agent would be in the technician's lineage, and ending that lineage would stop the agent.
            raise ValueError(f"process {pid} started this agent; it cannot be a technician's login.")
        proc = self._find(pid, start_ticks)
        if proc is None or not proc.alive:
            return False
        with self._lock:
            if proc.sessionid is None:
                proc.loginuid, proc.sessionid = self._table.reader.audit_session(pid)
            self._table.mark(proc, label)
        return True

    def on_mount(self, mount) -> None:
        """A filesystem mounted now: programs run from it are named too."""
        if self._opens is not None and mount.fstype not in PSEUDO_FILESYSTEMS:
            with self._lock:
                self._opens.add_filesystem(mount)

    def mark_parent(self, pid: int, label: str, start_ticks: int | None = None) -> ProcessRef | None:
        """Mark the process that forked ``pid`` (for an SSH login: ``pid`` is ssh-authorize, which sshd
        runs from the login's own process, so the login is marked before its shell exists). Returns
        the marked process, or None if it is unknown or gone."""
        proc = self._find(pid, start_ticks)
        parent = proc.parent if proc is not None else None
        if parent is None or not parent.alive or parent.pid in {0, 1, 2, self._own_pid,
                                                                *procfs.ancestors(self._own_pid)}:
            return None
        return ProcessRef(parent.pid, parent.start_ticks) if self.mark(parent.pid, label, parent.start_ticks) else None

    def claim_unit(self, unit: str, label: str) -> None:
        """``unit`` is the technician's (they wrote or named it): processes it runs are theirs."""
        with self._lock:
            self._table.claim_unit(unit, label)

    def living(self, label: str) -> list[ProcessRef]:
        """The processes of ``label``'s lineage alive now (after applying the events already sent;
        a zombie, dead but not yet reaped by its parent, is not alive)."""
        self.sync()
        with self._lock:
            refs = [ProcessRef(p.pid, p.start_ticks) for p in self._table.living(label)]
        return [ref for ref in refs if self._running(ref)]

    def _running(self, ref: ProcessRef) -> bool:
        stat = self._table.reader.stat(ref.pid)
        return stat is not None and abs(stat.start_ticks - ref.start_ticks) <= 1 and stat.state not in ("Z", "X")

    def view(self, pid: int, start_ticks: int | None = None) -> ProcView | None:
        """A frozen view of the process as the table knows it now (no waiting for events)."""
        with self._lock:
            proc = self._table.find(pid, start_ticks)
            return _view(proc) if proc is not None else None

    def describe(self, pid: int, start_ticks: int | None = None, *, fresh: bool = False) -> dict | None:
        """The lineage of a process, for a record (None if unknown). ``fresh``: apply the events already
        sent first (a process that just exec'd is then named by its new program)."""
        if fresh:
            self.sync()
        proc = self._find(pid, start_ticks)
        if proc is None:
            return None
        with self._lock:
            return self.record_of(proc)

    def record_of(self, proc: Proc | ProcView, *, chain: int = 16) -> dict:
        """``pid``, ``exe``, ``user``, ``started``, ``technician``, ``label``, ``via``, ``chain`` (the
        forking ancestors, nearest first, at most ``chain``: ``pid``, ``exe``, ``started``) and ``how``."""
        links: list[dict] = []
        node = proc.parent
        while node is not None and len(links) < chain:
            links.append({"pid": node.pid, "exe": node.exe, "started": self.started(node.start_ns)})
            node = node.parent
        return {
            "pid": proc.pid,
            "exe": proc.exe,
            "user": self.user(proc.uid),
            "started": self.started(proc.start_ns),
            "technician": proc.label is not None,
            "label": proc.label,
            "via": proc.via,
            "chain": links,
            "how": self.how,
        }

    def started(self, start_ns: int) -> str:
        """A start time (CLOCK_MONOTONIC ns) as RFC 3339 (remembered: parents are named again and again)."""
        text = self._started_text.get(start_ns)
        if text is None:
            text = rfc3339_from_timestamp(procfs.wall_from_monotonic_ns(start_ns))
            if len(self._started_text) > 50_000:
                self._started_text.clear()
            self._started_text[start_ns] = text
        return text

    def user(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]

    def recent(self, within_s: float = 2.0, *, since_ns: int = 0) -> list[dict]:
        """Processes alive now or ended within ``within_s``, started after ``since_ns`` (CLOCK_MONOTONIC),
        newest first, as ``{"pid", "exe", "user", "technician", "label"}``: the candidates of a guess."""
        now = time.monotonic_ns()
        horizon = now - int(within_s * 1e9)
        with self._lock:
            procs = [p for p in (*self._table.live.values(), *self._table.recent.values())
                     if p.start_ns >= since_ns and p.pid != self._own_pid and (p.alive or (p.ended_ns or 0) >= horizon)]
        procs.sort(key=lambda p: p.start_ns, reverse=True)
        return [{"pid": p.pid, "exe": p.exe, "user": self.user(p.uid), "technician": p.label is not None,
                 "label": p.label} for p in procs[:64]]

    # --- ending --------------------------------------------------------------------------------

    def end_lineage(self, label: str, *, grace_s: float = 3.0, poll_s: float = 0.05) -> EndResult:
        """End every living process of ``label``'s lineage, detached ones included (see
        :func:`agent.capture.ending.end_processes`: all are stopped before any is killed, so none
        can fork away). ``survivors`` are those still alive after it: an alarm and a way back in."""
        spared = procfs.ancestors(self._own_pid) | {self._own_pid}  # never the agent, nor what started it
        return end_processes(lambda: [ref for ref in self.living(label) if ref.pid not in spared],
                             lambda ref: self.describe(ref.pid, ref.start_ticks) or {"pid": ref.pid},
                             grace_s=grace_s, poll_s=poll_s)

