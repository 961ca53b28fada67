"""The review against a device's ledger export: missing, pruned, forked and unwitnessed sessions."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.devicekey import DeviceKey
from agent.ledger import Ledger, leaf_hash
from agent.ledger.merkle import node_hash
from agent.review.ledgers import _prefix_roots
from tests.samples import SyntheticJournal, realistic_session, write_bundle


@pytest.fixture
def device(home, tmp_path):
    """A device with three sealed sessions in its ledger (the third pruned), and the bundle of the first only."""
    key = DeviceKey.load(home)
    folder = tmp_path / "tickets"
    folder.mkdir()
    with Ledger.open(home) as ledger:
        for n in range(3):
            journal = SyntheticJournal(f"s-{n}", key)
            realistic_session(journal, customer_processes=3, ticket=f"INC-{n}")
            for line in journal.lines:
                if b'"type":"checkpoint"' in line or b'"type":"seal"' in line:
                    ledger.append(line.rstrip(b"\n"))
            if n == 0:
                write_bundle(folder / "INC-0.zip", key, journal.bytes())
        ledger.append(json.dumps({"data": {"session": "s-2", "reason": "retention"}, "session": "prunes",
                                  "type": "prune"}, separators=(",", ":")).encode())
        ledger.export(folder / "ledger-export")
    return folder, key


def review(folder, tmp_path, capsys, *extra):
    code = main(["review", str(folder), "--index", str(tmp_path / "i"), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)["problems"]


def test_sessions_the_ledger_has_and_the_sources_do_not(device, tmp_path, capsys):
    folder, key = device
    code, problems = review(folder, tmp_path, capsys)
    kinds = {(p["kind"], p["session"]) for p in problems}
    assert ("missing", "s-1") in kinds and ("pruned", "s-2") in kinds
    assert ("missing", "s-0") not in kinds and ("missing", "s-2") not in kinds
    assert any(p["kind"] == "unwitnessed" and "not in a head cosigned by any witness" in p["detail"] for p in problems)
    assert next(p for p in problems if p["kind"] == "missing")["device"] == key.fingerprint
    assert code == 1


def test_a_rewritten_ledger_is_a_fork(device, tmp_path, capsys):
    folder, _ = device
    entries = folder / "ledger-export" / "entries"
    lines = entries.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"type":"checkpoint"', b'"type":"checkpoinT"')
    entries.write_bytes(b"".join(lines))
    _, problems = review(folder, tmp_path, capsys)
    assert any(p["kind"] == "fork" and "do not hash to the signed head" in p["detail"] for p in problems)
    entries.write_bytes(b"".join(lines[:3]))
    _, problems = review(folder, tmp_path, capsys)
    assert any(p["kind"] == "fork" and "entries were withheld" in p["detail"] for p in problems)


def test_a_head_signed_by_another_key_is_a_fork(device, tmp_path, capsys, monkeypatch):
    folder, _ = device
    other = tmp_path / "other"
    from agent.home import Home

    stranger = Home(other)
    DeviceKey.init(stranger)
    with Ledger.open(stranger) as ledger:
        ledger.append(b'{"x":1}')
        ledger.export(other / "export")
    (folder / "ledger-export" / "checkpoint").write_bytes((other / "export" / "checkpoint").read_bytes())
    _, problems = review(folder, tmp_path, capsys)
    assert any(p["kind"] == "fork" and "not signed by the ledger's key" in p["detail"] for p in problems)


def _mth(entries: list[bytes]) -> bytes:
    """RFC 6962's definition, recursively."""
    if len(entries) == 1:
        return leaf_hash(entries[0])
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return node_hash(_mth(entries[:k]), _mth(entries[k:]))


def test_prefix_roots_are_rfc6962():
    entries = [f"entry {i}".encode() for i in range(37)]
    roots = _prefix_roots(entries, range(1, 38))
    assert [roots[n] for n in range(1, 38)] == [_mth(entries[:n]) for n in range(1, 38)]
