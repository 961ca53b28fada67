"""Pushing heads to witnesses (agent.witness.pool) and the agent's ledger link (agent.service.ledger_link)
against an in-process witness on 127.0.0.1: cosignatures kept, a rolled-back ledger is one fork alarm."""

from __future__ import annotations

import asyncio
import shutil

from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.ledger import CosignatureSigner, Ledger
from agent.ledger.ledger import ledger_dir
from agent.service.ledger_link import LedgerLink
from agent.settings import WitnessEntry, WitnessSettings
from agent.witness import Cosigned, WitnessPool, WitnessState
from agent.witness.server import make_app


def test_a_pool_keeps_cosignatures_and_resumes_from_what_the_witness_saw(home, tmp_path):
    key = CosignatureSigner("witness.test/pool", ed25519.Ed25519PrivateKey.generate())

    async def scenario():
        state = WitnessState(tmp_path / "w.sqlite3")
        with Ledger.open(home) as ledger:
            state.trust(ledger.origin, ledger.vkey)
            server = TestServer(make_app(key, state), host="127.0.0.1")
            await server.start_server()
            pool = WitnessPool(ledger, [(str(server.make_url("/")), key.vkey)], quorum=1)
            try:
                ledger.append(b"one")
                first = await pool.push()
                assert first.quorum_met and first.cosigned_by == ("witness.test/pool",)
                ledger.append(b"two")
                second = await pool.push()
                assert second.quorum_met and isinstance(second.results["witness.test/pool"], Cosigned)
                assert second.results["witness.test/pool"].old_size == 1  # a proof from what it saw
                assert ledger.last_cosigned.size == 2
                # A new pool (an agent restart) starts from the ledger's record of that witness.
                again = WitnessPool(ledger, [(str(server.make_url("/")), key.vkey)])
                ledger.append(b"three")
                third = await again.push()
                assert third.results["witness.test/pool"].old_size == 2
                await again.close()
            finally:
                await pool.close()
                await server.close()
                state.close()

    asyncio.run(scenario())


def test_a_ledger_rolled_back_while_the_agent_was_down_is_one_fork_alarm(home, tmp_path):
    """The attack: with the agent stopped, replace the ledger by an older copy (its key kept, so its heads
    are still signed right). The witness has seen more: every push is a 409, and the agent says so once."""
    key = CosignatureSigner("witness.test/fork", ed25519.Ed25519PrivateKey.generate())
    published: list[tuple[str, dict]] = []
    alarms: list[dict] = []

    async def scenario():
        state = WitnessState(tmp_path / "w.sqlite3")
        server = TestServer(make_app(key, state), host="127.0.0.1")
        await server.start_server()
        config = WitnessSettings(witnesses=(WitnessEntry(url=str(server.make_url("/")), vkey=key.vkey),),
                                 quorum=1, max_lag_s=60, on_lag="end")
        try:
            link = LedgerLink(home, config, lambda name, data: published.append((name, data)))
            link.open()
            state.trust(link.ledger.origin, link.ledger.vkey)
            old_copy = tmp_path / "old-ledger"
            link.ledger.append(b"a")
            link.ledger.sign_head()
            shutil.copytree(ledger_dir(home), old_copy)  # the attacker's copy, one entry long
            for line in (b"b", b"c", b"d"):
                link.ledger.append(line)
            await link._push()
            assert link.status()["cosigned"]["size"] == 4 and link.status()["ok"]
            await link.close()
            shutil.rmtree(ledger_dir(home))
            shutil.copytree(old_copy, ledger_dir(home))  # rolled back while the agent was down

            link = LedgerLink(home, config, lambda name, data: published.append((name, data)))
            link.open()
            link._unattended_alarm = alarms.append
            assert link.ledger.size == 1
            link.ledger.append(b"e")
            await link._push()
            link.ledger.append(b"f")
            await link._push()  # the same fork again: no second alarm
            await link.close()
        finally:
            await server.close()
            state.close()

    asyncio.run(scenario())
    assert len(alarms) == 1 and alarms[0]["kind"] == "fork" and alarms[0]["witness"] == "witness.test/fork"
    assert [d for n, d in published if n == "alarm"] == alarms
    assert state_refusals(tmp_path) == [409, 409]  # one per push: the witness is past our size, no retry


def state_refusals(tmp_path) -> list[int]:
    state = WitnessState(tmp_path / "w.sqlite3")
    try:
        return [status for _, _, status, _ in state.refusals()]
    finally:
        state.close()
