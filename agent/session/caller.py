"""Who asked: the caller of an operation, as data.

The service establishes who is on the other end of the socket (its peer
credentials, its process and lineage, the login it belongs to) and hands the
session layer a :class:`Caller`; the session layer records it and never looks
anyone up itself.

``role`` is what the service concluded: ``customer`` (a local process of a
person who may decide for this computer), ``technician`` (a process of a
remote login or of a technician's lineage), or ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("customer", "technician", "other")


@dataclass(frozen=True)
class Caller:
    uid: int
    user: str
    pid: int | None = None
    role: str = "customer"
    exe: str | None = None
    # Where the call came from: {"tty", "login" (the login session, e.g. "ssh from 10.0.0.5" or "local"),
    # "remote" (bool), "how" (how the role was known: "lineage", "sampled", …)}; only what is known.
    where: dict = field(default_factory=dict)

    def who(self) -> dict:
        """``{"uid", "user"}`` as the history names a person."""
        return {"uid": self.uid, "user": self.user}

    def provenance(self) -> dict:
        """Who, from which process and login: what a decision or an ending records."""
        out = {"uid": self.uid, "user": self.user, "role": self.role}
        if self.pid is not None:
            out["pid"] = self.pid
        if self.exe:
            out["exe"] = self.exe
        out.update(self.where)
        return out
