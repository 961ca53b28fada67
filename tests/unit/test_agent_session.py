"""``tests.samples.agent_session``: the sessions the review benchmark is made of are what the agent writes.

The benchmark's figures are only as honest as its bundles. Earlier runs used journals with 8 signed lines
whatever the session's length; the agent's journal writer signs a checkpoint within 5 s of records and
after every 30 s of quiet (``agent.journal.writer``), so an hour holds well over a hundred, and each is
an Ed25519 signature the review checks. These tests hold the sample to that cadence, and to today's
capture (the customer's programs are counted, never recorded one by one).
"""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.devicekey import DeviceKey
from agent.journal import verify_journal
from agent.journal.writer import CHECKPOINT_INTERVAL
from agent.session.manager import HEARTBEAT_S
from tests.samples import CHECKPOINT_S, TICK_S, SyntheticJournal, agent_session
from tests.samples import HEARTBEAT_S as SAMPLE_HEARTBEAT_S

SIGNED = ("checkpoint", "seal")


def _records(length_s: float, customer_processes: int = 135) -> list[dict]:
    key = DeviceKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))), "chaperone@pc-00")
    journal = SyntheticJournal("s-cadence", key)
    agent_session(journal, customer_processes=customer_processes, seed=5, length_s=length_s)
    check = verify_journal(io.BytesIO(journal.bytes()))
    assert check.ok, check.reason
    return [json.loads(line) for line in journal.lines]


def _seconds(record: dict) -> float:
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def test_the_sample_uses_the_writers_own_intervals():
    assert (CHECKPOINT_S, SAMPLE_HEARTBEAT_S) == (CHECKPOINT_INTERVAL, HEARTBEAT_S)


@pytest.mark.parametrize("length_s", [40, 600, 3600])
def test_checkpoints_come_at_the_writers_cadence(length_s):
    records = _records(length_s)
    signed = [r for r in records if r["type"] in SIGNED]
    assert records[-1]["type"] == "seal"
    # never more than a heartbeat between two signed lines
    gaps = [_seconds(b) - _seconds(a) for a, b in zip(signed, signed[1:], strict=False)]
    assert max(gaps) <= HEARTBEAT_S + 1e-6
    # every record is under a checkpoint within the writer's interval and one tick
    last_signed = None
    for record in reversed(records):
        if record["type"] in SIGNED:
            last_signed = _seconds(record)
        else:
            assert last_signed is not None and last_signed - _seconds(record) <= CHECKPOINT_S + TICK_S + 1e-6
    # at least one a heartbeat apart over the whole session: an hour holds over a hundred
    assert len(signed) >= length_s / HEARTBEAT_S
    if length_s == 3600:
        assert 100 <= len(signed) <= 250


def test_the_customers_programs_are_counted_not_recorded():
    records = _records(900, customer_processes=200)
    processes = [r for r in records if r["type"] == "process"]
    assert processes and all(r["data"]["technician"] is True for r in processes)
    summaries = [r["data"] for r in records if r["type"] == "process-summary"]
    assert sum(s["execs"] for s in summaries) == 200
    assert all(set(s) >= {"programs", "since", "until", "execs"} and all("/" not in n for n in s["programs"])
               for s in summaries)
