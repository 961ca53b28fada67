"""The lineage's fallback without the proc connector: sampling the process list (a guess).

Every ``interval`` the list of pids is compared with the previous one; a new
pid becomes a ``fork`` (from the parent it has *now*) and an ``exec`` event,
a vanished one an ``exit``. A process that lives less than one interval is
never seen, and one that detached before it was seen is attributed to its
new parent (init): records say ``how: "sampled"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

from agent.capture import procfs
from agent.capture.proc_connector import ProcEvent


class PsutilReader:
    """The lineage's view of a process through psutil, for systems without ``/proc``."""

    @staticmethod
    def stat(pid: int) -> procfs.Stat | None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                return procfs.Stat(pid, proc.name(), proc.status(), proc.ppid(), 0,
                                   int(proc.create_time() * procfs.CLK_TCK))
        except psutil.Error:
            return None

    @staticmethod
    def exe(pid: int) -> str | None:
        try:
            return psutil.Process(pid).exe() or None
        except psutil.Error:
            return None

    @staticmethod
    def cmdline(pid: int) -> list[str] | None:
        try:
            return psutil.Process(pid).cmdline()
        except psutil.Error:
            return None

    @staticmethod
    def ids(pid: int) -> tuple[int, int] | None:
        try:
            uids = psutil.Process(pid).uids()
            return uids.real, uids.effective
        except (psutil.Error, AttributeError):
            return None

    @staticmethod
    def audit_session(pid: int) -> tuple[int | None, int | None]:
        return None, None

    @staticmethod
    def unit(pid: int) -> str | None:
        return None

    @staticmethod
    def pids() -> list[int]:
        return psutil.pids()


class Sampler:
    """Feeds synthetic events to ``apply`` from a thread of its own."""

    def __init__(self, reader, apply: Callable[[list[ProcEvent]], None], offset_ns: int, *, interval: float = 0.1,
                 wanted: Callable[[], bool] = lambda: True):
        self._reader = reader
        self._apply = apply
        self._offset_ns = offset_ns
        self.interval = interval
        self._known: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self._wanted = wanted

    def start(self, known: set[int]) -> None:
        self._known = set(known)
        self._thread = threading.Thread(target=self._run, name="chaperone-lineage-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._wanted():
                self._stop.wait(1.0)  # idle: nobody needs it; what starts meanwhile is seen by the next sample
                continue
            try:
                self.sample_now()
            except Exception:  # noqa: BLE001 - a sampler must not die; the next tick tries again
                self.failures += 1

    def sample_now(self) -> None:
        with self._lock:
            now = set(self._reader.pids())
            new, gone = now - self._known, self._known - now
            self._known = now
            events: list[ProcEvent] = []
            stats = [s for s in (self._reader.stat(pid) for pid in new) if s is not None]
            for stat in sorted(stats, key=lambda s: (s.start_ticks, s.pid)):
                born = procfs.monotonic_ns_from_ticks(stat.start_ticks, self._offset_ns)
                events.append(ProcEvent("fork", stat.pid, stat.pid, born, parent_pid=stat.ppid, parent_tgid=stat.ppid))
                events.append(ProcEvent("exec", stat.pid, stat.pid, born))
                ids = self._reader.ids(stat.pid)
                if ids is not None:
                    events.append(ProcEvent("uid", stat.pid, stat.pid, born, real=ids[0], effective=ids[1]))
            ended = time.monotonic_ns()
            for pid in sorted(gone):
                events.append(ProcEvent("exit", pid, pid, ended))
            self._apply(events)
