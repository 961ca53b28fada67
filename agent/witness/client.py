"""A C2SP tlog-witness client (aiohttp): send a head, get cosignatures, as a typed result.

``WitnessClient.submit`` never raises for anything a witness or the network
can do; it returns one of:

``Cosigned(signatures)``
    the witness's cosignature lines, each checked against its verifier key.
``Conflict(witness_size)``
    the witness holds another head for this origin: after one retry with the
    size it named, or at once when that size is larger than ours (this
    device's history was forked or cut: an alarm).
``Refused(status, reason)``
    400, 403 (it does not trust our key), 404 (it does not know our origin),
    422 (it rejected our consistency proof), 413.
``Failed(kind, reason)``
    ``timeout``, ``unreachable``, ``garbage`` (an answer that is not the
    protocol, or a cosignature that does not verify) or ``server-error`` (5xx).

It is async and bounded by ``timeout`` (whole request), so it never blocks
the caller's event loop. The consistency proof comes from ``prove(old,
new)``, a callable run in a thread (it reads the ledger's files).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.ledger.checkpoint import Checkpoint
from agent.ledger.cosignature import CosignatureVerifier, vkey_verifier
from agent.ledger.note import (
    Note,
    NoteError,
    Signature,
    parse_note,
    parse_signature_lines,
    verified_by,
)
from agent.witness.protocol import PATH, format_request, parse_size

#: The longest answer read from a witness.
MAX_ANSWER = 64 * 1024
DEFAULT_TIMEOUT = 10.0

Prover = Callable[[int, int], Sequence[bytes]]

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class Cosigned:
    signatures: tuple[Signature, ...]
    #: The size the request was finally sent with (after a 409, the witness's).
    old_size: int


@dataclass(frozen=True)
class Conflict:
    witness_size: int
    reason: str


@dataclass(frozen=True)
class Refused:
    status: int
    reason: str


@dataclass(frozen=True)
class Failed:
    kind: str  # "timeout", "unreachable", "garbage", "server-error"
    reason: str


AddResult = Cosigned | Conflict | Refused | Failed


class WitnessClient:
    """One witness: its URL (the submission prefix) and its verifier key (type 0x04)."""

    def __init__(self, url: str, vkey: str, *, timeout: float = DEFAULT_TIMEOUT,
                 session: aiohttp.ClientSession | None = None) -> None:
        verifier = vkey_verifier(vkey)
        if not isinstance(verifier, CosignatureVerifier):
            raise NoteError("a witness's verifier key is a cosignature key (type 0x04)")
        self.url = url.rstrip("/") + PATH
        self.verifier = verifier
        self.name = verifier.name
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # aiohttp costs the agent ~20 MB: it is loaded only once a witness is actually asked
            import aiohttp
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def add_checkpoint(self, note: bytes, old_size: int, proof: Sequence[bytes]) -> AddResult:
        """One ``add-checkpoint`` request; a 409 comes back as ``Conflict`` (no retry here)."""
        session = await self._get_session()
        import aiohttp  # loaded by _get_session already (see there): only its ClientError is needed here
        body = format_request(old_size, proof, note)
        try:
            async with asyncio.timeout(self.timeout):
                async with session.post(self.url, data=body, allow_redirects=False,
                                        headers={"Content-Type": "text/plain"}) as resp:
                    answer = await resp.content.read(MAX_ANSWER + 1)
                    status = resp.status
        except TimeoutError:
            return Failed("timeout", f"no answer from {self.url} within {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            return Failed("unreachable", f"{self.url}: {type(exc).__name__}: {exc}"[:300])
        except OSError as exc:
            return Failed("unreachable", f"{self.url}: {exc.strerror or exc}"[:300])
        if len(answer) > MAX_ANSWER:
            return Failed("garbage", f"{self.url} answered with more than {MAX_ANSWER} bytes")
        return self._read_answer(note, status, answer)

    def _read_answer(self, note: bytes, status: int, answer: bytes) -> AddResult:
        text = answer[:200].decode("utf-8", "replace").strip()
        if status == 200:
            return self._cosignatures(note, answer)
        if status == 409:
            try:
                return Conflict(parse_size(answer), "the witness holds another head for this origin")
            except NoteError:
                return Failed("garbage", f"{self.url} answered 409 without its size")
        if status in (400, 403, 404, 413, 422):
            return Refused(status, text or {403: "forbidden", 404: "unknown origin"}.get(status, "refused"))
        if status >= 500:
            return Failed("server-error", f"{self.url} answered {status}: {text}"[:300])
        return Failed("garbage", f"{self.url} answered {status}, which the protocol does not use")

    def _cosignatures(self, note: bytes, answer: bytes) -> AddResult:
        try:
            lines = parse_signature_lines(answer.decode("utf-8"))
            text = parse_note(note).text
            mine = [s for s in lines if (s.name, s.key_id) == (self.name, self.verifier.key_id)]
            if not mine or not verified_by(Note(text, tuple(mine)), [self.verifier]):
                return Failed("garbage", f"{self.url} answered 200 without a cosignature by {self.name}")
        except (NoteError, UnicodeDecodeError) as exc:
            return Failed("garbage", f"{self.url} answered 200 with something that is not its cosignature ({exc})")
        return Cosigned(tuple(mine), 0)

    async def submit(self, note: bytes, old_size: int, prove: Prover) -> AddResult:
        """Send the head in ``note`` with a consistency proof from ``old_size`` (the size this witness
        last cosigned for us, 0 if none); on a 409, retry once from the size the witness names."""
        try:
            size = Checkpoint.from_note(parse_note(note)).size
        except NoteError as exc:
            raise ValueError(f"not a checkpoint note: {exc}") from None
        for attempt in range(2):
            if old_size > size:
                return Conflict(old_size, f"the witness has cosigned {old_size} entries of this ledger, "
                                          f"which now has {size}: this device's history was cut or forked")
            proof = await asyncio.to_thread(prove, old_size, size) if 0 < old_size < size else []
            result = await self.add_checkpoint(note, old_size, proof)
            if isinstance(result, Cosigned):
                return Cosigned(result.signatures, old_size)
            if not isinstance(result, Conflict) or attempt == 1:
                return result
            if result.witness_size == old_size:
                return Conflict(result.witness_size, "the witness holds another head of the same size: "
                                                     "this device's history was forked")
            old_size = result.witness_size
        raise AssertionError("unreachable")
