"""Who is on the other end of a Unix socket (SO_PEERCRED): its pid, uid and gid, and its process's start time.

The start time (clock ticks since boot, from ``/proc/PID/stat``) is read when the connection arrives, so
that every later question about the peer's process (its lineage, its ancestry) is about that process and
not about another that got the same pid after it exited.
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    start_ticks: int | None = None

    @property
    def user(self) -> str:
        return user_name(self.uid)

    def who(self) -> dict:
        """``{"uid", "user"}`` as journal records name a person."""
        return {"uid": self.uid, "user": self.user}


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def peer_of(sock: socket.socket) -> Peer:
    """The peer's credentials, as the kernel saw them when it connected."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid, start_ticks(pid))


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (field 22 of ``/proc/PID/stat``), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def home_owner(path: os.PathLike) -> int:
    return os.stat(path).st_uid
