"""Who changed a file: fanotify when the kernel allows it, else a labelled guess.

As root on Linux, ``fanotify`` reports each close-after-write with the writer's
pid (``attribution.how = "fanotify"``). ``FAN_MODIFY`` (every write) is left
out: the watcher records closes, each fanotify event costs an open file in the
reader, and under a burst the doubled event rate starved the inotify reader
until its queue overflowed (bench/RESULTS.md). Elsewhere, or when the kernel
refuses, :class:`GuessAttributor` names the newest process started during the
session that was alive around the change (``how = "guess"``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading
from collections import OrderedDict

import psutil

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100
FAN_CLOSE_WRITE = 0x8
FAN_Q_OVERFLOW = 0x4000
AT_FDCWD = -100
_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid


class FanotifyUnavailable(Exception):
    """fanotify cannot be used here; the message says why, in one sentence."""


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    return libc


def parse_events(buf: bytes) -> list[tuple[int, int, int]]:
    """``(mask, fd, pid)`` for each fanotify event in ``buf``."""
    events = []
    offset = 0
    while offset + _METADATA.size <= len(buf):
        event_len, _vers, _res, _meta_len, mask, fd, pid = _METADATA.unpack_from(buf, offset)
        if event_len < _METADATA.size:
            break
        events.append((mask, fd, pid))
        offset += event_len
    return events


def _process_info(pid: int) -> dict:
    info = {"pid": pid, "exe": None, "user": None}
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            info["user"] = proc.username()
            try:
                info["exe"] = proc.exe() or proc.name()
            except psutil.AccessDenied:
                info["exe"] = proc.name()
    except psutil.Error:
        pass
    return info


class FanotifyAttributor:
    """Remembers the last writer of each recently written file below the roots."""

    how = "fanotify"

    def __init__(self, roots: list[bytes], *, max_paths: int = 16_384):
        if not sys.platform.startswith("linux"):
            raise FanotifyUnavailable("fanotify exists only on Linux.")
        if os.geteuid() != 0:
            raise FanotifyUnavailable("fanotify needs root.")
        self._libc = _libc()
        fd = self._libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF, os.O_RDONLY | os.O_LARGEFILE)
        if fd < 0:
            raise FanotifyUnavailable(f"the kernel refused fanotify: {os.strerror(ctypes.get_errno())}.")
        self._fd = fd
        try:
            for root in roots:
                self._mark(root)
        except FanotifyUnavailable:
            os.close(fd)
            raise
        self._prefixes = tuple(r.rstrip(b"/") + b"/" for r in roots)
        self._roots = set(roots)
        self._writers: OrderedDict[bytes, int] = OrderedDict()
        self._max_paths = max_paths
        self._info: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._own_pid = os.getpid()
        self.overflows = 0
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="chaperone-fanotify", daemon=True)
        self._thread.start()

    def _mark(self, root: bytes) -> None:
        mask = FAN_CLOSE_WRITE
        for how in (FAN_MARK_FILESYSTEM, FAN_MARK_MOUNT):
            if self._libc.fanotify_mark(self._fd, FAN_MARK_ADD | how, mask, AT_FDCWD, root) == 0:
                return
        raise FanotifyUnavailable(f"the kernel refused to watch {os.fsdecode(root)!r}: {os.strerror(ctypes.get_errno())}.")

    def attribute(self, path: bytes) -> dict | None:
        with self._lock:
            pid = self._writers.get(path)
            if pid is None:
                return None
            info = self._info.get(pid)
        if info is None:
            info = _process_info(pid)
        return {**info, "how": self.how}

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                self._drain()
                return
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                buf = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return
            if not buf:
                return
            for mask, fd, pid in parse_events(buf):
                if mask & FAN_Q_OVERFLOW:
                    self.overflows += 1
                if fd < 0:
                    continue
                try:
                    path = os.readlink(f"/proc/self/fd/{fd}".encode())
                except OSError:
                    path = None
                finally:
                    os.close(fd)
                if path is not None and pid != self._own_pid and (path in self._roots or path.startswith(self._prefixes)):
                    self._remember(path, pid)

    def _remember(self, path: bytes, pid: int) -> None:
        with self._lock:
            self._writers[path] = pid
            self._writers.move_to_end(path)
            if len(self._writers) > self._max_paths:
                self._writers.popitem(last=False)
            if pid not in self._info:
                self._info[pid] = _process_info(pid)  # now, while the writer is likely alive
                if len(self._info) > 4096:
                    self._info.pop(next(iter(self._info)))


class GuessAttributor:
    """The newest process of the session alive around the change, labelled as a guess."""

    how = "guess"

    def __init__(self, sampler):
        self._sampler = sampler

    def attribute(self, path: bytes) -> dict | None:
        candidates = self._sampler.recent() if self._sampler is not None else []
        if not candidates:
            return None
        best = next((p for p in candidates if p.technician), candidates[0])
        return {"pid": best.pid, "exe": best.data.get("exe"), "user": best.data.get("user"), "how": self.how}

    def close(self) -> None:
        pass


def make_attributor(roots: list[bytes], sampler, *, prefer_fanotify: bool = True):
    """The best attributor available, and why fanotify is not used (or None)."""
    if prefer_fanotify:
        try:
            return FanotifyAttributor(roots), None
        except FanotifyUnavailable as exc:
            return GuessAttributor(sampler), str(exc)
    return GuessAttributor(sampler), "fanotify not requested."
