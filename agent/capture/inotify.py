"""Everything that knows watchdog's internals: the one file to re-read on a watchdog upgrade.

:class:`EventSource` turns the kernel's inotify events below the watched roots
into :class:`~agent.capture.bursts.Op` objects on a queue, limited to created,
deleted, moved and closed-after-write events (DESIGN.md: the unfiltered 4-6
events per write overflow the kernel queue under a burst). On Linux it reads
the inotify descriptor itself: one thread, a subclass of watchdog's
``InotifyFD`` (its descriptor, its stop pipe and its poller, and its
``inotify_add_watch``/``inotify_rm_watch`` bindings and their errors), that
reads up to 1 MiB of events at a time, parses them in one pass
(:mod:`agent.capture.inotify_events`) and queues an ``Op`` per operation, with
no event object in between: watchdog's own reader, move grouper and emitter
cost about 30 µs an event, three quarters of the capture's CPU in a burst.
A kernel queue overflow (``IN_Q_OVERFLOW``) becomes an :class:`Overflow` item
on the same queue. Elsewhere, the platform's observer.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import queue
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from agent.capture import inotify_events as ev
from agent.capture.bursts import Op

EVENT_FILTER = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
]
KERNEL_QUEUE_EVENTS = 524_288  # our inotify instance's queue, when we may set it (root on Linux); 0: leave it
MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")
WATCH_MASK = (ev.IN_CREATE | ev.IN_DELETE | ev.IN_MOVED_FROM | ev.IN_MOVED_TO | ev.IN_CLOSE_WRITE
              | ev.IN_DELETE_SELF | ev.IN_DONT_FOLLOW)
READ_BYTES = 1 << 20  # one read: up to about 30,000 events
MOVE_WAIT_S = 0.5  # how long a move's first half waits for its second (watchdog's figure) before it is a move out
READ_PAUSE_S = 0.01  # after a read, let the next events gather: a burst is read in hundreds, not threes
DRAIN_READS = 64  # at stop, at most this many last reads of what the kernel queued
_sysctl_lock = threading.Lock()


@contextlib.contextmanager
def inotify_queue_size(size: int, *, only_raise: bool = True):
    """Make the inotify instances created inside this block get a kernel queue of ``size`` events.

    The kernel reads ``fs.inotify.max_queued_events`` once, when an instance is
    made, so the setting is changed around that moment and put back. Every
    Chaperone process takes the same lock (a ``flock`` on the setting's file)
    so that two of them never put back each other's value. Without the right
    to write it (not root, not Linux), nothing changes.
    """
    try:
        lock_fd = os.open(MAX_QUEUED_EVENTS, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with _sysctl_lock:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            saved = _read_int(MAX_QUEUED_EVENTS)
            changed = False
            if saved is not None and (size > saved or (not only_raise and size != saved)):
                with contextlib.suppress(OSError):
                    MAX_QUEUED_EVENTS.write_text(str(size))
                    changed = True
            try:
                yield
            finally:
                if changed:
                    MAX_QUEUED_EVENTS.write_text(str(saved))
    finally:
        os.close(lock_fd)  # closing releases the flock


def deep_kernel_queue():
    """A deep queue for our inotify instance: it absorbs a burst while our reader is starved of CPU
    (16,384 events, the usual default, last about half a second of a fast burst). Overflows that
    still happen are answered by rescans. ``KERNEL_QUEUE_EVENTS = 0`` leaves the setting alone."""
    if KERNEL_QUEUE_EVENTS <= 0:
        return contextlib.nullcontext()
    return inotify_queue_size(KERNEL_QUEUE_EVENTS)


def died(thread: threading.Thread | None) -> bool:
    """Whether ``thread`` was started and has ended. One not started yet has not died: a health check that
    runs while capture is starting must not take it for dead (and fail the session closed)."""
    return thread is not None and thread.ident is not None and not thread.is_alive()


class EventSource:
    """The kernel's file events below the scheduled roots, as :class:`Op` objects on one queue.

    On Linux, one reader thread of our own (see the module's docstring); a
    kernel queue overflow is an :class:`Overflow` item per root. Elsewhere, the
    platform's observer with a handler that queues.
    """

    def __init__(self, events: queue.SimpleQueue):
        self._events = events
        self._watches: dict[bytes, object] = {}
        try:
            reader_class = _reader_class()
        except ImportError:  # not Linux
            from watchdog.observers import Observer

            self._reader = None
            self._observer = Observer()
            self._handler = _QueueingHandler(events)
        else:
            with deep_kernel_queue():
                self._reader = reader_class(events)

    def schedule(self, root: bytes) -> None:
        """Watch ``root`` recursively; raises OSError when the root itself cannot be watched."""
        if self._reader is None:
            # watchdog takes a bytes path (and then reports bytes paths); its annotation says str
            self._watches[root] = self._observer.schedule(
                self._handler, root, recursive=True, event_filter=EVENT_FILTER)  # type: ignore[arg-type]
            return
        self._reader.watch_root(root)

    def unschedule(self, root: bytes) -> None:
        """Stop watching ``root`` and everything below it."""
        if self._reader is None:
            watch = self._watches.pop(root, None)
            if watch is not None:
                self._observer.unschedule(watch)  # type: ignore[arg-type]
            return
        self._reader.unwatch(root)

    def start(self) -> None:
        if self._reader is None:
            self._observer.start()
        else:
            self._reader.start()

    def stop(self) -> None:
        """Stop reading; once this returns, every event read is in the queue."""
        if self._reader is None:
            self._observer.stop()
            self._observer.join()
            return
        self._reader.stop()
        if self._reader.ident is not None:
            self._reader.join()

    def dead_threads(self) -> list[str]:
        """The reader threads that were started and have died (a dead one means lost events)."""
        if self._reader is None:
            return ["file observer"] if died(self._observer) else []
        return ["inotify reader"] if died(self._reader) else []

    def watched_inodes(self) -> set[int] | None:
        """Inode numbers of the folders inotify watches, from /proc/self/fdinfo (None when not known)."""
        fd = getattr(self._reader, "_inotify_fd", None)
        if not isinstance(fd, int):
            return None
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            return None
        inodes = set()
        for line in text.splitlines():
            if line.startswith("inotify wd:"):
                for part in line.split():
                    if part.startswith("ino:"):
                        inodes.add(int(part[4:], 16))
        return inodes


@dataclass(frozen=True)
class Overflow:
    """The kernel's event queue overflowed below ``root``: its events were lost, rescan it."""

    root: bytes


class _QueueingHandler(FileSystemEventHandler):
    def __init__(self, events: queue.SimpleQueue):
        self._events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        op = to_op(event)
        if op is not None:
            self._events.put(op)


@functools.cache
def _reader_class():
    """Our inotify reader: watchdog's ``InotifyFD`` with its ``run`` replaced. Linux only (ImportError elsewhere)."""
    from watchdog.observers.inotify_c import InotifyFD, inotify_add_watch, inotify_rm_watch

    class Reader(InotifyFD):
        """Reads the descriptor in large batches and queues an ``Op`` per operation, in the kernel's order.

        It maps each watch descriptor to its folder (as ``folder + b"/"``) and
        keeps that map true: a new folder is watched at once, with everything
        below it, and what the listing found there is reported as created (a
        creation the kernel reports as well, because the watch came first, is
        reported once); a folder moved within the tree keeps its watches under
        the new name; a folder moved out loses them. A move's two halves share
        a cookie: the first waits up to ``MOVE_WAIT_S`` for the second (then it
        is a move out), and the operations after it wait with it, so the queue
        keeps the kernel's order.
        """

        def __init__(self, events: queue.SimpleQueue):
            super().__init__()
            self.name = "chaperone-inotify"
            self._events = events
            self._roots: dict[bytes, bytes] = {}  # folder (no trailing slash) -> the root as scheduled
            self._prefix: dict[int, bytes] = {}  # wd -> its folder + b"/"
            self._wds: dict[bytes, int] = {}  # folder -> wd
            self._maps_lock = threading.Lock()
            self._held: list[Op] = []  # operations behind a move that waits for its second half
            self._waiting: dict[int, tuple[Op, float]] = {}  # cookie -> the move's first half, its deadline
            self._fresh: set[bytes] = set()  # paths a listing reported as created, before their own event

        # -- watches (the reader thread, or before it starts) -------------------

        def watch_root(self, root: bytes) -> None:
            folder = _folder(root)
            with self._maps_lock:
                self._watch_tree(folder, None, root_must=True)
                self._roots[folder] = root

        def unwatch(self, top: bytes) -> None:
            with self._maps_lock:
                self._forget_tree(_folder(top), remove=True)

        def _add_watch(self, folder: bytes) -> int | None:
            wd = inotify_add_watch(self._inotify_fd, folder, WATCH_MASK)
            if wd == -1:
                InotifyFD._raise_error()  # OSError, except for EACCES: not watched, the audit says so
                return None
            old = self._prefix.get(wd)
            if old is not None and old != _prefix(folder):  # the same folder under another name: a move
                self._wds.pop(_folder(old), None)
            self._prefix[wd] = _prefix(folder)
            self._wds[folder] = wd
            return wd

        def _watch_tree(self, top: bytes, found: list[Op] | None, *, root_must: bool = False) -> None:
            """Watch ``top`` and every folder below it, each before it is listed; ``found`` gets what the
            listings hold, as created."""
            stack = [top]
            while stack:
                folder = stack.pop()
                try:
                    self._add_watch(folder)
                except OSError:
                    if root_must and folder == top:
                        raise
                    continue  # gone meanwhile, or the watch limit: the audit finds unwatched folders
                try:
                    with os.scandir(folder) as entries:
                        for entry in entries:
                            is_dir = entry.is_dir(follow_symlinks=False)
                            path = entry.path
                            if found is not None:
                                found.append(Op("created", path, is_dir))
                                self._fresh.add(path)
                            if is_dir:
                                stack.append(path)
                except OSError:
                    continue

        def _forget_tree(self, top: bytes, *, remove: bool) -> None:
            below = top + b"/"
            for folder in [f for f in self._wds if f == top or f.startswith(below)]:
                wd = self._wds.pop(folder)
                self._prefix.pop(wd, None)
                if remove:
                    inotify_rm_watch(self._inotify_fd, wd)  # type: ignore[arg-type]  # a WatchDescriptor is an int

        def _move_tree(self, src: bytes, dest: bytes) -> bool:
            """Rename the watches of ``src`` and below to ``dest``; whether ``src`` was watched."""
            if src not in self._wds:
                return False
            below = src + b"/"
            for folder in [f for f in self._wds if f == src or f.startswith(below)]:
                wd = self._wds.pop(folder)
                moved = dest + folder[len(src):]
                self._wds[moved] = wd
                self._prefix[wd] = _prefix(moved)
            return True

        # -- reading ------------------------------------------------------------

        def run(self) -> None:
            poller = select.poll()
            poller.register(self._inotify_fd, select.POLLIN)
            poller.register(self._kill_r, select.POLLIN)
            pause = select.poll()  # only the stop pipe: a pause that a stop ends at once
            pause.register(self._kill_r, select.POLLIN)
            rest = b""
            try:
                while not self._closed:
                    timeout = None
                    if self._waiting:
                        timeout = max(0.0, min(d for _, d in self._waiting.values()) - time.monotonic()) * 1000
                    if any(fd == self._inotify_fd for fd, _ in poller.poll(timeout)) and not self._closed:
                        rest = self._take(rest + os.read(self._inotify_fd, READ_BYTES))
                        if self._fresh and not poller.poll(0):
                            self._fresh.clear()  # every event queued before the listings is read
                        self._release(time.monotonic())
                        pause.poll(READ_PAUSE_S * 1000)
                    else:
                        self._release(time.monotonic())
                for _ in range(DRAIN_READS):  # stopping: what the kernel queued until now
                    if not any(fd == self._inotify_fd for fd, _ in poller.poll(0)):
                        break
                    rest = self._take(rest + os.read(self._inotify_fd, READ_BYTES))
                self._release(float("inf"))
            finally:
                self._close_resources()

        def on_thread_stop(self) -> None:
            self.close()  # watchdog's: sets _closed and wakes run() through the stop pipe
            if self.ident is None:  # never started: nobody else will close them
                self._close_resources()

        def _take(self, buf: bytes) -> bytes:
            """Queue the operations of the events in ``buf``; the incomplete rest of ``buf``."""
            events, end = ev.parse_events(buf)
            out = self._held
            fresh = self._fresh
            with self._maps_lock:
                prefixes = self._prefix
                for wd, mask, cookie, name in events:
                    prefix = prefixes.get(wd)
                    if prefix is None:
                        if mask & ev.IN_Q_OVERFLOW:
                            self._overflowed(out)
                        continue  # a watch removed meanwhile, or an event without a watch
                    if mask & ev.IN_CLOSE_WRITE:
                        if not mask & ev.IN_ISDIR:
                            out.append(Op("modified", prefix + name))
                    elif mask & ev.IN_CREATE:
                        path = prefix + name
                        if fresh and path in fresh:
                            fresh.discard(path)  # a listing reported it already
                            continue
                        is_dir = bool(mask & ev.IN_ISDIR)
                        out.append(Op("created", path, is_dir))
                        if is_dir:
                            self._watch_tree(path, out)
                    elif mask & ev.IN_DELETE:
                        path = prefix + name
                        if fresh:
                            fresh.discard(path)
                        out.append(Op("deleted", path, bool(mask & ev.IN_ISDIR)))
                    elif mask & ev.IN_MOVED_FROM:
                        path = prefix + name
                        if fresh:
                            fresh.discard(path)
                        op = Op("deleted", path, bool(mask & ev.IN_ISDIR), via="move-out")
                        self._waiting[cookie] = (op, time.monotonic() + MOVE_WAIT_S)
                        out.append(op)
                    elif mask & ev.IN_MOVED_TO:
                        self._moved_in(prefix + name, bool(mask & ev.IN_ISDIR), cookie, out)
                    elif mask & ev.IN_IGNORED:
                        folder = _folder(prefixes.pop(wd))
                        if self._wds.get(folder) == wd:
                            del self._wds[folder]
                    elif mask & ev.IN_DELETE_SELF:
                        root = self._roots.get(_folder(prefix))
                        if root is not None:  # below a root, the parent's IN_DELETE says it
                            out.append(Op("deleted", root, True))
            if not self._waiting:
                put = self._events.put
                for op in out:
                    put(op)
                out.clear()
            return buf[end:]

        def _moved_in(self, path: bytes, is_dir: bool, cookie: int, out: list[Op]) -> None:
            waited = self._waiting.pop(cookie, None)
            if waited is None:
                if self._fresh and path in self._fresh:
                    self._fresh.discard(path)
                    return
                out.append(Op("created", path, is_dir, via="move-in"))
                if is_dir:
                    self._watch_tree(path, out)
                return
            first = waited[0]
            src = first.path
            first.op, first.via, first.dest = "moved", None, path  # at the place of its first half
            if not is_dir:
                return
            if self._move_tree(src, path):
                for folder, dirs, names in os.walk(path):
                    for name in dirs + names:
                        sub = os.path.join(folder, name)
                        out.append(Op("moved", src + sub[len(path):], name in dirs, dest=sub))
            else:  # its creation was not read yet when it moved: watch it now
                self._watch_tree(path, out)

        def _overflowed(self, out: list[Op]) -> None:
            """Events were lost: watch the folders that appeared meanwhile, then have every root rescanned."""
            for folder, root in self._roots.items():
                if folder in self._wds:
                    self._watch_tree(folder, None)
                out.append(Overflow(root))  # type: ignore[arg-type]  # the queue carries both

        def _release(self, now: float) -> None:
            """Queue the held operations up to the first move still waiting for its second half."""
            for cookie, (op, deadline) in list(self._waiting.items()):
                if deadline <= now:
                    del self._waiting[cookie]
                    if op.is_dir:
                        with self._maps_lock:
                            self._forget_tree(op.path, remove=True)
            if not self._held:
                return
            waiting = {id(op) for op, _ in self._waiting.values()}
            put = self._events.put
            for n, op in enumerate(self._held):
                if id(op) in waiting:
                    del self._held[:n]
                    return
                put(op)
            self._held.clear()

    return Reader


def _prefix(folder: bytes) -> bytes:
    return folder if folder.endswith(b"/") else folder + b"/"


def _folder(path: bytes) -> bytes:
    return path.rstrip(b"/") or b"/"


_OPS = {
    FileCreatedEvent: "created",
    DirCreatedEvent: "created",
    FileDeletedEvent: "deleted",
    DirDeletedEvent: "deleted",
    FileClosedEvent: "modified",
    FileMovedEvent: "moved",
    DirMovedEvent: "moved",
}


def to_op(event: FileSystemEvent) -> Op | None:
    """The operation a filtered watchdog event stands for (None for events we do not record)."""
    op = _OPS.get(type(event))
    if op is None:
        return None
    src = _raw(event.src_path)
    if op == "moved":
        dest = _raw(event.dest_path)
        if not src:
            return Op("created", dest, event.is_directory, via="move-in")
        if not dest:
            return Op("deleted", src, event.is_directory, via="move-out")
        return Op("moved", src, event.is_directory, dest=dest)
    return Op(op, src, event.is_directory)


def _raw(path: bytes | str) -> bytes:
    return path if isinstance(path, bytes) else os.fsencode(path)


def _read_int(path: str | Path) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
