"""Hashing files that may be hostile: FIFOs, devices, vanishing or growing files.

The rules: ``lstat`` first and never open anything but a regular file; open with
``O_NOFOLLOW | O_NONBLOCK`` (a symlink or FIFO swapped in after the ``lstat``
cannot redirect or block us), ``fstat`` the open file and check it is the same
regular file; compare size and mtime before and after reading, and say so when
the file changed while it was hashed. Errors become a short text in
``HashResult.error``, never an exception.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


@dataclass(frozen=True)
class HashResult:
    kind: str  # file / dir / symlink / special; "missing" when gone, "unknown" when even lstat failed
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    changed_while_hashed: bool = False
    data: bytes | None = None  # the content, only when asked for and small enough


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


def hash_file(path: bytes | str, *, max_bytes: int | None = None, keep_bytes: int = 0) -> HashResult:
    """Hash a regular file safely; other kinds are reported and never opened.

    ``max_bytes``: larger files are not read (``error`` says so).
    ``keep_bytes``: files up to this size also return their content in ``data``.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return HashResult("missing", error="vanished before it could be read")
    except OSError as exc:
        return HashResult("unknown", error=_describe(exc))
    kind = kind_of(st.st_mode)
    if kind == "symlink":
        return _symlink_result(path, st)
    if kind != "file":
        return HashResult(kind, size=st.st_size if kind == "dir" else None)
    if max_bytes is not None and st.st_size > max_bytes:
        return HashResult("file", size=st.st_size, error=f"not hashed: larger than {max_bytes} bytes")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return HashResult("missing", error="vanished before it could be read")
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since the lstat
            return HashResult("symlink", error="replaced by a symlink while being read")
        return HashResult("file", size=st.st_size, error=_describe(exc))
    try:
        return _hash_open_file(fd, st, keep_bytes)
    except OSError as exc:
        return HashResult("file", size=st.st_size, error=_describe(exc))
    finally:
        os.close(fd)


def _hash_open_file(fd: int, before: os.stat_result, keep_bytes: int) -> HashResult:
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_ino, opened.st_dev) != (before.st_ino, before.st_dev):
        return HashResult(kind_of(opened.st_mode), error="replaced while being read")
    digest = hashlib.sha256()
    keep = opened.st_size <= keep_bytes
    parts: list[bytes] = []
    total = 0
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
        total += len(chunk)
        if keep:
            if total > keep_bytes:
                keep, parts = False, []
            else:
                parts.append(chunk)
    after = os.fstat(fd)
    changed = (
        after.st_size != opened.st_size or after.st_mtime_ns != opened.st_mtime_ns or total != opened.st_size
    )
    return HashResult(
        "file",
        size=total,
        sha256=digest.hexdigest(),
        error="changed while being hashed" if changed else None,
        changed_while_hashed=changed,
        data=b"".join(parts) if keep else None,
    )


def _symlink_result(path: bytes | str, st: os.stat_result) -> HashResult:
    """A symlink is hashed by its target text (never followed)."""
    try:
        target = os.readlink(os.fsencode(path))
    except OSError as exc:
        return HashResult("symlink", size=st.st_size, error=_describe(exc))
    return HashResult("symlink", size=st.st_size, sha256=hashlib.sha256(target).hexdigest())


def _describe(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    return f"unreadable: {exc.strerror or exc}"


class Hasher:
    """Hashes small files at once and large ones on a worker pool, off the hot path."""

    def __init__(self, *, inline_limit: int = 4 << 20, max_bytes: int = 1 << 30, workers: int = 2):
        self.inline_limit = inline_limit
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chaperone-hash")

    def is_large(self, size: int | None) -> bool:
        return size is not None and size > self.inline_limit

    def hash_now(self, path: bytes, *, keep_bytes: int = 0) -> HashResult:
        return hash_file(path, max_bytes=self.max_bytes, keep_bytes=keep_bytes)

    def hash_later(self, path: bytes) -> Future[HashResult]:
        return self._pool.submit(hash_file, path, max_bytes=self.max_bytes)

    def close(self) -> None:
        """Wait for the hashes in flight, then stop the workers."""
        self._pool.shutdown(wait=True)
