"""The state of the watched trees at session start, kept up to date as events arrive.

- :class:`TreeIndex`: a compact signature of every path (inode, size, mtime,
  mode) per folder. Rescanning a subtree against it yields the operations that
  happened there, which answers inotify overflows, folders that could not be
  watched, and the final check at session end.
- :class:`ContentBaseline`: SHA-256 (and, for text configuration files, the
  text) of the files whose "before" a record must show; the text stays in
  memory only, capped per file and in total.

:func:`save_baseline` keeps both in the session folder, so that an agent
started again after a gap can compare the tree with them: the signatures and
the start hashes only (``baseline.bin``, 0600), never a file's content. Its
SHA-256 goes into the journal (a ``baseline`` record), and :func:`load_baseline`
refuses a file that no longer matches it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.atomic import replacing, write_all
from agent.capture.bursts import Op

Signature = int  # one int per path keeps the index small: 300,000 paths in about 30 MB


def signature(st: os.stat_result) -> Signature:
    """What identifies a path's state, with "is a folder" in the lowest bit.

    A folder's own listing changes (its mtime) are not modifications of it.
    The change time (ctime) is part of it: a write through a hard link
    elsewhere, with the mtime set back (``touch -r``), still changes it, and
    so do ``chmod``, ``chown`` and a new link; nobody can set it back.
    """
    if stat.S_ISDIR(st.st_mode):
        return (hash((st.st_ino, stat.S_IFDIR)) << 1) | 1
    return hash((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)) << 1


def is_dir_sig(sig: Signature) -> bool:
    return bool(sig & 1)


class TreeIndex:
    """``{folder: {name: signature}}`` for every folder below the roots; symlinks are never followed."""

    def __init__(self) -> None:
        self._dirs: dict[bytes, dict[bytes, Signature]] = {}
        self._inodes: dict[bytes, int] = {}

    def folders(self) -> dict[bytes, int]:
        """Each indexed folder and its inode number."""
        return dict(self._inodes)

    def scan(self, root: bytes, on_file: Callable[[bytes, os.stat_result], None] | None = None) -> int:
        """Index ``root`` and everything below it; returns the number of paths."""
        count = 0
        for folder, entries, _ in self._walk(root, on_file):
            self._dirs[folder] = entries
            count += len(entries)
        return count

    def rescan(self, root: bytes) -> list[Op]:
        """The operations that explain the difference between the index and the tree now."""
        ops: list[Op] = []
        seen: set[bytes] = set()
        for folder, entries, _ in self._walk(root, None):
            seen.add(folder)
            old = self._dirs.get(folder, {})
            for name, sig in entries.items():
                before = old.get(name)
                if before == sig:
                    continue
                path = os.path.join(folder, name)
                if before is None:
                    ops.append(Op("created", path, is_dir_sig(sig), via="rescan"))
                elif is_dir_sig(before) != is_dir_sig(sig):
                    ops.append(Op("deleted", path, is_dir_sig(before), via="rescan"))
                    ops.append(Op("created", path, is_dir_sig(sig), via="rescan"))
                elif not is_dir_sig(sig):
                    ops.append(Op("modified", path, False, via="rescan"))
            for name, before in old.items():
                if name not in entries:
                    ops.append(Op("deleted", os.path.join(folder, name), is_dir_sig(before), via="rescan"))
            self._dirs[folder] = entries
        for folder, entries in self._drop_unseen(root, seen):
            for name, before in entries.items():
                ops.append(Op("deleted", os.path.join(folder, name), is_dir_sig(before), via="rescan"))
        return ops

    def _drop_unseen(self, root: bytes, seen: set[bytes]) -> list[tuple[bytes, dict[bytes, Signature]]]:
        """Forget the indexed folders below ``root`` that a walk no longer found; returns them."""
        prefix = root.rstrip(b"/") + b"/"
        gone = [f for f in self._dirs if (f == root or f.startswith(prefix)) and f not in seen]
        dropped = []
        for folder in gone:
            dropped.append((folder, self._dirs.pop(folder)))
            self._inodes.pop(folder, None)
        return dropped

    def holds(self, path: bytes) -> bool | None:
        """Whether ``path`` is indexed; None when its folder is not (nothing is known of it)."""
        folder, name = os.path.split(path)
        entries = self._dirs.get(folder)
        return None if entries is None else name in entries

    def update(self, path: bytes, st: os.stat_result | None) -> None:
        """Record what an individual event showed (``None``: the path is gone)."""
        folder, name = os.path.split(path)
        entries = self._dirs.get(folder)
        if entries is not None:
            self._put(entries, path, name, st)

    def update_names(self, folder: bytes, names: Iterable[bytes]) -> None:
        """:meth:`update` for each name in ``folder`` as it is now (``lstat``): one folder lookup for all."""
        entries = self._dirs.get(folder)
        if entries is None:
            return
        prefix = folder if folder.endswith(b"/") else folder + b"/"
        for name in names:
            path = prefix + name
            try:
                st: os.stat_result | None = os.lstat(path)
            except OSError:
                st = None
            self._put(entries, path, name, st)

    def _put(self, entries: dict[bytes, Signature], path: bytes, name: bytes, st: os.stat_result | None) -> None:
        """One entry of a folder as ``st`` shows it (``None``: gone), its subtree indexed or forgotten."""
        if st is None:
            gone = entries.pop(name, None)
            if gone is not None and is_dir_sig(gone):
                self.forget(path)
            return
        entries[name] = sig = signature(st)
        if is_dir_sig(sig) and path not in self._dirs:
            self.scan(path)

    def dump(self) -> Iterator[tuple[bytes, int, dict[bytes, Signature]]]:
        """Each folder, its inode and its entries (for :func:`save_baseline`)."""
        for folder, entries in list(self._dirs.items()):
            yield folder, self._inodes.get(folder, 0), dict(entries)

    def restore(self, folder: bytes, inode: int, entries: dict[bytes, Signature]) -> None:
        """Put back one folder as :meth:`dump` gave it."""
        self._dirs[folder] = entries
        self._inodes[folder] = inode

    def forget(self, root: bytes) -> None:
        prefix = root.rstrip(b"/") + b"/"
        for folder in [f for f in self._dirs if f == root or f.startswith(prefix)]:
            del self._dirs[folder]
            self._inodes.pop(folder, None)

    def _walk(
        self, root: bytes, on_file: Callable[[bytes, os.stat_result], None] | None
    ) -> Iterator[tuple[bytes, dict[bytes, Signature], int]]:
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                folder_st = os.lstat(folder)
                if not stat.S_ISDIR(folder_st.st_mode):
                    continue
                scanner = os.scandir(folder)
            except OSError:
                continue  # vanished or unreadable: its parent's listing says what is known
            entries: dict[bytes, Signature] = {}
            with scanner:
                for item in scanner:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    entries[item.name] = sig = signature(st)
                    if sig & 1:
                        stack.append(item.path)
                    elif on_file is not None and stat.S_ISREG(st.st_mode):
                        on_file(item.path, st)
            self._inodes[folder] = folder_st.st_ino
            yield folder, entries, folder_st.st_ino


@dataclass
class Known:
    sha256: str | None
    text: str | None = None  # only for text configuration files within the caps


class ContentBaseline:
    """The last known content of files: from the start of the session, then from each record (thread-safe)."""

    def __init__(self, *, max_file_bytes: int = 1 << 20, max_total_bytes: int = 64 << 20, max_entries: int = 200_000):
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_entries = max_entries
        self._at_start: dict[bytes, Known] = {}
        self._latest: dict[bytes, Known] = {}
        self._text_bytes = 0
        self._lock = threading.Lock()

    def remember_start(self, path: bytes, sha256: str | None, text: str | None) -> None:
        with self._lock:
            self._at_start[path] = Known(sha256, self._capped(text))

    def remember(self, path: bytes, sha256: str | None, text: str | None) -> None:
        with self._lock:
            self._drop_latest(path)
            if len(self._latest) >= self.max_entries:
                self._drop_latest(next(iter(self._latest)))
            self._latest[path] = Known(sha256, self._capped(text))

    def forget(self, path: bytes) -> None:
        """``path`` is gone (deleted or moved away)."""
        with self._lock:
            self._drop_latest(path)
            self._latest[path] = Known(None)

    def last(self, path: bytes) -> Known | None:
        """What we last knew of ``path``: its latest record, else the start of the session."""
        with self._lock:
            return self._latest.get(path) or self._at_start.get(path)

    def started_with(self) -> list[bytes]:
        with self._lock:
            return list(self._at_start)

    def start_hashes(self) -> dict[bytes, str]:
        """The SHA-256 of each file at the start (what :func:`save_baseline` keeps; never the text)."""
        with self._lock:
            return {path: known.sha256 for path, known in self._at_start.items() if known.sha256 is not None}

    def _drop_latest(self, path: bytes) -> None:
        old = self._latest.pop(path, None)
        if old is not None and old.text is not None:
            self._text_bytes -= len(old.text)

    def _capped(self, text: str | None) -> str | None:
        if text is None or len(text) > self.max_file_bytes or self._text_bytes + len(text) > self.max_total_bytes:
            return None
        self._text_bytes += len(text)
        return text


# --- the baseline on disk -------------------------------------------------------------------------

BASELINE_FILE = "baseline.bin"
# The header names the format and the hash the signatures were made with (Python's, which may differ
# in another version: a baseline from another Python is read, and every file is compared by content).
_MAGIC = b"chaperone-baseline/1 "
_U32, _U16, _U64 = struct.Struct("<I"), struct.Struct("<H"), struct.Struct("<Q")
_SIG_BYTES = 9  # a signature is a 64-bit hash shifted by one bit, signed
MAX_BASELINE_BYTES = 1 << 30


def _hash_tag() -> bytes:
    return f"py{sys.version_info[0]}.{sys.version_info[1]}-{sys.hash_info.algorithm}\n".encode()


def save_baseline(path: Path, index: TreeIndex, contents: ContentBaseline) -> dict:
    """Write the index's signatures and the start hashes to ``path`` (0600, atomically).

    Returns the ``baseline`` record's data: ``file`` (its name), ``sha256``,
    ``bytes``, ``folders``, ``paths``, ``hashes``. Raises OSError when it
    cannot be written (a full disk).
    """
    digest = hashlib.sha256()
    size = folders = paths = 0
    buf = bytearray(_MAGIC + _hash_tag())

    def flush(fd: int, final: bool = False) -> None:
        nonlocal size
        if len(buf) >= (1 << 20) or (final and buf):
            digest.update(buf)
            write_all(fd, bytes(buf))
            size += len(buf)
            buf.clear()

    with replacing(path) as fd:
        for folder, inode, entries in index.dump():
            folders += 1
            paths += len(entries)
            buf += b"D" + _U32.pack(len(folder)) + folder + _U64.pack(inode) + _U32.pack(len(entries))
            for name, sig in entries.items():
                buf += _U16.pack(len(name)) + name + sig.to_bytes(_SIG_BYTES, "little", signed=True)
            flush(fd)
        hashes = contents.start_hashes()
        for file, sha in hashes.items():
            buf += b"H" + _U32.pack(len(file)) + file + bytes.fromhex(sha)
            flush(fd)
        buf += b"E"
        flush(fd, final=True)
    return {"file": path.name, "sha256": digest.hexdigest(), "bytes": size, "folders": folders, "paths": paths,
            "hashes": len(hashes)}


@dataclass
class SavedBaseline:
    index: TreeIndex
    start_hashes: dict[bytes, str]
    same_hash: bool  # the signatures were made by this Python's hash: comparable with a new scan


def load_baseline(path: Path, expected_sha256: str | None) -> SavedBaseline:
    """Read what :func:`save_baseline` wrote. ``ValueError`` (a clause saying why) when the file is
    missing, damaged, or not the one whose SHA-256 the journal holds (``expected_sha256``)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BASELINE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError("the saved baseline is missing") from None
    except OSError as exc:
        raise ValueError(f"the saved baseline cannot be read ({exc.strerror or exc})") from None
    if expected_sha256 is None:
        raise ValueError("the journal holds no record of a saved baseline")
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ValueError("the saved baseline is not the one the journal recorded (it was changed or replaced)")
    if not data.startswith(_MAGIC):
        raise ValueError("the saved baseline is not in a format this version reads")
    header_end = data.index(b"\n", len(_MAGIC)) + 1
    same_hash = data[len(_MAGIC):header_end] == _hash_tag()
    index, hashes = TreeIndex(), {}
    try:
        pos = header_end
        while data[pos:pos + 1] != b"E":
            kind = data[pos:pos + 1]
            (n,) = _U32.unpack_from(data, pos + 1)
            name = data[pos + 5:pos + 5 + n]
            pos += 5 + n
            if kind == b"D":
                (inode,) = _U64.unpack_from(data, pos)
                (count,) = _U32.unpack_from(data, pos + 8)
                pos += 12
                entries: dict[bytes, Signature] = {}
                for _ in range(count):
                    (m,) = _U16.unpack_from(data, pos)
                    entry = data[pos + 2:pos + 2 + m]
                    pos += 2 + m
                    entries[entry] = int.from_bytes(data[pos:pos + _SIG_BYTES], "little", signed=True)
                    pos += _SIG_BYTES
                index.restore(name, inode, entries)
            elif kind == b"H":
                hashes[name] = data[pos:pos + 32].hex()
                pos += 32
            else:
                raise ValueError
    except (ValueError, struct.error, IndexError):
        raise ValueError("the saved baseline is damaged") from None
    return SavedBaseline(index, hashes, same_hash)
