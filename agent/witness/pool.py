"""Sending the ledger's head to every configured witness at once, and keeping what they cosign.

``WitnessPool.push()`` signs a head over the whole ledger (in a thread: it
syncs), sends it to every witness concurrently (``WitnessClient.submit``, each
bounded by its time-out), keeps every cosignature in the ledger
(``Ledger.record_cosignatures``, in a thread), and returns a ``PushResult``:
the head, each witness's typed answer, and whether a quorum cosigned it. It
never raises for what a witness or the network does; a ``Conflict`` (the
witness holds a head that ours does not extend) is reported in
``PushResult.forks`` for the caller to raise an alarm.

Each witness is sent the head with a consistency proof from the size it last
cosigned for us (remembered here, and on start read from the ledger's
``cosigned.jsonl``); a witness that lost track answers 409 with its size and
the client retries once from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.ledger import Ledger, SignedHead
from agent.ledger.note import NoteError
from agent.witness.client import DEFAULT_TIMEOUT, AddResult, Conflict, Cosigned, Refused, WitnessClient


@dataclass(frozen=True)
class PushResult:
    head: SignedHead
    results: dict[str, AddResult] = field(default_factory=dict)
    cosigned_by: tuple[str, ...] = ()
    quorum: int = 1

    @property
    def quorum_met(self) -> bool:
        return len(self.cosigned_by) >= self.quorum

    @property
    def forks(self) -> dict[str, AddResult]:
        """Witnesses whose answer means this device's history was forked or cut: a 409 after the retry,
        or a 422 after the witness named its size (it holds a head ours does not extend)."""
        return {name: r for name, r in self.results.items()
                if isinstance(r, Conflict) or (isinstance(r, Refused) and r.status == 422)}

    def failures(self) -> dict[str, AddResult]:
        return {name: r for name, r in self.results.items() if not isinstance(r, Cosigned)}


class WitnessPool:
    """The witnesses of one ledger: ``witnesses`` as ``(url, vkey)`` pairs."""

    def __init__(self, ledger: Ledger, witnesses: Sequence[tuple[str, str]], *, quorum: int = 1,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.ledger = ledger
        self.quorum = quorum
        self.clients = [WitnessClient(url, vkey, timeout=timeout) for url, vkey in witnesses]
        self._sizes: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @property
    def verifiers(self) -> list:
        return [c.verifier for c in self.clients]

    async def push(self) -> PushResult:
        """Sign and send the current head to every witness; see the module's docstring."""
        async with self._lock:  # one push at a time: each starts from the sizes the last one reached
            head = await asyncio.to_thread(self.ledger.sign_head)
            results = await asyncio.gather(*(self._send(c, head) for c in self.clients))
            by_name = {c.name: r for c, r in zip(self.clients, results, strict=True)}
            cosigned = {c.name: r for c, r in zip(self.clients, results, strict=True) if isinstance(r, Cosigned)}
            kept: tuple[str, ...] = ()
            if cosigned:
                signatures = [s for r in cosigned.values() for s in r.signatures]
                try:
                    record = await asyncio.to_thread(self.ledger.record_cosignatures, head.note, signatures,
                                                     self.verifiers)
                    kept = tuple(n for n in record.witnesses if n in cosigned)
                except NoteError:
                    kept = ()
            return PushResult(head, by_name, kept, self.quorum)

    async def _send(self, client: WitnessClient, head: SignedHead) -> AddResult:
        old = self._sizes.get(client.name)
        if old is None:
            old = await asyncio.to_thread(self.ledger.last_cosigned_size, client.name)
        result = await client.submit(head.note, old, self.ledger.consistency_proof)
        if isinstance(result, Cosigned):
            self._sizes[client.name] = head.size
        return result

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
