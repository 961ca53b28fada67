"""Helpers for the tray's tests: requests as the agent sends them."""

from __future__ import annotations

import itertools

import pytest

_ids = itertools.count(1)


def pending_item(**overrides) -> dict:
    """A pending request as the agent's ``pending`` op and ``consent-needed`` event give it."""
    item = {
        "id": f"s-test-{next(_ids)}",
        "technician": "Ada Lovelace",
        "email": "ada@example.com",
        "org": "Acme Support",
        "ticket": "T-1234",
        "reason": "The printer queue is stuck.",
        "duration_s": 1800,
        "capabilities": ["files", "shell"],
        "watch": ["/home/customer", "/etc"],
        "verified": True,
        "verification": {"verified": True, "principal": "ada@example.com",
                         "fingerprint": "SHA256:m1VfpELUJe5WVmMg1sNnkRQRxi/0GxMwtG8HD8XnFDE", "detail": "signed"},
        "flags": [],
        "expires_at": "2099-01-01T00:00:00Z",
    }
    item.update(overrides)
    return item


@pytest.fixture
def make_item():
    return pending_item


class FakeClock:
    """A clock the test moves by hand (the dialogs read time through a callable)."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()
