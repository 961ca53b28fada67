"""A small inotify for the live watcher: folders watched for their entries, events read in batches.

Not watchdog: the live watcher needs a few dozen folders, each event's name,
and a file descriptor it can wait on together with its poll timer, at no
cost when nothing happens. Linux only; :func:`available` says whether it
works here (elsewhere the watcher polls every category instead).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from typing import NamedTuple

from agent.capture.inotify_events import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
)
from agent.capture.inotify_events import parse_events as raw_events

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000

# No IN_MODIFY: a file written in many pieces (a log in a home) would wake
# the watcher on every write; the close after writing is what matters.
FOLDER_MASK = (IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
               | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
# A file watched by itself (its inode): any write, however it was reached, and its end.
FILE_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF


class Event(NamedTuple):
    wd: int
    mask: int
    name: str


def parse_events(buf: bytes) -> list[Event]:
    """The whole events in a buffer read from an inotify descriptor (names decoded with surrogateescape);
    the structs are read by the file capture's parser (``agent.capture.inotify_events``)."""
    return [Event(wd, mask, os.fsdecode(name)) for wd, mask, _cookie, name in raw_events(buf)[0]]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


class Inotify:
    """One inotify instance: ``add(folder) -> wd``, ``remove(wd)``, ``read() -> [Event]`` (non-blocking)."""

    def __init__(self) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this system")
        fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = fd

    def add(self, folder: str, mask: int = FOLDER_MASK) -> int:
        """Watch a folder's entries (or, with ``FILE_MASK``, a file); the same inode twice gives the same
        descriptor, and the mask of the last call."""
        wd = _LIBC.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), folder)
        return wd

    def remove(self, wd: int) -> None:
        _LIBC.inotify_rm_watch(self.fd, wd)  # fails harmlessly when the kernel already dropped it

    def read(self) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            if not buf:
                return events
            events += parse_events(buf)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
