"""The witness client against in-process HTTP servers on 127.0.0.1: the real witness app, and
servers that misbehave (garbage, slow, errors). Nothing it meets raises, and it never blocks the loop."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.ledger import CosignatureSigner, Ed25519Signer, Ledger, parse_note
from agent.witness import (
    Conflict,
    Cosigned,
    Failed,
    Refused,
    WitnessClient,
    WitnessState,
)
from agent.witness.server import make_app


@pytest.fixture
def ledger(home):
    with Ledger.open(home) as ledger:
        for i in range(6):
            ledger.append(b"entry %d" % i)
        yield ledger


@pytest.fixture
def witness_key():
    return CosignatureSigner("witness.test/inproc", ed25519.Ed25519PrivateKey.generate())


async def serving(app: web.Application):
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def witness_app(tmp_path, key, ledger) -> tuple[web.Application, WitnessState]:
    state = WitnessState(tmp_path / "wstate.sqlite3")
    state.trust(ledger.origin, ledger.vkey)
    return make_app(key, state), state


def test_cosigned_then_a_409_is_retried_from_the_witness_size(tmp_path, ledger, witness_key):
    async def scenario():
        app, state = witness_app(tmp_path, witness_key, ledger)
        server = await serving(app)
        client = WitnessClient(str(server.make_url("/")), witness_key.vkey)
        try:
            head = ledger.sign_head()
            got = await client.submit(head.note, 0, ledger.consistency_proof)
            assert isinstance(got, Cosigned)
            (sig,) = got.signatures
            assert witness_key.verifier.verify(parse_note(head.note).text.encode(), sig.signature)
            ledger.append(b"entry 6")
            newer = ledger.sign_head()
            # We lost track of what the witness has (sent 0): it says 6, we retry from 6.
            again = await client.submit(newer.note, 0, ledger.consistency_proof)
            assert isinstance(again, Cosigned) and again.old_size == 6
            # An older head than the witness has: a conflict, and no request with a bogus proof.
            stale = await client.submit(head.note, 7, ledger.consistency_proof)
            assert isinstance(stale, Conflict) and stale.witness_size == 7
            return state.head(ledger.origin).size
        finally:
            await client.close()
            await server.close()
            state.close()

    assert asyncio.run(scenario()) == 7


def test_an_unknown_origin_and_an_untrusted_key_are_refused(tmp_path, ledger, witness_key):
    async def scenario():
        state = WitnessState(tmp_path / "empty.sqlite3")
        server = await serving(make_app(witness_key, state))
        client = WitnessClient(str(server.make_url("/")), witness_key.vkey)
        try:
            unknown = await client.submit(ledger.sign_head().note, 0, ledger.consistency_proof)
            state.trust(ledger.origin, Ed25519Signer(ledger.origin, ed25519.Ed25519PrivateKey.generate()).vkey)
            untrusted = await client.submit(ledger.sign_head().note, 0, ledger.consistency_proof)
            return unknown, untrusted
        finally:
            await client.close()
            await server.close()
            state.close()

    unknown, untrusted = asyncio.run(scenario())
    assert isinstance(unknown, Refused) and unknown.status == 404
    assert isinstance(untrusted, Refused) and untrusted.status == 403


def _answer(status: int, body: bytes, content_type: str = "text/plain", delay: float = 0.0):
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=body, content_type=content_type)
    app = web.Application()
    app.router.add_post("/add-checkpoint", handler)
    return app


def _exchange(ledger, witness_key, app, timeout: float = 5.0):
    async def scenario():
        server = await serving(app)
        client = WitnessClient(str(server.make_url("/")), witness_key.vkey, timeout=timeout)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            result = await client.submit(ledger.sign_head().note, 0, ledger.consistency_proof)
        finally:
            task.cancel()
            await client.close()
            await server.close()
        return result, ticks
    return asyncio.run(scenario())


def test_garbage_answers_are_typed_failures(ledger, witness_key):
    head = ledger.sign_head()
    text = parse_note(head.note).text.encode()
    someone_else = CosignatureSigner(witness_key.name, ed25519.Ed25519PrivateKey.generate())
    cases = {
        "not signature lines": (200, b"hello\n"),
        "empty": (200, b""),
        "another key's cosignature": (200, someone_else.cosign(text).line.encode()),
        "a broken cosignature": (200, witness_key.cosign(text).line.replace("\u2014 ", "\u2014  ").encode()),
        "a 409 without a size": (409, b"conflict"),
        "a redirect": (302, b""),
        "a huge answer": (200, b"\xe2\x80\x94 x " + b"A" * 100_000 + b"\n"),
    }
    for what, (status, body) in cases.items():
        result, _ = _exchange(ledger, witness_key, _answer(status, body))
        assert isinstance(result, Failed) and result.kind == "garbage", (what, result)
    # A cosignature by our witness over another checkpoint (a replayed answer) is garbage too.
    other = witness_key.cosign(text.replace(b"\n6\n", b"\n5\n")).line.encode()
    result, _ = _exchange(ledger, witness_key, _answer(200, other))
    assert isinstance(result, Failed) and result.kind == "garbage"
    result, _ = _exchange(ledger, witness_key, _answer(503, b"down for maintenance"))
    assert isinstance(result, Failed) and result.kind == "server-error"
    result, _ = _exchange(ledger, witness_key, _answer(422, b"bad proof"))
    assert isinstance(result, Refused) and result.status == 422 and "bad proof" in result.reason


def test_a_slow_witness_times_out_without_blocking_the_loop(ledger, witness_key):
    result, ticks = _exchange(ledger, witness_key, _answer(200, b"", delay=5), timeout=0.3)
    assert isinstance(result, Failed) and result.kind == "timeout"
    assert ticks >= 5  # the loop kept running other tasks while it waited


def test_nobody_listening_is_unreachable(ledger, witness_key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario():
        client = WitnessClient(f"http://127.0.0.1:{port}", witness_key.vkey, timeout=5)
        try:
            return await client.submit(ledger.sign_head().note, 0, ledger.consistency_proof)
        finally:
            await client.close()

    result = asyncio.run(scenario())
    assert isinstance(result, Failed) and result.kind == "unreachable"


def test_a_log_key_is_not_a_witness_key(ledger):
    with pytest.raises(ValueError):
        WitnessClient("http://127.0.0.1:1", ledger.vkey)
