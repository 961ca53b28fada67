"""Everything that knows watchdog's internals: the one file to re-read on a watchdog upgrade.

:class:`EventSource` turns the kernel's inotify events below the watched roots
into :class:`~agent.capture.bursts.Op` objects on a queue, limited to created,
deleted, moved and closed-after-write events (DESIGN.md: the unfiltered 4-6
events per write overflow the kernel queue under a burst). On Linux it drives
watchdog's inotify emitters directly (its ``InotifyFD``, ``InotifyFullEmitter``
and ``PathedInotifyEvent``, and the private ``_inotify_fd``): their observer
thread would add a hop and a lock per event. watchdog reports a kernel queue
overflow only in its log: :class:`OverflowLogHandler` turns that line into an
:class:`Overflow` item on the same queue. Elsewhere, the platform's observer.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import queue
import threading
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
WATCHDOG_LOGGERS = ("watchdog.observers.inotify", "watchdog.observers.inotify_c")
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


class EventSource:
    """watchdog emitters feeding one queue with :class:`Op` objects.

    On Linux the inotify emitters put their operations straight into our queue:
    watchdog's observer thread and its de-duplicating queue would add a thread
    hop and a lock per event, which a burst of 100,000 operations feels. Unpaired
    moves are reported as moves (in or out of the tree). Elsewhere, the
    platform's observer with a handler that queues.
    """

    def __init__(self, events: queue.SimpleQueue):
        self._events = events
        self._emitters: list = []
        try:
            from watchdog.observers.inotify_c import InotifyFD
        except ImportError:  # not Linux
            from watchdog.observers import Observer

            self._inotify = None
            self._observer = Observer()
            self._handler = _QueueingHandler(events)
        else:
            with deep_kernel_queue():
                self._inotify = InotifyFD()
            self._inotify.start()

    def schedule(self, root: bytes) -> None:
        """Watch ``root`` recursively; raises OSError when the root itself cannot be watched."""
        if self._inotify is None:
            # watchdog takes a bytes path (and then reports bytes paths); its annotation says str
            self._observer.schedule(self._handler, root, recursive=True, event_filter=EVENT_FILTER)  # type: ignore[arg-type]
            return
        from watchdog.observers.api import ObservedWatch

        watch = ObservedWatch(root, recursive=True, event_filter=EVENT_FILTER)  # type: ignore[arg-type]  # bytes, as above
        emitter = _op_emitter_class()(self._events, watch, event_filter=EVENT_FILTER, inotify_fd=self._inotify)
        emitter.start()
        self._emitters.append(emitter)

    def start(self) -> None:
        if self._inotify is None:
            self._observer.start()

    def stop(self) -> None:
        """Stop every emitter; once this returns, every event read is in the queue."""
        if self._inotify is None:
            self._observer.stop()
            self._observer.join()
            return
        for emitter in self._emitters:
            emitter.stop()
        for emitter in self._emitters:
            emitter.join()
        self._inotify.stop()
        self._inotify.join()

    def dead_threads(self) -> list[str]:
        """The reader threads that were started and have died (a dead one means lost events)."""
        if self._inotify is None:
            alive = self._observer.is_alive() if self._observer.ident is not None else True
            return [] if alive else ["file observer"]
        dead = [] if self._inotify.is_alive() else ["inotify reader"]
        dead += [f"file emitter {emitter.watch.path!r}" for emitter in self._emitters if not emitter.is_alive()]
        return dead

    def watched_inodes(self) -> set[int] | None:
        """Inode numbers of the folders inotify watches, from /proc/self/fdinfo.

        watchdog keeps the descriptor private (``InotifyFD._inotify_fd``); None
        when that layout or /proc is not there, or not on Linux.
        """
        fd = getattr(self._inotify, "_inotify_fd", None)
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
def _op_emitter_class():
    """watchdog's inotify emitter (unpaired moves reported as moves) that queues :class:`Op` objects.

    The common events (a file or folder created or deleted, a file closed after
    writing) become an ``Op`` at once, without watchdog's event objects and the
    parent folder's "modified" event that the filter would then drop: half of
    the emitter's work per event in a burst. Moves and everything else go
    through watchdog's own translation, then :func:`to_op`. Linux only.
    """
    from watchdog.observers.inotify import InotifyFullEmitter
    from watchdog.observers.inotify_c import InotifyConstants as C
    from watchdog.observers.inotify_move_event_grouper import PathedInotifyEvent

    class OpEmitter(InotifyFullEmitter):
        def build_and_queue_event(self, event, *, full_events: bool = True) -> None:
            if type(event) is PathedInotifyEvent:
                mask = event.ev.mask
                is_dir = bool(mask & C.IN_ISDIR)
                if mask & C.IN_CREATE:
                    self._event_queue.put(Op("created", event.path, is_dir))
                    return
                if mask & C.IN_DELETE:
                    self._event_queue.put(Op("deleted", event.path, is_dir))
                    return
                if mask & C.IN_CLOSE_WRITE and not is_dir:
                    self._event_queue.put(Op("modified", event.path))
                    return
            super().build_and_queue_event(event, full_events=full_events)

        def queue_event(self, event: FileSystemEvent) -> None:
            if type(event) in _OPS:
                op = to_op(event)
                if op is not None:
                    self._event_queue.put(op)

    return OpEmitter


class OverflowLogHandler(logging.Handler):
    """watchdog reports an inotify overflow only in its log: turn that line into a rescan request."""

    def __init__(self, roots: set[bytes], events: queue.SimpleQueue):
        super().__init__(logging.WARNING)
        self._roots = roots
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" not in str(record.msg).lower():
            return
        root = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if root in self._roots:
            self._events.put(Overflow(root))


@contextlib.contextmanager
def hear_overflows(handler: OverflowLogHandler):
    """Listen to watchdog's loggers for overflow lines while the block runs."""
    for name in WATCHDOG_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.WARNING:  # an overflow is only ever said there
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name in WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(handler)


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
