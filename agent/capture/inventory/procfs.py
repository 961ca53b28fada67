"""Cheap fingerprints read from the kernel: listening sockets, running programs, file locks. Pure parsers,
and the readers that the live watcher polls (Linux only; elsewhere they return ``None`` and the
watcher falls back to collecting the category itself).

Listening sockets are asked of the kernel by netlink (``sock_diag``, what ``ss`` uses), for the
listening states only: reading ``/proc/net/tcp`` walks every bucket of the connection table and
costs 5-6 ms here for a dozen sockets, the netlink question well under one. ``/proc/net`` is the
fallback.
"""

from __future__ import annotations

import os
import socket
import struct

PROC_NET = (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp"))
TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"  # TCP_CLOSE: a bound UDP socket with no peer


def _address(hex_addr: str) -> str:
    """``0100007F`` -> ``127.0.0.1``; 32 hex digits -> an IPv6 address (both in host byte order)."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    raise ValueError("not an IPv4 or IPv6 address")


def parse_proc_net(text: str, proto: str) -> set[tuple[str, str, int]]:
    """``/proc/net/{tcp,tcp6,udp,udp6}``: (proto, address, port) of listening TCP and unconnected UDP sockets."""
    found = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1]:
            continue
        state = fields[3]
        if not ((proto == "tcp" and state == TCP_LISTEN) or (proto == "udp" and state == UDP_UNCONNECTED)):
            continue
        addr, _, port = fields[1].partition(":")
        try:
            found.add((proto, _address(addr), int(port, 16)))
        except ValueError:
            continue
    return found


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN_STATE, TCP_CLOSE_STATE = 10, 7
_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI48s")
_MSG = struct.Struct("=BBBB2s2s16s16s")


def parse_sock_diag(buf: bytes) -> tuple[set[tuple[str, str, int]], bool]:
    """The (proto-less) sockets in a netlink dump: ({(family, address, port)}, whether the dump ended)."""
    found: set[tuple[str, str, int]] = set()
    offset = 0
    while offset + _NLMSG.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, offset)
        if length < _NLMSG.size:
            return found, True
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            raise OSError("the kernel refused the socket list")
        body = buf[offset + _NLMSG.size: offset + length]
        if len(body) >= _MSG.size:
            family, _state, _timer, _retrans, sport, _dport, src, _dst = _MSG.unpack_from(body)
            port = struct.unpack("!H", sport)[0]
            if family == socket.AF_INET:
                found.add(("4", socket.inet_ntop(socket.AF_INET, src[:4]), port))
            elif family == socket.AF_INET6:
                found.add(("6", socket.inet_ntop(socket.AF_INET6, src), port))
        offset += (length + 3) & ~3
    return found, False


def _sock_diag(family: int, protocol: int, states: int) -> set[tuple[str, str, int]]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        request = _REQ.pack(family, protocol, 0, 0, states, b"\0" * 48)
        nl.send(_NLMSG.pack(_NLMSG.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                + request)
        found: set[tuple[str, str, int]] = set()
        while True:
            part, done = parse_sock_diag(nl.recv(65536))
            found |= part
            if done:
                return found


def listening_by_netlink() -> frozenset | None:
    """Listening TCP and unconnected UDP sockets, asked of the kernel; None when netlink is refused."""
    found: set[tuple[str, str, int]] = set()
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            for proto, protocol, state in (("tcp", socket.IPPROTO_TCP, TCP_LISTEN_STATE),
                                           ("udp", socket.IPPROTO_UDP, TCP_CLOSE_STATE)):
                found |= {(proto, addr, port) for _f, addr, port in _sock_diag(family, protocol, 1 << state)}
    except (OSError, AttributeError):  # no AF_NETLINK (not Linux), or sock_diag not built in
        return None
    return frozenset(found)


def listening_fingerprint(proc: str = "/proc", netlink: bool = True) -> frozenset | None:
    """The listening sockets of this network namespace, or None when they cannot be listed."""
    if netlink:
        by_netlink = listening_by_netlink()
        if by_netlink is not None:
            return by_netlink
    found: set[tuple[str, str, int]] = set()
    readable = False
    for name, proto in PROC_NET:
        try:
            with open(os.path.join(proc, "net", name), encoding="ascii", errors="replace") as f:
                found |= parse_proc_net(f.read(), proto)
            readable = True
        except OSError:
            continue
    return frozenset(found) if readable else None


def running_programs(proc: str = "/proc") -> dict[int, str] | None:
    """pid -> program name (``comm``; the first argument's base name when ``comm`` was cut at 15
    characters), or None when ``/proc`` cannot be listed. Processes that end meanwhile are skipped."""
    try:
        pids = [int(n) for n in os.listdir(proc) if n.isdigit()]
    except OSError:
        return None
    names = {}
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/comm", "rb") as f:
                name = f.read().rstrip(b"\n").decode("utf-8", "replace")
            if len(name) == 15:
                with open(f"{proc}/{pid}/cmdline", "rb") as f:
                    arg0 = os.path.basename(f.read(4096).split(b"\0", 1)[0].decode("utf-8", "replace"))
                if arg0.startswith(name):
                    name = arg0
        except OSError:
            continue
        names[pid] = name
    return names


def parse_proc_locks(text: str) -> set[tuple[int, int, int]]:
    """``/proc/locks``: (major, minor, inode) of every file that holds a lock."""
    locked = set()
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter: "1: -> POSIX ADVISORY WRITE ..."; the holder has its own line
            continue
        for field in fields[4:6]:
            parts = field.split(":")
            if len(parts) == 3:
                try:
                    locked.add((int(parts[0], 16), int(parts[1], 16), int(parts[2])))
                except ValueError:
                    pass
                break
    return locked


def is_locked(path: str, proc: str = "/proc") -> bool:
    """Whether some process holds a lock on ``path`` (dpkg holds ``/var/lib/dpkg/lock`` while it runs)."""
    try:
        st = os.stat(path)
        with open(os.path.join(proc, "locks"), encoding="ascii", errors="replace") as f:
            locks = parse_proc_locks(f.read())
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in locks
