"""C2SP tlog-checkpoint bodies and tlog-proof files.

A checkpoint (https://c2sp.org/tlog-checkpoint) is a signed note whose text is::

    <origin>
    <tree size, decimal, no leading zero>
    <root hash, base64>
    [extension lines]

A tlog-proof (https://c2sp.org/tlog-proof, ``c2sp.org/tlog-proof@v1``) is a
self-contained proof that an entry is in a witnessed log::

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <n>
    <inclusion proof hashes, base64, one a line, from the leaf's sibling up>

    <the checkpoint note, verbatim, with its signatures and cosignatures>
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from agent.ledger.merkle import HASH_SIZE
from agent.ledger.note import Note, NoteError, b64decode, check_text, parse_note

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_PROOF_HASHES = 63


def _decimal(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise NoteError(f"the {what} is a decimal number without leading zeroes")
    value = int(text)
    if value > (1 << 63) - 1:
        raise NoteError(f"the {what} is too large")
    return value


def _hash(text: str) -> bytes:
    raw = b64decode(text)
    if len(raw) != HASH_SIZE:
        raise NoteError("a hash is 32 bytes in base64")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its root hash (and extension lines, rarely)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text (ends with a newline)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        text = "\n".join(lines) + "\n"
        check_text(text)
        return text

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint from a note's text (``NoteError`` if it is not one)."""
        check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash")
        origin, size, root, *extensions = lines
        if not origin:
            raise NoteError("a checkpoint's origin is not empty")
        if any(not line for line in extensions):
            raise NoteError("a checkpoint's extension lines are not empty")
        return cls(origin, _decimal(size, "tree size"), _hash(root), tuple(extensions))

    @classmethod
    def from_note(cls, note: Note) -> Checkpoint:
        return cls.parse(note.text)


@dataclass(frozen=True)
class TlogProof:
    """A C2SP tlog-proof: an entry's index, its inclusion proof, and the checkpoint note it leads to."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode("ascii") for h in self.proof]
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        """Read a proof file (``NoteError`` if it is not one). The checkpoint is parsed, not verified."""
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep:
            raise NoteError("a tlog-proof has a blank line before its checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise NoteError("a tlog-proof's header is ASCII") from None
        if lines[0] != PROOF_HEADER:
            raise NoteError(f"a tlog-proof starts with {PROOF_HEADER}")
        i = 1
        extra = None
        if i < len(lines) and lines[i].startswith("extra "):
            extra = b64decode(lines[i][len("extra "):])
            i += 1
        if i >= len(lines) or not lines[i].startswith("index "):
            raise NoteError("a tlog-proof names the entry's index")
        index = _decimal(lines[i][len("index "):], "index")
        hashes = tuple(_hash(line) for line in lines[i + 1:])
        if len(hashes) > MAX_PROOF_HASHES:
            raise NoteError("a tlog-proof has at most 63 proof hashes")
        Checkpoint.from_note(parse_note(checkpoint))
        return cls(index, hashes, checkpoint, extra)
