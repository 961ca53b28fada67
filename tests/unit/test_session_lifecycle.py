"""The lifecycle state machine, the warning rule and session ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from agent.errors import LifecycleError
from agent.session.lifecycle import TRANSITIONS, State, advance
from agent.session.model import new_session_id, warning_lead_s

HAPPY_PATH = [State.REQUESTED, State.ALLOWED, State.ACTIVE, State.ENDED, State.SEALED]


def test_the_happy_path_is_allowed():
    state = HAPPY_PATH[0]
    for nxt in HAPPY_PATH[1:]:
        state = advance(state, nxt)
    assert state is State.SEALED


@pytest.mark.parametrize("final", [State.REFUSED, State.EXPIRED])
def test_refusals_are_final(final):
    assert advance(State.REQUESTED, final) is final
    for nxt in State:
        with pytest.raises(LifecycleError):
            advance(final, nxt)


@pytest.mark.parametrize("current, new", [
    (State.REQUESTED, State.ACTIVE),  # nothing opens without a decision
    (State.REQUESTED, State.ENDED),
    (State.ACTIVE, State.ALLOWED),
    (State.ENDED, State.ACTIVE),
    (State.SEALED, State.ACTIVE),
    (State.ALLOWED, State.REFUSED),
])
def test_forbidden_transitions(current, new):
    with pytest.raises(LifecycleError, match=f"from {current.value} to {new.value}"):
        advance(current, new)


def test_every_state_is_reachable_from_requested():
    seen, todo = {State.REQUESTED}, [State.REQUESTED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)


@pytest.mark.parametrize("duration, lead", [(1800, 300), (600, 300), (8 * 3600, 300), (300, 150), (4, 2)])
def test_warning_five_minutes_before_or_halfway_for_short_sessions(duration, lead):
    assert warning_lead_s(duration) == lead


def test_session_ids_are_short_url_safe_and_unique():
    now = datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC)
    taken: set[str] = set()
    for _ in range(2000):
        sid = new_session_id(now, taken.__contains__)
        assert re.fullmatch(r"s-20261122-[0-9A-HJKMNP-TV-Z]{6}", sid)
        assert sid not in taken
        taken.add(sid)
