"""One session as the manager holds it, and the small pure rules about sessions."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from agent.clock import rfc3339
from agent.journal import Journal
from agent.redact import Redactor
from agent.session.grant import Grant
from agent.session.hooks import Recorder
from agent.session.lifecycle import State
from agent.session.request import SessionRequest, Verification
from agent.session.sink import SessionSink

WARNING_LEAD_S = 300
_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def warning_lead_s(duration_s: float) -> float:
    """Seconds before the limit at which the customer is warned."""
    return WARNING_LEAD_S if duration_s >= 2 * WARNING_LEAD_S else duration_s / 2


def new_session_id(now: datetime, taken: Callable[[str], bool]) -> str:
    """``s-20261122-7KQ3XZ``: short, URL-safe, sortable by day, unique in this home."""
    while True:
        suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
        sid = f"s-{now:%Y%m%d}-{suffix}"
        if not taken(sid):
            return sid


@dataclass(eq=False)
class Session:
    """A request and, once allowed, its running session. Lives on the agent's loop thread."""

    id: str
    request: SessionRequest
    source: str
    verification: Verification
    flags: list[str]
    journal: Journal
    state: State
    requested: str
    expires_at: str
    grant: Grant | None = None  # what the customer granted, once allowed
    until: datetime | None = None
    started: str | None = None
    sink: SessionSink | None = None
    capture: Recorder | None = None
    recorded: asyncio.Future | None = None  # the request is durable and in the history
    activation: asyncio.Task | None = None
    finishing: asyncio.Task | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # recording (active), or it will never be
    # What this session hides, and remembers having hidden (agent.redact): notes, capture, every record.
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the session may do: the grant once allowed, what was asked before."""
        return self.grant.capabilities if self.grant else self.request.capabilities

    def record(self, type: str, data: dict) -> int:
        """Journal a record: through the sink (live to subscribers) once the session has one."""
        if self.sink is not None:
            return self.sink.emit(type, data)
        return self.journal.append(type, data)

    def cancel_timers(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()

    def summary(self) -> dict:
        r = self.request
        return {"id": self.id, "technician": r.technician, "email": r.email, "org": r.org, "ticket": r.ticket,
                "started": self.started, "until": rfc3339(self.until) if self.until else None,
                "capabilities": list(self.capabilities), "asked": list(r.capabilities), "watch": list(r.watch)}

    def pending_item(self) -> dict:
        r = self.request
        return {"id": self.id, "technician": r.technician, "email": r.email, "org": r.org, "ticket": r.ticket,
                "reason": r.reason, "duration_s": r.duration_s, "capabilities": list(r.capabilities),
                "watch": list(r.watch), "verified": self.verification.verified,
                "verification": self.verification.to_dict(), "flags": list(self.flags),
                "expires_at": self.expires_at, "requested": self.requested, "source": self.source,
                "ssh": r.ssh}

    def hook_view(self, home_path: str) -> dict:
        """What login hooks get: the summary, the request's ssh details, the state and the home."""
        return {**self.summary(), "source": self.source, "ssh": self.request.ssh, "state": self.state.value,
                "home": home_path}
