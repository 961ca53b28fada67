"""Cheap fingerprints read from ``/proc``: listening sockets, running programs, file locks. Pure parsers,
and the readers that the live watcher polls (Linux only; elsewhere they return ``None`` and the
watcher falls back to collecting the category itself)."""

from __future__ import annotations

import os
import socket

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


def listening_fingerprint(proc: str = "/proc") -> frozenset | None:
    """The listening sockets of this network namespace, or None when ``/proc/net`` cannot be read."""
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
