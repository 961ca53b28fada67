"""A real witness process on 127.0.0.1 (``python -m agent witness serve``) and our client against it."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.ledger import Checkpoint, Ed25519Signer, Ledger, sign_note
from agent.witness import Conflict, Cosigned, WitnessClient
from agent.witness.protocol import format_request
from tests.fixtures.witness import WitnessProcess


def run(coro):
    return asyncio.run(coro)


async def submit(url: str, vkey: str, note: bytes, old: int, prove) -> object:
    client = WitnessClient(url, vkey, timeout=10)
    try:
        return await client.submit(note, old, prove)
    finally:
        await client.close()


async def post(url: str, body: bytes) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url + "/add-checkpoint", data=body) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def grow(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.append(b'{"n":%d,"at":%d}' % (i, ledger.size))


def test_a_real_witness_cosigns_refuses_forks_and_bad_proofs_and_survives_a_restart(home, tmp_path):
    with Ledger.open(home) as ledger, WitnessProcess(tmp_path / "witness") as witness:
        witness.trust(ledger.origin, ledger.vkey)
        witness.start()
        prove = ledger.consistency_proof

        grow(ledger, 5)
        head5 = ledger.sign_head()
        first = run(submit(witness.url, witness.vkey, head5.note, 0, prove))
        assert isinstance(first, Cosigned), first
        kept = ledger.record_cosignatures(head5.note, first.signatures, [WitnessClient(witness.url, witness.vkey).verifier])
        assert kept.witnesses == (witness.name,)

        grow(ledger, 3)
        head8 = ledger.sign_head()
        second = run(submit(witness.url, witness.vkey, head8.note, 5, prove))
        assert isinstance(second, Cosigned) and second.old_size == 5

        # A bad consistency proof: 422, and the witness's head stays at 8.
        grow(ledger, 2)
        head10 = ledger.sign_head()
        proof = ledger.consistency_proof(8, 10)
        bad = [bytes(32)] + proof[1:]
        status, _, _ = run(post(witness.url, format_request(8, bad, head10.note)))
        assert status == 422

        # A fork: the same size with another root, signed by the same ledger key. 409 with the size.
        forged = sign_note(Checkpoint(ledger.origin, 8, b"\x66" * 32).text(), ledger.signer)
        status, ctype, body = run(post(witness.url, format_request(8, [], forged)))
        assert (status, ctype, body) == (409, "text/x.tlog.size", b"8\n")
        # A ledger cut back to 6 entries and regrown (it claims its old size was 5): 409, size 8.
        status, _, body = run(post(witness.url, format_request(5, ledger.consistency_proof(5, 10), head10.note)))
        assert (status, body) == (409, b"8\n")
        # And our client, told the witness is past a head it offers, reports the conflict.
        behind = run(submit(witness.url, witness.vkey, head5.note, 0, prove))
        assert isinstance(behind, Conflict) and behind.witness_size == 8

        # An origin it does not trust: 404. A trusted origin signed by another key: 403.
        stranger = Ed25519Signer("example.org/other", ed25519.Ed25519PrivateKey.generate())
        status, _, _ = run(post(witness.url, format_request(0, [], sign_note(Checkpoint("example.org/other", 1, bytes(32)).text(), stranger))))
        assert status == 404
        impostor = Ed25519Signer(ledger.origin, ed25519.Ed25519PrivateKey.generate())
        status, _, _ = run(post(witness.url, format_request(8, [], sign_note(head10.checkpoint.text(), impostor))))
        assert status == 403
        # Garbage: 400.
        for junk in (b"", b"old 8\n", b"old x\n\nnote\n", b"old 8\n\n" + b"\xff" * 10, b"old 11\n\n" + head10.note):
            status, _, _ = run(post(witness.url, junk))
            assert status == 400, junk

        # Restart: the witness remembers 8. The client starts from 0, is told 8, retries, and is cosigned.
        assert witness.stop() == 0
        witness.start()
        third = run(submit(witness.url, witness.vkey, head10.note, 0, prove))
        assert isinstance(third, Cosigned) and third.old_size == 8, third
        status = json.loads(witness.cli("status", "--json").stdout)
        (log,) = status["logs"]
        assert log["origin"] == ledger.origin and log["size"] == 10 and log["refusals"] >= 3


def test_a_witness_key_is_private_and_trust_checks_the_key(tmp_path):
    with WitnessProcess(tmp_path / "w", name="witness.test/private") as witness:
        key = tmp_path / "w" / "witness" / "key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        assert witness.vkey.startswith("witness.test/private+")
        # A second init prints the same key; another name is refused.
        assert witness.cli("init").stdout.strip() == witness.vkey
        try:
            witness.cli("init", "--name", "other")
            raise AssertionError("a witness's name changed")
        except RuntimeError as exc:
            assert "keeps its name" in str(exc)
        try:
            witness.cli("trust", "example.org/log", witness.vkey)  # a cosignature key is not a log key
            raise AssertionError("a witness key was trusted as a log key")
        except RuntimeError as exc:
            assert "Ed25519 key (type 0x01)" in str(exc)
