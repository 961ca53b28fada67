"""Reading journal lines: streaming, bounded, and without trusting the input.

``iter_lines`` yields raw lines of at most ``MAX_LINE`` bytes. ``parse_line``
checks one line's shape and returns its envelope; ``read_records`` yields
parsed records for display; ``scan_journal`` finds the last good record of a
journal being reopened after a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson

from agent.canonical import canonical_bytes
from agent.errors import BadLine, JournalError, LineTooLong, NotCanonical
from agent.journal.format import MAX_LINE, TAIL, TAIL_START, TS_PATTERN, VERSION, ZERO_HASH, line_hash

_KEYS = frozenset({"v", "seq", "ts", "session", "type", "data", "prev"})
_HEX = frozenset("0123456789abcdef")


class Envelope(NamedTuple):
    """What every record carries outside its data. ``record`` is the parsed
    line when parsing was needed (a tail of an unusual shape), else None."""

    prev: str
    seq: int
    session: str
    ts: str
    type: str
    record: dict | None


def iter_lines(stream: BinaryIO, max_line: int = MAX_LINE) -> Iterator[bytes]:
    """The stream's lines (with their ``\\n``; the last may lack it). Raises
    LineTooLong without reading more than ``max_line + 1`` bytes of a line."""
    readline = stream.readline
    limit = max_line + 1
    while line := readline(limit):
        if len(line) > max_line:
            raise LineTooLong(f"a line is longer than {max_line // (1024 * 1024)} MiB")
        yield line


def match_tail(line: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """The raw ``(prev, seq, session, ts, type)`` bytes of a line of the common
    canonical shape, or None (then use ``parse_record``).

    The line's tail after ``data`` has a fixed shape (see ``format.TAIL``), so
    the envelope is read without parsing ``data``, which the hash chain covers.
    """
    start = line.rfind(TAIL_START)
    if start > 9 and line[start - 1] == 0x7D and line.startswith(b'{"data":{'):  # 0x7D: "}"
        match = TAIL.fullmatch(line, start)
        if match is not None:
            prev, seq, session, ts, type_ = match.groups()
            return prev, seq, session, ts, type_
    return None


def parse_line(line: bytes) -> Envelope:
    """Check a complete line (ending in ``\\n``) and return its envelope; the
    line is parsed only when its tail is not of the common shape."""
    tail = match_tail(line)
    if tail is not None:
        prev, seq, session, ts, type_ = tail
        return Envelope(prev.decode("ascii"), int(seq), session.decode("ascii"), ts.decode("ascii"),
                        type_.decode("ascii"), None)
    record = parse_record(line)
    return Envelope(record["prev"], record["seq"], record["session"], record["ts"], record["type"], record)


def parse_record(line: bytes, canonical: bool = True) -> dict:
    """Parse and validate one line as a record, in canonical form unless
    ``canonical=False`` (for display, where re-encoding would only cost time).
    Raises BadLine.

    orjson reads the line (about five times faster than the standard library: a verifier parses every
    signed line); what it refuses is read again by the standard library, for the same reason as before.
    Either way the line is accepted only if it is the canonical encoding of what was read, so the two
    parsers cannot disagree on a line that passes (they differ only on lines that are refused anyway, such
    as integers beyond 64 bits, which orjson reads as floats)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = _loads(line)
    if type(record) is not dict:
        raise BadLine("it is not a JSON object")
    return _checked(record, line, canonical)


def _loads(line: bytes) -> object:
    try:
        return json.loads(line)
    except UnicodeDecodeError:
        raise BadLine("it is not valid UTF-8") from None
    except ValueError:
        raise BadLine("it is not valid JSON") from None
    except RecursionError:
        raise BadLine("it is nested too deeply") from None


def _checked(record: dict, line: bytes, canonical: bool) -> dict:
    missing = _KEYS.difference(record)
    if missing:
        raise BadLine(f"it lacks {', '.join(sorted(missing))}")
    extra = set(record).difference(_KEYS)
    if extra:
        raise BadLine(f"it has unknown fields {', '.join(sorted(extra))}")
    if record["v"] != VERSION or type(record["v"]) is not int:
        raise BadLine(f"its version is {record['v']!r}, not {VERSION}")
    seq = record["seq"]
    if type(seq) is not int or seq < 0:
        raise BadLine("its seq is not a non-negative integer")
    prev = record["prev"]
    if type(prev) is not str or len(prev) != 64 or not _HEX.issuperset(prev):
        raise BadLine("its prev is not a SHA-256 in lowercase hex")
    for field in ("session", "type"):
        if type(record[field]) is not str or not record[field]:
            raise BadLine(f"its {field} is not a non-empty string")
    if type(record["ts"]) is not str or not TS_PATTERN.fullmatch(record["ts"]):
        raise BadLine("its ts is not a UTC time like 2026-11-22T03:04:05.123456Z")
    if type(record["data"]) is not dict:
        raise BadLine("its data is not an object")
    if not canonical:
        return record
    try:
        encoded = canonical_bytes(record)
    except NotCanonical as exc:
        raise BadLine(f"it cannot be canonical JSON ({exc})") from None
    except RecursionError:
        raise BadLine("it is nested too deeply") from None
    if encoded + b"\n" != line:
        raise BadLine("it is not in canonical form (sorted keys, no spaces, minimal escapes)")
    return record


def read_records(stream: BinaryIO) -> Iterator[dict | BadLine]:
    """Each line parsed as a record, or a BadLine saying why it is not one
    (for display: the report shows such lines instead of stopping)."""
    for line in iter_lines(stream):
        if not line.endswith(b"\n"):
            yield BadLine("the last line is cut short")
            return
        try:
            yield parse_record(line)
        except BadLine as exc:
            yield exc


@dataclass(frozen=True)
class Scan:
    """The good prefix of a journal being reopened."""

    good_size: int  # bytes up to the end of the last good record
    next_seq: int
    head: str
    last_seq: int | None
    last_ts: str | None
    sealed: bool
    bad_reason: str | None  # why the rest (from good_size on) is set aside, or None


def scan_journal(path: Path, session_id: str) -> Scan:
    """Walk the chain of ``path`` and stop at the first line that is torn, not
    a record of ``session_id``, or does not chain. Reads in constant memory."""
    good_size, seq, head = 0, 0, ZERO_HASH
    last_ts, sealed, bad = None, False, None
    try:
        with open(path, "rb") as stream:
            try:
                for line in iter_lines(stream):
                    if not line.endswith(b"\n"):
                        bad = "the last line is torn"
                        break
                    try:
                        env = parse_line(line)
                    except BadLine as exc:
                        bad = f"a line is not a record ({exc})"
                        break
                    if seq == 0 and env.session != session_id:
                        raise JournalError(f"The journal {path} belongs to session {env.session!r}, "
                                           f"not {session_id!r}; open it with its own session id.")
                    if env.seq != seq or env.prev != head or env.session != session_id:
                        bad = f"the record after seq {seq - 1} does not chain"
                        break
                    good_size += len(line)
                    seq, head, last_ts = seq + 1, line_hash(line), env.ts
                    sealed = sealed or env.type == "seal"
            except LineTooLong:
                bad = "a line is too long"
    except OSError as exc:
        raise JournalError(f"Cannot read the journal {path}: {exc.strerror}.") from None
    return Scan(good_size=good_size, next_seq=seq, head=head, last_seq=seq - 1 if seq else None,
                last_ts=last_ts, sealed=sealed, bad_reason=bad)
