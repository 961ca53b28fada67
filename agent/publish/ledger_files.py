"""The device ledger's files in the fleet store, from a ledger export (``chaperone ledger export -o DIR``).

An export folder holds ``origin``, ``vkey``, ``entries`` (the first N entries,
one a line), ``checkpoint`` (the signed head of size N) and ``cosigned/<size>``
(each cosigned head). Published objects never change, so what grows is
published in pieces, each under a name that says what it holds:

    <device>/ledger/origin, <device>/ledger/vkey
    <device>/ledger/entries/<from>-<to>         entries from..to-1, one a line (zero-padded to 12 digits)
    <device>/ledger/checkpoints/<size>-<sha8>   a signed head
    <device>/ledger/cosigned/<size>-<sha8>      a cosigned head (a head cosigned again later is a new object)

So a reader concatenates the entry pieces in order and checks them against
the heads; a piece missing or overlapping is itself evidence.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Protocol

from agent.publish.spool import Spool


class Spooler(Protocol):
    """What this module needs of a ``Publisher``."""

    spool: Spool

    def add_file(self, name: str, kind: str, path: Path, session: str | None = None) -> bool: ...

_WIDTH = 12


def _sha8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


def published_entries(publisher: Spooler) -> int:
    """How many entries are spooled or published already (the end of the last piece)."""
    ends = [int(item.name.rsplit("-", 1)[1]) for item in publisher.spool.all_items()
            if "/ledger/entries/" in item.name]
    return max(ends, default=0)


def spool_ledger_export(publisher: Spooler, export: Path) -> list[str]:
    """Spool what of ``export`` is not spooled yet; the names spooled now."""
    added: list[str] = []

    def add(name: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(dir=publisher.spool.files, prefix=".ledger-", delete=False) as temp:
            temp.write(data)
        try:
            if publisher.add_file(f"ledger/{name}", "ledger", Path(temp.name)):
                added.append(name)
        finally:
            Path(temp.name).unlink(missing_ok=True)

    for name in ("origin", "vkey"):
        path = export / name
        if path.is_file():
            add(name, path.read_bytes())
    entries_path = export / "entries"
    if entries_path.is_file():
        start = published_entries(publisher)
        with open(entries_path, "rb") as stream:
            lines = stream.read().splitlines(keepends=True)
        if len(lines) > start:
            add(f"entries/{start:0{_WIDTH}d}-{len(lines):0{_WIDTH}d}", b"".join(lines[start:]))
    checkpoint = export / "checkpoint"
    if checkpoint.is_file():
        note = checkpoint.read_bytes()
        size = _size_of(note)
        if size is not None:
            add(f"checkpoints/{size:0{_WIDTH}d}-{_sha8(note)}", note)
    cosigned = export / "cosigned"
    if cosigned.is_dir():
        for path in sorted(cosigned.iterdir(), key=lambda p: p.name):
            if path.is_file() and path.name.isdigit():
                note = path.read_bytes()
                add(f"cosigned/{int(path.name):0{_WIDTH}d}-{_sha8(note)}", note)
    return added


def _size_of(note: bytes) -> int | None:
    """The tree size on a C2SP checkpoint's second line."""
    lines = note.split(b"\n", 2)
    if len(lines) < 2 or not lines[1].isdigit():
        return None
    return int(lines[1])
