"""The session lifecycle: which state may follow which.

::

    requested ─┬─▶ allowed ─▶ active ─▶ ended ─▶ sealed
               ├─▶ refused   (the customer said no, or a policy did)
               └─▶ expired   (nobody answered in time: a refusal)

An allowed session whose capture cannot start, or an agent stop between
"allowed" and "active", may go straight to ``ended``. Refused and expired
requests are sealed too, but keep their state in the history.
"""

from __future__ import annotations

from enum import Enum

from agent.errors import LifecycleError


class State(str, Enum):
    REQUESTED = "requested"
    ALLOWED = "allowed"
    REFUSED = "refused"
    EXPIRED = "expired"
    ACTIVE = "active"
    ENDED = "ended"
    SEALED = "sealed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.ALLOWED, State.REFUSED, State.EXPIRED}),
    State.ALLOWED: frozenset({State.ACTIVE, State.ENDED}),
    State.ACTIVE: frozenset({State.ENDED}),
    State.ENDED: frozenset({State.SEALED}),
    State.REFUSED: frozenset(),
    State.EXPIRED: frozenset(),
    State.SEALED: frozenset(),
}

DECIDED = frozenset({State.ALLOWED, State.REFUSED, State.EXPIRED, State.ACTIVE, State.ENDED, State.SEALED})
LIVE = frozenset({State.ALLOWED, State.ACTIVE})

#: ``witness-lag``: no ledger head was cosigned by a quorum of witnesses for ``witness.max_lag_s``
#: (with ``witness.on_lag`` "end"): the session's record could not leave the machine.
#: ``fail-closed``: recording stopped (a full disk, a dead capture thread, the guard lost: agent.session.failclosed).
END_REASONS = ("customer", "technician", "time-limit", "agent-stopped", "recovery", "witness-lag", "fail-closed")
DECISION_HOWS = ("click", "terminal", "timeout", "policy")


def advance(current: State, new: State) -> State:
    """``new`` if it may follow ``current``; else LifecycleError."""
    if new not in TRANSITIONS[current]:
        raise LifecycleError(f"a session cannot go from {current.value} to {new.value}")
    return new
