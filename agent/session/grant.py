"""What the customer grants: everything that was asked, or less, never more.

``chaperone approve ID --only files,shell --for 20m`` and the consent
dialog's check boxes and time choice both come here. A grant is enforced at
the door (``agent.ssh``: the authorized_keys line sshd receives, and a
time-limited sudoers drop-in for ``admin``) and recorded in the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import RequestError
from agent.session.request import CAPABILITIES, SessionRequest, format_duration, min_duration_s


@dataclass(frozen=True)
class Grant:
    capabilities: tuple[str, ...]
    duration_s: int

    @classmethod
    def of(cls, request: SessionRequest, only: list[str] | None = None, for_s: int | None = None) -> Grant:
        """The grant for ``request``: ``only`` a subset of its capabilities, ``for_s`` at most its time."""
        caps = request.capabilities
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(c, str) for c in only) or not only:
                raise RequestError("Say which capabilities to grant, such as files,shell.")
            unknown = [c for c in only if c not in CAPABILITIES]
            if unknown:
                raise RequestError(f"There is no capability '{unknown[0][:20]}'; choose from "
                                   f"{', '.join(CAPABILITIES)}.")
            more = [c for c in only if c not in request.capabilities]
            if more:
                raise RequestError(f"The request did not ask for {', '.join(more)}; you can grant only what was "
                                   f"asked: {', '.join(request.capabilities)}.")
            caps = tuple(c for c in CAPABILITIES if c in only)
        duration = request.duration_s
        if for_s is not None:
            if type(for_s) is not int or for_s <= 0:
                raise RequestError("The time to grant must be a whole number of seconds.")
            if for_s > request.duration_s:
                raise RequestError(f"The request asked for {format_duration(request.duration_s)}; you can grant "
                                   "that or less, not more.")
            if for_s < min(min_duration_s(), request.duration_s):
                raise RequestError(f"Grant at least {format_duration(min_duration_s())}.")
            duration = for_s
        return cls(caps, duration)

    def is_all(self, request: SessionRequest) -> bool:
        return self.capabilities == request.capabilities and self.duration_s == request.duration_s

    def describe(self, request: SessionRequest) -> str:
        """``only files (not shell, admin); 20 min of 45 min`` for a decision's reason."""
        parts = []
        left_out = [c for c in request.capabilities if c not in self.capabilities]
        if left_out:
            parts.append(f"only {', '.join(self.capabilities)} (not {', '.join(left_out)})")
        if self.duration_s != request.duration_s:
            parts.append(f"{format_duration(self.duration_s)} of {format_duration(request.duration_s)}")
        return "; ".join(parts)
