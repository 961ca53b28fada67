"""Who asked: the caller of an operation, as data.

The service establishes who is on the other end of the socket (peer
credentials, and for decisions the process's lineage) and hands the session
layer a :class:`Caller`; the session layer records it and never looks anyone
up itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    uid: int
    user: str
    pid: int | None = None

    def who(self) -> dict:
        """``{"uid", "user"}`` as journal records name a person."""
        return {"uid": self.uid, "user": self.user}
