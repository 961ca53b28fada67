"""Who is on the other end of a Unix socket (SO_PEERCRED), and what they may do."""

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
    return Peer(pid, uid, gid)


def home_owner(path: os.PathLike) -> int:
    return os.stat(path).st_uid
