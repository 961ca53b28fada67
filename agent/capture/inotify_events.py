"""The kernel's inotify events, parsed from the bytes read from an inotify descriptor.

A read returns whole ``struct inotify_event`` records, back to back::

    struct inotify_event {
        __s32 wd;       /* watch descriptor (-1 for IN_Q_OVERFLOW) */
        __u32 mask;     /* what happened */
        __u32 cookie;   /* pairs IN_MOVED_FROM with IN_MOVED_TO */
        __u32 len;      /* bytes of name that follow, NUL-padded */
        char  name[];   /* the entry's name, for events on a folder's entries */
    };

:func:`parse_events` reads them in one pass, without an object per event. The
constants are the kernel's ABI (``<sys/inotify.h>``), the same on every Linux.
Pure: no watchdog, no descriptor.
"""

from __future__ import annotations

import struct

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

HEADER = struct.Struct("=iIII")  # native byte order, no padding: 16 bytes
HEADER_SIZE = HEADER.size

Event = tuple[int, int, int, bytes]  # wd, mask, cookie, name (without its NUL padding)


def parse_events(buf: bytes, start: int = 0) -> tuple[list[Event], int]:
    """The events in ``buf`` from ``start``, and the offset where the unparsed rest begins.

    The rest is an incomplete event (``len(buf)`` when there is none): the kernel
    never returns one, but a caller that got one keeps it and puts it before the
    next bytes it reads.
    """
    events: list[Event] = []
    append = events.append
    unpack = HEADER.unpack_from
    end = len(buf)
    i = start
    while i + HEADER_SIZE <= end:
        wd, mask, cookie, length = unpack(buf, i)
        j = i + HEADER_SIZE + length
        if j > end:
            break
        if length:
            name = buf[i + HEADER_SIZE:j]
            if name[-1] == 0:
                name = name.rstrip(b"\0")
        else:
            name = b""
        append((wd, mask, cookie, name))
        i = j
    return events, i


def pack_event(wd: int, mask: int, cookie: int, name: bytes = b"", *, pad_to: int = 0) -> bytes:
    """One event as the kernel writes it: ``name`` NUL-terminated and padded to ``pad_to`` bytes or more."""
    if b"\0" in name:
        raise ValueError("an inotify event's name cannot hold a NUL byte")
    field = name + b"\0" if name else b""
    field = field.ljust(max(pad_to, len(field)), b"\0")
    return HEADER.pack(wd, mask, cookie, len(field)) + field
