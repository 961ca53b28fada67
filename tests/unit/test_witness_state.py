"""The witness's state (agent.witness.state) and the wire format (agent.witness.protocol)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import WitnessError
from agent.ledger import Checkpoint, NoteError
from agent.ledger.merkle import EMPTY_ROOT, consistency_proof, tree_hash
from agent.witness.protocol import (
    format_request,
    format_size,
    parse_request,
    parse_size,
)
from agent.witness.state import WitnessState
from tests.unit.test_ledger_merkle import MemoryTree


def heads(n: int) -> tuple[MemoryTree, list[Checkpoint]]:
    tree = MemoryTree([b"e%d" % i for i in range(n)])
    return tree, [Checkpoint("o", s, tree_hash(s, tree.read)) for s in range(n + 1)]


def test_advance_follows_the_protocol(tmp_path):
    tree, cps = heads(12)
    state = WitnessState(tmp_path / "s.sqlite3")

    def adv(cp, old, proof=()):
        return state.advance(cp, b"note", old, tuple(proof), b"body")

    assert adv(cps[4], 0).status == 200
    conflict = adv(cps[4], 0)
    assert (conflict.status, conflict.size) == (409, 4)  # the old size must be the witness's
    assert adv(cps[4], 4).status == 200  # the same head again
    assert adv(Checkpoint("o", 4, b"\x01" * 32), 4).status == 409  # same size, other root: a fork
    assert adv(cps[9], 4, consistency_proof(4, 9, tree.read)).status == 200
    bad = consistency_proof(9, 12, tree.read)
    bad[0] = bytes(32)
    out = adv(cps[12], 9, bad)
    assert out.status == 422
    assert state.head("o").size == 9
    assert adv(Checkpoint("p", 3, EMPTY_ROOT), 0, [b"\x00" * 32]).status == 422  # a proof from 0 must be empty
    assert [r[2] for r in state.refusals("o")] == [409, 409, 422]
    state.close()
    again = WitnessState(tmp_path / "s.sqlite3")  # the state is on disk
    assert again.head("o").size == 9 and again.head("o").root == cps[9].root
    again.close()


def test_concurrent_requests_never_roll_a_head_back(tmp_path):
    """The race the specification warns of: requests for sizes N and N+K checked at once."""
    tree, cps = heads(40)
    state = WitnessState(tmp_path / "s.sqlite3")
    state.advance(cps[1], b"n", 0, (), b"")
    results = []

    def send(size: int) -> None:
        results.append((size, state.advance(cps[size], b"n", 1, tuple(consistency_proof(1, size, tree.read)), b"").status))

    threads = [threading.Thread(target=send, args=(s,)) for s in range(2, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [s for s, status in results if status == 200]
    assert len(accepted) == 1  # the others named an old size that was no longer the witness's
    assert state.head("o").size == accepted[0]
    state.close()


def test_trust_takes_only_log_keys(tmp_path):
    state = WitnessState(tmp_path / "s.sqlite3")
    with pytest.raises(WitnessError):
        state.trust("o", "not a key")
    with pytest.raises(WitnessError):
        state.trust("line\nbreak", "x+00000000+AA==")
    state.close()


def test_request_round_trip():
    body = format_request(5, [b"\x01" * 32, b"\x02" * 32], b"note\n\n\xe2\x80\x94 x AAAAAAA=\n")
    assert body.startswith(b"old 5\nAQEB")
    req = parse_request(body)
    assert (req.old_size, req.proof) == (5, (b"\x01" * 32, b"\x02" * 32))
    assert req.note == b"note\n\n\xe2\x80\x94 x AAAAAAA=\n"
    assert parse_size(format_size(20852014)) == 20852014
    for bad in (b"", b"old 5", b"old 05\n\nx", b"old -1\n\nx", b"new 5\n\nx", b"old 5\nAAAA\n\nx",
                b"old 5\n" + b"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n" * 64 + b"\nx"):
        with pytest.raises(NoteError):
            parse_request(bad)
    for bad in (b"", b"5", b"05\n", b"five\n", b"\xff\n"):
        with pytest.raises(NoteError):
            parse_size(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_body_parses_or_is_a_note_error(body):
    try:
        req = parse_request(body)
    except NoteError:
        return
    assert format_request(req.old_size, req.proof, req.note) == body
