"""The Linux proc connector: the kernel's fork, exec, exit, uid and sid events over netlink.

The wire format (``linux/netlink.h``, ``linux/connector.h``, ``linux/cn_proc.h``)
is parsed by pure functions (:func:`parse_message`, :func:`subscribe_message`),
tested with hypothesis; :class:`ProcConnector` is the socket (root only:
``CAP_NET_ADMIN``). One datagram carries one event::

    nlmsghdr   len u32, type u16, flags u16, seq u32, pid u32          16 bytes
    cn_msg     idx u32, val u32, seq u32, ack u32, len u16, flags u16  20 bytes
    proc_event what u32, cpu u32, timestamp_ns u64, then the event's data

When the socket's receive buffer overflows the kernel drops events and the
next ``recv`` fails with ``ENOBUFS``: :meth:`ProcConnector.read` raises
:class:`EventsLost`, and the caller re-seeds what it keeps from ``/proc``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

# proc_event.what
PROC_EVENT_NONE = 0x0
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_UID = 0x4
PROC_EVENT_GID = 0x40
PROC_EVENT_SID = 0x80
PROC_EVENT_PTRACE = 0x100
PROC_EVENT_COMM = 0x200
PROC_EVENT_NONZERO_EXIT = 0x20000000
PROC_EVENT_COREDUMP = 0x40000000
PROC_EVENT_EXIT = 0x80000000

NLMSGHDR = struct.Struct("=IHHII")
CN_MSG = struct.Struct("=IIIIHH")
EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
HEADER_SIZE = NLMSGHDR.size + CN_MSG.size  # 36: where proc_event starts
_HEAD = struct.Struct("=IHHIIIIIIHHIIQ")  # the three headers at once, up to the event's data
# The three events of every process, each read with one unpack (headers and data): the hot path.
_FORK_MSG = struct.Struct("=IHHIIIIIIHHIIQiiii")
_EXEC_MSG = struct.Struct("=IHHIIIIIIHHIIQii")
_EXIT_MSG = struct.Struct("=IHHIIIIIIHHIIQiiIIii")
_WHAT = struct.Struct("=I")
_what_of, _fork_of, _exec_of, _exit_of = _WHAT.unpack_from, _FORK_MSG.unpack_from, _EXEC_MSG.unpack_from, \
    _EXIT_MSG.unpack_from
_TWO = struct.Struct("=ii")
_FOUR = struct.Struct("=iiii")
_ID = struct.Struct("=iiII")  # pid, tgid, real id, effective id
_EXIT = struct.Struct("=iiIIii")  # pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid
_COMM = struct.Struct("=ii16s")

KINDS = {
    PROC_EVENT_NONE: "ack",
    PROC_EVENT_FORK: "fork",
    PROC_EVENT_EXEC: "exec",
    PROC_EVENT_UID: "uid",
    PROC_EVENT_GID: "gid",
    PROC_EVENT_SID: "sid",
    PROC_EVENT_PTRACE: "ptrace",
    PROC_EVENT_COMM: "comm",
    PROC_EVENT_NONZERO_EXIT: "exit",
    PROC_EVENT_COREDUMP: "coredump",
    PROC_EVENT_EXIT: "exit",
}


class ProcEvent(NamedTuple):
    """One kernel event. ``pid``/``tgid`` are the process (for ``fork``: the child); ``parent_*``
    the forking process (``fork``), the parent at exit (``exit``, 0 when the kernel is too old to say)
    or the tracer (``ptrace``). ``real``/``effective``: the new ids of ``uid``/``gid``. ``exit_code``
    as ``wait`` reports it. ``timestamp_ns``: CLOCK_MONOTONIC when the event happened."""

    kind: str
    pid: int
    tgid: int
    timestamp_ns: int
    cpu: int = 0
    parent_pid: int = 0
    parent_tgid: int = 0
    real: int | None = None
    effective: int | None = None
    exit_code: int | None = None
    comm: str | None = None

    @property
    def is_thread(self) -> bool:
        """A thread of a process, not a process: the lineage keeps processes only."""
        return self.pid != self.tgid


_new = tuple.__new__


def subscribe_message(op: int = PROC_CN_MCAST_LISTEN, *, seq: int = 0, port: int = 0) -> bytes:
    """The netlink message that starts (or, with ``PROC_CN_MCAST_IGNORE``, stops) the events."""
    payload = struct.pack("=I", op)
    cn = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, 0, len(payload), 0) + payload
    return NLMSGHDR.pack(NLMSGHDR.size + len(cn), NLMSG_DONE, 0, seq, port) + cn


def parse_message(buf: bytes | bytearray | memoryview, length: int | None = None) -> ProcEvent | None:
    """The event in one datagram, or None for what is not a proc event (another connector,
    a truncated or malformed message, an event type this module does not keep).

    Never raises for any input: the socket is the kernel's, but a parser that can crash the
    reader would stop the lineage, so bad bytes are simply not an event."""
    size = len(buf) if length is None else min(length, len(buf))
    if size < _HEAD.size:
        return None
    msg_len, _t, _f, _s, _p, idx, val, _cs, _ack, data_len, _cf, what, cpu, ts = _HEAD.unpack_from(buf, 0)
    if idx != CN_IDX_PROC or val != CN_VAL_PROC or msg_len > size or msg_len < HEADER_SIZE + data_len:
        return None
    if data_len < EVENT_HEAD.size:
        return None
    body = _HEAD.size
    room = HEADER_SIZE + data_len - body
    kind = KINDS.get(what)
    if kind is None:
        return None
    new = _new  # positional construction: about twice as fast as the keyword form, per event
    try:
        if kind == "fork" and room >= _FOUR.size:
            ppid, ptgid, pid, tgid = _FOUR.unpack_from(buf, body)
            return new(ProcEvent, (kind, pid, tgid, ts, cpu, ppid, ptgid, None, None, None, None))
        if kind in ("exec", "sid") and room >= _TWO.size:
            pid, tgid = _TWO.unpack_from(buf, body)
            return new(ProcEvent, (kind, pid, tgid, ts, cpu, 0, 0, None, None, None, None))
        if kind in ("uid", "gid") and room >= _ID.size:
            pid, tgid, real, effective = _ID.unpack_from(buf, body)
            return new(ProcEvent, (kind, pid, tgid, ts, cpu, 0, 0, real, effective, None, None))
        if kind == "exit" and room >= _EXIT.size - 8:
            if room >= _EXIT.size:
                pid, tgid, code, _sig, ppid, ptgid = _EXIT.unpack_from(buf, body)
            else:  # kernels before 4.18 do not send the parent
                pid, tgid, code, _sig = _ID.unpack_from(buf, body)
                ppid = ptgid = 0
            return new(ProcEvent, (kind, pid, tgid, ts, cpu, ppid, ptgid, None, None, code, None))
        if kind in ("ptrace", "coredump") and room >= _FOUR.size:
            pid, tgid, other_pid, other_tgid = _FOUR.unpack_from(buf, body)
            return new(ProcEvent, (kind, pid, tgid, ts, cpu, other_pid, other_tgid, None, None, None, None))
        if kind == "comm" and room >= _COMM.size:
            pid, tgid, raw = _COMM.unpack_from(buf, body)
            comm = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            return new(ProcEvent, (kind, pid, tgid, ts, cpu, 0, 0, None, None, None, comm))
        if kind == "ack":
            return new(ProcEvent, (kind, 0, 0, ts, cpu, 0, 0, None, None, None, None))
    except struct.error:
        return None
    return None


def decode(buf: bytearray | bytes, n: int) -> ProcEvent | None:
    """:func:`parse_message`, with fork, exec and exit (nearly every event) decoded by one unpack
    each: the reader's hot path. Anything else, or anything that does not check out, goes through
    :func:`parse_message`; the tests hold the two to the same answers."""
    if n >= 52 and len(buf) >= n:
        what = _what_of(buf, 36)[0]
        if what == PROC_EVENT_FORK and n >= 68:
            size, _t, _f, _s, _p, idx, val, _c, _a, dlen, _cf, _w, cpu, ts, ppid, ptgid, pid, tgid = _fork_of(buf)
            if idx == 1 and val == 1 and size <= n and 68 <= 36 + dlen <= size and dlen >= 32:
                return _new(ProcEvent, ("fork", pid, tgid, ts, cpu, ppid, ptgid, None, None, None, None))
        elif what == PROC_EVENT_EXEC and n >= 60:
            size, _t, _f, _s, _p, idx, val, _c, _a, dlen, _cf, _w, cpu, ts, pid, tgid = _exec_of(buf)
            if idx == 1 and val == 1 and size <= n and 60 <= 36 + dlen <= size and dlen >= 24:
                return _new(ProcEvent, ("exec", pid, tgid, ts, cpu, 0, 0, None, None, None, None))
        elif what == PROC_EVENT_EXIT and n >= 76:
            size, _t, _f, _s, _p, idx, val, _c, _a, dlen, _cf, _w, cpu, ts, pid, tgid, code, _sig, ppid, ptgid \
                = _exit_of(buf)
            if idx == 1 and val == 1 and size <= n and 76 <= 36 + dlen <= size and dlen >= 40:
                return _new(ProcEvent, ("exit", pid, tgid, ts, cpu, ppid, ptgid, None, None, code, None))
    return parse_message(buf, n)


class EventsLost(Exception):
    """The kernel dropped events because the reader fell behind (``ENOBUFS``). ``events``: those
    read before the loss was noticed (still valid: apply them first)."""

    def __init__(self, events: list[ProcEvent] | None = None):
        super().__init__("the kernel dropped process events")
        self.events = events or []


class ProcConnectorUnavailable(Exception):
    """The proc connector cannot be used here; the message says why, in one sentence."""


class ProcConnector:
    """A subscribed proc-connector socket. ``read()`` returns the next event (or None when
    there is none now, with ``blocking=False``), and raises :class:`EventsLost` after an overflow."""

    def __init__(self, *, rcvbuf: int = 8 << 20):
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        except (OSError, AttributeError) as exc:
            raise ProcConnectorUnavailable(f"no netlink connector socket: {exc}.") from None
        try:
            self._set_rcvbuf(sock, rcvbuf)
            sock.bind((0, CN_IDX_PROC))
            sock.send(subscribe_message(port=sock.getsockname()[0]))
        except OSError as exc:
            sock.close()
            why = "it needs root" if exc.errno in (errno.EPERM, errno.EACCES) else os.strerror(exc.errno or 0)
            raise ProcConnectorUnavailable(f"the kernel refused the proc connector: {why}.") from None
        self._sock = sock
        self._buf = bytearray(256)
        self._view = memoryview(self._buf)

    @staticmethod
    def _set_rcvbuf(sock: socket.socket, size: int) -> None:
        so_rcvbufforce = getattr(socket, "SO_RCVBUFFORCE", 33)
        try:
            sock.setsockopt(socket.SOL_SOCKET, so_rcvbufforce, size)  # root may exceed rmem_max
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def rcvbuf(self) -> int:
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def read_batch(self, limit: int = 256) -> list[ProcEvent]:
        """Up to ``limit`` events queued now, without waiting ([] if none)."""
        out: list[ProcEvent] = []
        recv_into, buf, decode_one, append = self._sock.recv_into, self._buf, decode, out.append
        while len(out) < limit:
            try:
                n = recv_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise EventsLost(out) from None
                raise
            event = decode_one(buf, n)
            if event is not None and event[0] != "ack":
                append(event)
        return out

    def pause(self) -> None:
        """Ask the kernel to stop sending events (nothing needs them for now)."""
        self._sock.send(subscribe_message(PROC_CN_MCAST_IGNORE, port=self._sock.getsockname()[0]))

    def resume(self) -> None:
        self._sock.send(subscribe_message(PROC_CN_MCAST_LISTEN, port=self._sock.getsockname()[0]))

    def close(self) -> None:
        try:
            self._sock.send(subscribe_message(PROC_CN_MCAST_IGNORE, port=self._sock.getsockname()[0]))
        except OSError:
            pass
        self._sock.close()
