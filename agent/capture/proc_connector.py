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
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class ProcEvent:
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
    if size < HEADER_SIZE + EVENT_HEAD.size:
        return None
    msg_len, _type, _flags, _seq, _port = NLMSGHDR.unpack_from(buf, 0)
    idx, val, _cseq, _ack, data_len, _cflags = CN_MSG.unpack_from(buf, NLMSGHDR.size)
    if idx != CN_IDX_PROC or val != CN_VAL_PROC or msg_len > size or msg_len < HEADER_SIZE + data_len:
        return None
    if data_len < EVENT_HEAD.size:
        return None
    what, cpu, ts = EVENT_HEAD.unpack_from(buf, HEADER_SIZE)
    body = HEADER_SIZE + EVENT_HEAD.size
    room = HEADER_SIZE + data_len - body
    kind = KINDS.get(what)
    if kind is None:
        return None
    try:
        if kind == "fork" and room >= _FOUR.size:
            ppid, ptgid, pid, tgid = _FOUR.unpack_from(buf, body)
            return ProcEvent(kind, pid, tgid, ts, cpu, parent_pid=ppid, parent_tgid=ptgid)
        if kind in ("exec", "sid") and room >= _TWO.size:
            pid, tgid = _TWO.unpack_from(buf, body)
            return ProcEvent(kind, pid, tgid, ts, cpu)
        if kind in ("uid", "gid") and room >= _ID.size:
            pid, tgid, real, effective = _ID.unpack_from(buf, body)
            return ProcEvent(kind, pid, tgid, ts, cpu, real=real, effective=effective)
        if kind == "exit" and room >= _EXIT.size - 8:
            if room >= _EXIT.size:
                pid, tgid, code, _sig, ppid, ptgid = _EXIT.unpack_from(buf, body)
            else:  # kernels before 4.18 do not send the parent
                pid, tgid, code, _sig = _ID.unpack_from(buf, body)
                ppid = ptgid = 0
            return ProcEvent(kind, pid, tgid, ts, cpu, parent_pid=ppid, parent_tgid=ptgid, exit_code=code)
        if kind in ("ptrace", "coredump") and room >= _FOUR.size:
            pid, tgid, other_pid, other_tgid = _FOUR.unpack_from(buf, body)
            return ProcEvent(kind, pid, tgid, ts, cpu, parent_pid=other_pid, parent_tgid=other_tgid)
        if kind == "comm" and room >= _COMM.size:
            pid, tgid, raw = _COMM.unpack_from(buf, body)
            return ProcEvent(kind, pid, tgid, ts, cpu, comm=raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        if kind == "ack":
            return ProcEvent(kind, 0, 0, ts, cpu)
    except struct.error:
        return None
    return None


class EventsLost(Exception):
    """The kernel dropped events because the reader fell behind (``ENOBUFS``)."""


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

    def read(self, *, blocking: bool = True) -> ProcEvent | None:
        """The next proc event; skips datagrams that are not one. None when ``blocking=False`` and
        nothing is queued."""
        flags = 0 if blocking else socket.MSG_DONTWAIT
        while True:
            try:
                n = self._sock.recv_into(self._buf, 0, flags)
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise EventsLost() from None
                raise
            event = parse_message(self._view, n)
            if event is not None and event.kind != "ack":
                return event

    def close(self) -> None:
        try:
            self._sock.send(subscribe_message(PROC_CN_MCAST_IGNORE, port=self._sock.getsockname()[0]))
        except OSError:
            pass
        self._sock.close()
