"""Processes started during the session, sampled with psutil.

Each tick compares the set of pids (one ``/proc`` listing, cheap) with the
previous one and queries details only for the new pids, so a short interval
(100 ms by default, see bench/RESULTS.md) catches processes that live 200 ms or
more. Processes that existed before the session are the baseline, not records.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from agent.redact import Redactor, default_redactor

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

    def __init__(self, sink, *, technician_pids: TechnicianPids | None = None, interval: float = 0.1,
                 redactor: Redactor | None = None):
        self._sink = sink
        self._redactor = redactor or default_redactor()
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
        info = _describe(pid, self._redactor)
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


def _describe(pid: int, redactor: Redactor) -> dict:
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
    info["cmdline"] = redactor.redact_cmdline(list(info["cmdline"] or []))
    if info["exe"]:
        info["exe"] = redactor.hide_known(info["exe"])
    return info
