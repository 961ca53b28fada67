"""The process table behind the lineage: who forked whom, and whose lineage each process is.

A :class:`Proc` is created by the kernel's fork event (or by seeding from
``/proc``) and keeps a reference to the process that forked it, so a
lineage is known by **fork history**, not by the current parent: a process
that detached (``setsid -f``, ``nohup``, a double fork, re-parented to init)
keeps the label it inherited at its fork, however short its life.

Invariants (each method keeps them):

- ``live`` holds one :class:`Proc` per living process (threads are not
  processes), keyed by pid; the kernel's exit event for a pid comes before
  the fork event that reuses it, so within the event stream a pid names one
  process at a time. Outside it, a caller names a process by (pid, start).
- A label, once given to a process, is never taken back or changed: a
  technician cannot make a process of theirs "the customer's" again.
- A process is labelled when it is marked as a root, when its forking
  process was labelled at the fork, or when another signal says it is a
  technician's (``via`` says which: ``mark``, ``fork``, ``session``,
  ``sessionid``, ``ptrace``, ``unit``, ``reseed``).
- ``recent`` keeps the last processes to exit (bounded), so a late question
  about a pid (a file event read after its writer exited) still finds it.

The table does no I/O of its own except through the :class:`ProcReader`
it is given, and takes no lock: :class:`agent.capture.lineage.Lineage`
serialises access.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.capture import procfs
from agent.capture.proc_connector import ProcEvent
from agent.capture.units import MANAGERS, is_service_manager, is_transient_run, units_started

RECENT_EXITED = 16_384
AUDIT_EVERY_NS = 500_000_000


class ProcReader(Protocol):
    """What the table reads from ``/proc`` (the real one in production, the same in tests)."""

    def stat(self, pid: int) -> procfs.Stat | None: ...
    def exe(self, pid: int) -> str | None: ...
    def cmdline(self, pid: int) -> list[str] | None: ...
    def ids(self, pid: int) -> tuple[int, int] | None: ...
    def audit_session(self, pid: int) -> tuple[int | None, int | None]: ...
    def unit(self, pid: int) -> str | None: ...
    def pids(self) -> list[int]: ...


class ProcfsReader:
    """:class:`ProcReader` over the real ``/proc``."""

    stat = staticmethod(procfs.read_stat)
    exe = staticmethod(procfs.read_exe)
    cmdline = staticmethod(procfs.read_cmdline)
    ids = staticmethod(procfs.read_ids)
    audit_session = staticmethod(procfs.read_audit_session)
    unit = staticmethod(procfs.read_unit)
    pids = staticmethod(procfs.list_pids)


class Proc:
    """One process as the lineage knows it (mutable; the table owns it)."""

    __slots__ = ("pid", "start_ticks", "parent", "ppid", "uid", "euid", "exe", "argv", "label", "via",
                 "alive", "ended_ns", "exit_code", "sid", "sessionid", "loginuid", "execs", "children", "source",
                 "start_ns")

    def __init__(self, pid: int, start_ticks: int, start_ns: int, parent: Proc | None, ppid: int, source: str):
        self.pid = pid
        self.start_ticks = start_ticks
        self.start_ns = start_ns  # CLOCK_MONOTONIC; exact for forks seen, tick-precise for seeded ones
        self.parent = parent  # the process that forked it (None when unknown: seeded, or the kernel's)
        self.ppid = ppid
        self.uid: int | None = parent.uid if parent else None
        self.euid: int | None = parent.euid if parent else None
        self.exe: str | None = parent.exe if parent else None  # a fork runs its parent's program until it execs
        self.argv: list[str] | None = None
        self.label: str | None = None
        self.via: str | None = None
        self.alive = True
        self.ended_ns: int | None = None
        self.exit_code: int | None = None
        self.sid: int | None = parent.sid if parent else None
        self.sessionid: int | None = parent.sessionid if parent else None
        self.loginuid: int | None = parent.loginuid if parent else None
        self.execs = 0
        self.children = 0
        self.source = source  # "fork" (seen by its event), "seed" (found in /proc), "reseed"

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start_ticks

    def same(self, start_ticks: int | None) -> bool:
        """Whether ``start_ticks`` names this process (an event's time may round one tick apart)."""
        return start_ticks is None or abs(self.start_ticks - start_ticks) <= 1

    def chain(self, limit: int = 32) -> list[Proc]:
        """The forking ancestors, nearest first (as far as the table knows them)."""
        out: list[Proc] = []
        node = self.parent
        while node is not None and len(out) < limit:
            out.append(node)
            node = node.parent
        return out


@dataclass
class LabelState:
    """What is known about one technician lineage (one label)."""

    label: str
    roots: list[tuple[int, int]] = field(default_factory=list)
    sessionids: set[int] = field(default_factory=set)
    sids: dict[int, int] = field(default_factory=dict)  # session leader pid -> its start ticks
    units: set[str] = field(default_factory=set)
    runs: set[tuple[int, int]] = field(default_factory=set)  # its systemd-run processes alive now
    audit_asked_ns: int = 0


def manager_command(exe: str | None, argv: list[str] | None) -> list[str] | None:
    """The ``systemctl``/``systemd-run``/``service`` command line in an exec, if it is one: by the
    program run (whatever ``argv[0]`` claims), or by the script an interpreter runs (``service``)."""
    if not argv:
        return None
    if exe and os.path.basename(exe) in MANAGERS:
        return [os.path.basename(exe), *argv[1:]]
    for i in (0, 1):
        if i < len(argv) and os.path.basename(argv[i]) in MANAGERS:
            return [os.path.basename(argv[i]), *argv[i + 1:]]
    return None


class ProcessTable:
    def __init__(self, reader: ProcReader | None = None, *, own_pid: int = 0, offset_ns: int = 0,
                 recent: int = RECENT_EXITED):
        self.reader: ProcReader = reader or ProcfsReader()
        self.live: dict[int, Proc] = {}
        self.recent: OrderedDict[int, Proc] = OrderedDict()
        self.labels: dict[str, LabelState] = {}
        self.reapers: set[int] = {1}  # pids that adopted a technician's orphan (pid 1 always may)
        self.own_pid = own_pid
        self.offset_ns = offset_ns
        self._recent_max = recent
        self.read_argv_of_all = False
        self.gone_already = False  # set by the reader: the event's process has exited (later in its batch)
        self.exec_program: Callable[[int], str | None] | None = None  # what the exec opened (fanotify)
        self.forget_program: Callable[[int], None] = lambda pid: None

    # --- lookups -------------------------------------------------------------------------------

    def find(self, pid: int, start_ticks: int | None = None) -> Proc | None:
        """The living process ``pid`` (or the last one to exit with it), if it is the one meant."""
        proc = self.live.get(pid)
        if proc is not None and proc.same(start_ticks):
            return proc
        proc = self.recent.get(pid)
        if proc is not None and proc.same(start_ticks):
            return proc
        return None

    def label_of_session(self, proc: Proc) -> str | None:
        """The label whose login session (audit sessionid, or Unix session) ``proc`` belongs to."""
        for state in self.labels.values():
            if proc.sessionid is not None and proc.sessionid in state.sessionids:
                return state.label
            leader_start = state.sids.get(proc.sid) if proc.sid is not None else None
            if leader_start is not None:
                # a session's number stays taken while any process is in it; if its leader is alive it
                # must be the technician's one, not a later process that reused the pid
                leader = self.live.get(proc.sid) if proc.sid is not None else None
                if leader is None or leader.same(leader_start):
                    return state.label
        return None

    def living(self, label: str) -> list[Proc]:
        return [p for p in self.live.values() if p.label == label]

    # --- marking -------------------------------------------------------------------------------

    def mark(self, proc: Proc, label: str) -> int:
        """Make ``proc`` the root of ``label``'s lineage, with its living descendants. Returns how
        many processes were labelled now."""
        state = self.labels.setdefault(label, LabelState(label))
        if proc.key not in state.roots:
            state.roots.append(proc.key)
        count = self._label(proc, label, "mark")
        # What it forked before the mark: the living, and those that already exited (their records
        # are still to be written, e.g. a second login's first commands before its root was marked).
        for other in (*self.live.values(), *self.recent.values()):
            if other.label is None and any(a is proc for a in other.chain(limit=256)):
                count += self._label(other, label, "fork")
                if other.alive and other.argv is None and other.execs:
                    other.argv = self.reader.cmdline(other.pid) or None
        return count

    def _label(self, proc: Proc, label: str, via: str) -> int:
        if proc.label is not None:
            return 0
        proc.label = label
        proc.via = via
        state = self.labels.setdefault(label, LabelState(label))
        if proc.sessionid is not None:
            state.sessionids.add(proc.sessionid)
        if proc.sid == proc.pid:
            state.sids[proc.pid] = proc.start_ticks
        return 1

    # --- events --------------------------------------------------------------------------------

    def apply(self, event: ProcEvent) -> Proc | None:
        """Apply one kernel event; returns the process it concerns (None for threads and strays)."""
        kind, pid, tgid = event[0], event[1], event[2]
        if pid != tgid:
            return None  # a thread
        if kind == "fork":
            return self._fork(event)
        proc = self.live.get(tgid)
        if proc is None:
            if kind == "exit":
                return None
            proc = self._revive(event.tgid) or self._adopt_unknown(event.tgid)
            if proc is None:
                return None
        if kind == "exec":
            self._exec(proc)
        elif kind == "exit":
            self._exit(proc, event)
        elif kind == "uid":
            proc.uid, proc.euid = event.real, event.effective
        elif kind == "sid":
            proc.sid = proc.pid
            if proc.label is not None:
                self.labels[proc.label].sids[proc.pid] = proc.start_ticks
        elif kind == "ptrace" and event.parent_tgid:
            tracer = self.live.get(event.parent_tgid)
            if tracer is not None and tracer.label is not None and proc.label is None:
                self._label(proc, tracer.label, "ptrace")  # its memory is the technician's to change now
        return proc

    def _fork(self, event: ProcEvent) -> Proc:
        parent = self.live.get(event.parent_tgid) or self._revive(event.parent_tgid)
        start_ticks = procfs.ticks_from_monotonic_ns(event.timestamp_ns, self.offset_ns)
        old = self.live.pop(event.tgid, None)
        if old is not None and old.source != "fork" and old.same(start_ticks):
            # found in /proc by seeding before its fork event was applied: the same process
            self.live[old.pid] = old
            if old.parent is None and parent is not None:
                old.parent = parent
                if parent.label is not None:
                    self._label(old, parent.label, "fork")
            return old
        if old is not None:  # its exit was lost (overflow): it is gone, since the pid is reused
            self._gone(old, event.timestamp_ns, None)
        proc = Proc(event.tgid, start_ticks, event.timestamp_ns, parent, event.parent_tgid, "fork")
        self.live[proc.pid] = proc
        if parent is not None:
            parent.children += 1
            if parent.label is not None:
                self._label(proc, parent.label, "fork")
        if proc.label is None and self.labels and event.parent_tgid in self.reapers:
            self._check_session(proc)
        return proc

    def _check_session(self, proc: Proc) -> None:
        """A process forked by a reaper while technicians are known: the reaper may only be its
        *official* parent (``clone(CLONE_PARENT)`` from an orphan names the orphan's reaper), so ask
        the process itself which sessions it inherited from whoever really forked it."""
        stat = self.reader.stat(proc.pid)
        if stat is None or not proc.same(stat.start_ticks):
            return
        proc.sid = stat.sid
        proc.loginuid, proc.sessionid = self.reader.audit_session(proc.pid)
        label = self.label_of_session(proc)
        if label is not None:
            self._label(proc, label, "session")

    def _exec(self, proc: Proc) -> None:
        proc.execs += 1
        program = self.exec_program(proc.pid) if self.exec_program is not None else None
        gone = self.gone_already
        proc.exe = program or (None if gone else self.reader.exe(proc.pid))
        if (proc.label is not None or self.read_argv_of_all) and not gone:
            proc.argv = self.reader.cmdline(proc.pid) or None  # empty: it has exited already
        else:
            proc.argv = None
        if proc.label is not None:
            state = self.labels[proc.label]
            # The login's audit session, once pam_loginuid has set it (after the login was marked);
            # children inherit it from then on, so asking twice a second is enough.
            if proc.sessionid is None and not gone and proc.start_ns - state.audit_asked_ns > AUDIT_EVERY_NS:
                state.audit_asked_ns = proc.start_ns
                loginuid, sessionid = self.reader.audit_session(proc.pid)
                if sessionid is not None:
                    proc.loginuid, proc.sessionid = loginuid, sessionid
                    state.sessionids.add(sessionid)
            command = manager_command(proc.exe, proc.argv)
            if command:
                named, transient = units_started(command)
                state.units |= named
                if transient:
                    state.runs.add(proc.key)
        elif proc.parent is not None and is_service_manager(proc.parent.exe, proc.parent.pid) and self._units_pending():
            self._match_unit(proc)

    def _units_pending(self) -> bool:
        return any(state.units or state.runs for state in self.labels.values())

    def _match_unit(self, proc: Proc) -> None:
        """A process the service manager started: the technician's if its unit is one of theirs."""
        unit = self.reader.unit(proc.pid)
        if unit is None:
            return
        for state in self.labels.values():
            if unit in state.units or (state.runs and is_transient_run(unit)):
                state.units.add(unit)
                self._label(proc, state.label, "unit")
                return

    def claim_unit(self, unit: str, label: str) -> None:
        """``unit`` is the technician's (e.g. they wrote its file): its processes are theirs."""
        self.labels.setdefault(label, LabelState(label)).units.add(unit)

    def _exit(self, proc: Proc, event: ProcEvent) -> None:
        del self.live[proc.pid]
        if self.exec_program is not None:
            self.forget_program(proc.pid)
        self._gone(proc, event.timestamp_ns, event.exit_code)
        if proc.label is not None:
            self.labels[proc.label].runs.discard(proc.key)
        if proc.label is not None and proc.children:
            self._learn_reapers(proc)

    def _gone(self, proc: Proc, when_ns: int, exit_code: int | None) -> None:
        proc.alive = False
        proc.ended_ns = when_ns
        proc.exit_code = exit_code
        self.recent[proc.pid] = proc
        self.recent.move_to_end(proc.pid)
        while len(self.recent) > self._recent_max:
            self.recent.popitem(last=False)

    def _learn_reapers(self, proc: Proc) -> None:
        """The technician's orphans are re-parented now: remember who adopts them (init, or a
        subreaper), whose forks are then checked for an inherited technician session."""
        for child in self.live.values():
            if child.parent is proc:
                stat = self.reader.stat(child.pid)
                if stat is not None and child.same(stat.start_ticks) and stat.ppid != proc.pid:
                    self.reapers.add(stat.ppid)

    def _revive(self, pid: int) -> Proc | None:
        """A process whose main thread exited while its other threads go on: the kernel sent its exit
        event, but it still forks and execs. The pid cannot have been reused while it lives."""
        proc = self.recent.get(pid)
        if proc is None:
            return None
        stat = self.reader.stat(pid)
        if stat is None or not proc.same(stat.start_ticks):
            return None
        del self.recent[pid]
        proc.alive, proc.ended_ns, proc.exit_code = True, None, None
        self.live[pid] = proc
        return proc

    def _adopt_unknown(self, pid: int) -> Proc | None:
        stat = self.reader.stat(pid)
        if stat is None:
            return None
        return self._add_from_stat(stat, "reseed")

    # --- seeding -------------------------------------------------------------------------------

    def _add_from_stat(self, stat: procfs.Stat, source: str) -> Proc:
        parent = self.live.get(stat.ppid)
        start_ns = procfs.monotonic_ns_from_ticks(stat.start_ticks, self.offset_ns)
        proc = Proc(stat.pid, stat.start_ticks, start_ns, parent, stat.ppid, source)
        proc.sid = stat.sid
        ids = self.reader.ids(stat.pid)
        if ids is not None:
            proc.uid, proc.euid = ids
        proc.exe = self.reader.exe(stat.pid)
        proc.loginuid, proc.sessionid = self.reader.audit_session(stat.pid)
        self.live[stat.pid] = proc
        if parent is not None and parent.label is not None:
            self._label(proc, parent.label, "fork" if source == "seed" else "reseed")
        elif self.labels:
            label = self.label_of_session(proc)
            if label is not None:
                self._label(proc, label, "sessionid" if proc.sessionid is not None else "session")
        return proc

    def seed(self, source: str = "seed") -> tuple[int, int]:
        """Bring the table in line with ``/proc``: processes that are gone are ended, those not known
        are added (parents first). Labels already given stay. Returns (added, ended)."""
        stats = {}
        for pid in self.reader.pids():
            stat = self.reader.stat(pid)
            if stat is not None and stat.pid == pid:
                stats[pid] = stat
        ended = 0
        for pid, proc in list(self.live.items()):
            stat = stats.get(pid)
            if stat is None or not proc.same(stat.start_ticks):
                del self.live[pid]
                self._gone(proc, proc.start_ns, None)
                ended += 1
        added = 0
        for stat in sorted(stats.values(), key=lambda s: (s.start_ticks, s.pid)):
            if stat.pid not in self.live:
                self._add_from_stat(stat, source)
                added += 1
        for proc in self.live.values():  # link parents that came later in the start order
            if proc.parent is None and proc.ppid in self.live and self.live[proc.ppid] is not proc:
                proc.parent = self.live[proc.ppid]
        return added, ended
