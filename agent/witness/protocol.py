"""The C2SP tlog-witness wire format (https://c2sp.org/tlog-witness): pure functions, no HTTP.

``POST <prefix>/add-checkpoint`` carries::

    old <size of the last checkpoint the witness cosigned for this origin>
    <consistency proof hashes, base64, one a line, at most 63>

    <the checkpoint note>

A witness answers 200 with its cosignature lines, 409 with its own size
(``text/x.tlog.size``: the decimal size and a newline), or 400, 403, 404, 422.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from agent.ledger.checkpoint import MAX_PROOF_HASHES
from agent.ledger.merkle import HASH_SIZE
from agent.ledger.note import NoteError, b64decode

PATH = "/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: The largest request body a witness reads (a checkpoint with many signatures and 63 hashes is ~20 KB).
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def _size(text: str) -> int:
    if not text or (text != "0" and text.startswith("0")) or not text.isascii() or not text.isdigit():
        raise NoteError("a size is a decimal number without leading zeroes")
    value = int(text)
    if value > (1 << 63) - 1:
        raise NoteError("a size is below 2^63")
    return value


def format_request(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    lines = [f"old {old_size}"] + [base64.b64encode(h).decode("ascii") for h in proof]
    return ("\n".join(lines) + "\n\n").encode("ascii") + note


def parse_request(body: bytes) -> AddCheckpoint:
    """The parts of an add-checkpoint body; ``NoteError`` (answered with 400) if it is malformed."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise NoteError("the request has an old size line, proof lines, a blank line and a checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise NoteError("the request's header is ASCII") from None
    if not lines[0].startswith("old "):
        raise NoteError("the request starts with 'old <size>'")
    old_size = _size(lines[0][4:])
    proof = []
    for line in lines[1:]:
        raw = b64decode(line)
        if len(raw) != HASH_SIZE:
            raise NoteError("a proof line is a 32-byte hash in base64")
        proof.append(raw)
    if len(proof) > MAX_PROOF_HASHES:
        raise NoteError("a request carries at most 63 proof lines")
    return AddCheckpoint(old_size, tuple(proof), note)


def format_size(size: int) -> bytes:
    return b"%d\n" % size


def parse_size(body: bytes) -> int:
    """The witness's size in a 409 answer; ``NoteError`` if the body is not one."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise NoteError("a size answer is ASCII") from None
    if not text.endswith("\n"):
        raise NoteError("a size answer ends with a newline")
    return _size(text[:-1])
