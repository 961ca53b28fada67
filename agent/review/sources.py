"""Where the review finds bundles: zips and bundle folders under local folders, and ``s3://`` prefixes.

A folder is walked without following links; a sub-folder holding ``SHA256SUMS``
is a bundle folder (not walked further); a file named ``*.zip`` is a zip
bundle; anything else is counted as skipped. A source that cannot be read at
all (missing, not a folder or zip, no permission) is a ``SourceError``: the
review cannot be complete, so it exits 2.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.bundle.layout import SUMS
from agent.errors import ChaperoneError
from agent.text import escape


class SourceError(ChaperoneError):
    """A source of bundles cannot be read."""


@dataclass(frozen=True)
class Found:
    """A bundle to review: ``label`` as the user named it, ``path`` on this machine, ``place`` and ``stamp`` to
    recognise it unchanged in the index (a path with its size and time, or an S3 key with its ETag)."""

    label: str
    path: Path
    place: str
    stamp: str
    #: Whether an unchanged stamp may stand for unchanged bytes. Not for local files: whoever can write the
    #: folder can change a bundle in place and set its size and times back, so local bundles are always
    #: hashed (about 60 µs for a 25 KB zip); an S3 object's ETag changes with its content.
    trust_stamp: bool = False


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _folder_stamp(path: Path, st: os.stat_result) -> str:
    parts = [_stamp(st)]
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        parts.append(f"{entry.name}={_stamp(entry.stat(follow_symlinks=False))}")
    return "|".join(parts)


def _is_ledger_export(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("origin", "vkey", "entries"))


def local_bundles(source: str, skipped: list[str], ledgers: list[Path] | None = None) -> Iterator[Found]:
    """The bundles under a local folder, or the one zip or bundle folder named; the ledger exports
    (``chaperone ledger export`` folders) found on the way go to ``ledgers``."""
    root = Path(source)
    try:
        st = root.stat()
    except FileNotFoundError:
        raise SourceError(f"There is no file or folder {escape(source)}; give folders or zips of bundles, "
                          "or s3://bucket/prefix.") from None
    except OSError as exc:
        raise SourceError(f"Cannot read {escape(source)}: {exc.strerror}.") from None
    if stat.S_ISREG(st.st_mode):
        yield Found(source, root, f"file:{root.absolute()}", _stamp(st))
        return
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(f"{escape(source)} is neither a folder nor a file; give folders or zips of bundles.")
    if (root / SUMS).is_file():
        yield Found(source, root, f"dir:{root.absolute()}", _folder_stamp(root, st))
        return
    if _is_ledger_export(root):
        if ledgers is not None:
            ledgers.append(root)
        return
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            if folder == root:
                raise SourceError(f"Cannot read the folder {escape(source)}: {exc.strerror}.") from None
            skipped.append(f"{folder}: {exc.strerror}")
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if (path / SUMS).is_file():
                        yield Found(str(path), path, f"dir:{path.absolute()}",
                                    _folder_stamp(path, entry.stat(follow_symlinks=False)))
                    elif _is_ledger_export(path):
                        if ledgers is not None:
                            ledgers.append(path)
                    else:
                        pending.append(path)
                elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(".zip"):
                    yield Found(str(path), path, f"file:{path.absolute()}", _stamp(entry.stat(follow_symlinks=False)))
                else:
                    skipped.append(str(path))
            except OSError as exc:
                skipped.append(f"{path}: {exc.strerror}")
