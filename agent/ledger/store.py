"""The ledger's entries and Merkle hashes on disk: append-only, crash-safe, constant memory.

Three files in the ledger's folder, each only ever grown at its end:

``entries``
    The entries, each followed by a newline (an entry holds none), so the file
    reads as the lines that were logged.
``index``
    One big-endian u64 per entry: the offset in ``entries`` just past its newline.
``hashes``
    The stored hashes (``agent.ledger.merkle``): 32 bytes each, the leaf hash of
    entry ``n`` and the roots of the complete subtrees it completes, in
    Crosby-Wallach order (as Go's ``sumdb/tlog``). About ``2 N`` hashes: 64 MB for
    a million entries, read with ``pread`` (never mapped), so a proof reads
    ~40 hashes and memory does not grow with the ledger. In memory: the roots of
    the complete subtrees along the right edge (at most 64 hashes).

An append writes the entry, then its hashes, then its index record, each with
one ``write`` on an ``O_APPEND`` descriptor, under a lock (appends come from
several threads). The index record commits the entry.

**Durability.** Appends are not synced one by one: ``sync()`` runs
``fdatasync`` on ``entries``, ``hashes`` and ``index``, in that order, and an
entry is durable once a ``sync`` that followed it returns. The ledger signs a
tree head only after a sync (``agent.ledger.ledger``), so no head that may
have left the machine covers an entry a crash can lose.

**Recovery on open** (the writer only; readers never change a file): an index
record that is cut short or points past the end of ``entries`` is set aside,
and bytes of ``entries`` past the last indexed entry (a torn write) are set
aside too, each to the first free ``<file>.torn-<n>`` (kept, never deleted);
``hashes`` is cut to, or rebuilt up to, the hashes of the indexed entries (it
is derived data). Then the entries after ``verify_from`` (the last signed
head's size) are read back and re-hashed: an entry that lost its newline, or
whose leaf hash differs from the stored one, has its hashes rebuilt from the
entries (no signed head covers it yet). ``Ledger`` then checks that the
stored hashes still give the last signed head's root.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from hashlib import sha256
from pathlib import Path
from typing import Self

from agent.errors import LedgerError
from agent.ledger import merkle

ENTRIES = "entries"
INDEX = "index"
HASHES = "hashes"
LOCK = "lock"
#: The longest entry (the journal's own line limit).
MAX_ENTRY = 4 * 1024 * 1024
_U64 = struct.Struct(">Q")
_datasync = getattr(os, "fdatasync", os.fsync)


def _private(name: str | os.PathLike[str], flags: int) -> int:
    return os.open(name, flags, 0o600)


def _why(exc: OSError) -> str:
    return {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EIO: "an input/output error occurred",
        errno.EACCES: "permission was denied",
        errno.EPERM: "permission was denied",
    }.get(exc.errno or 0, (exc.strerror or str(exc)).lower())


def check_entry(entry: bytes) -> None:
    if type(entry) is not bytes or not entry:
        raise ValueError("a ledger entry is non-empty bytes")
    if b"\n" in entry:
        raise ValueError("a ledger entry holds no newline")
    if len(entry) > MAX_ENTRY:
        raise ValueError(f"a ledger entry of {len(entry)} bytes is larger than the limit of {MAX_ENTRY}")


class LedgerStore:
    """The files of one ledger. Open with ``LedgerStore.open(folder)`` (the writer, which recovers and
    locks) or ``LedgerStore.open(folder, readonly=True)``."""

    def __init__(self, folder: Path, fds: dict[str, int], lock_fd: int | None, size: int,
                 data_end: int) -> None:
        self.folder = folder
        self.readonly = lock_fd is None
        self._fds = fds
        self._lock_fd = lock_fd
        self._size = size
        self._synced = size
        self._data_end = data_end
        self._lock = threading.Lock()
        self._closed = False
        self._frontier: list[bytes] = self._read_frontier(size)
        #: What recovery set aside or rebuilt: ``{"file", "bytes", "sha256"}`` dicts and notes.
        self.recovered: list[dict] = []

    # --- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path, *, readonly: bool = False, verify_from: int = 0, lock_wait: float = 0.0) -> LedgerStore:
        """The writer (which takes the lock, waiting up to ``lock_wait`` seconds for another process, such as
        a command exporting, to let it go), or a reader."""
        folder = Path(folder)
        if readonly:
            return cls._open_readonly(folder)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LedgerError(f"Cannot open the ledger in {folder}: {_why(exc)}.") from None
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
            os.close(lock_fd)
            raise LedgerError(f"The ledger in {folder} is already open for writing by another process "
                              "(the agent); stop it first, or read the ledger without writing.") from None
        fds: dict[str, int] = {}
        try:
            for name in (ENTRIES, INDEX, HASHES):
                fds[name] = os.open(folder / name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            recovered, size, data_end = _recover(folder, fds)
            store = cls(folder, fds, lock_fd, size, data_end)
            store.recovered = recovered
            store._verify_tail(min(verify_from, size))
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            os.close(lock_fd)
            raise
        return store

    @classmethod
    def _open_readonly(cls, folder: Path) -> LedgerStore:
        fds: dict[str, int] = {}
        try:
            for name in (ENTRIES, INDEX, HASHES):
                fds[name] = os.open(folder / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            for fd in fds.values():
                os.close(fd)
            return cls._empty_readonly(folder)
        except OSError as exc:
            for fd in fds.values():
                os.close(fd)
            raise LedgerError(f"Cannot read the ledger in {folder}: {_why(exc)}.") from None
        # A writer appends entries, then hashes, then the index record: count the entries whose
        # index record, data and hashes are all there.
        size = os.fstat(fds[INDEX]).st_size // 8
        data_size = os.fstat(fds[ENTRIES]).st_size
        hash_count = os.fstat(fds[HASHES]).st_size // merkle.HASH_SIZE
        while size and (_end_of(fds[INDEX], size - 1) > data_size or merkle.stored_count(size) > hash_count):
            size -= 1
        return cls(folder, fds, None, size, _end_of(fds[INDEX], size - 1) if size else 0)

    @classmethod
    def _empty_readonly(cls, folder: Path) -> LedgerStore:
        fds = {name: os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for name in (ENTRIES, INDEX, HASHES)}
        return cls(folder, fds, None, 0, 0)

    # --- state ---------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    @property
    def synced_size(self) -> int:
        """How many entries a ``sync`` has made durable."""
        return self._synced

    def root(self) -> bytes:
        """The current tree's root hash (no file read)."""
        with self._lock:
            return merkle.root_of_subtrees(self._frontier)

    def head(self) -> tuple[int, bytes]:
        """``(size, root)`` taken together."""
        with self._lock:
            return self._size, merkle.root_of_subtrees(self._frontier)

    # --- appending -------------------------------------------------------------------------------
    def append(self, entry: bytes) -> int:
        """Add ``entry``; return its index. Thread-safe. Not durable until ``sync()``."""
        check_entry(entry)
        leaf = sha256(b"\x00" + entry).digest()
        with self._lock:
            self._check_writable()
            n = self._size
            lefts = []
            m = n
            while m & 1:
                lefts.append(self._frontier.pop())
                m >>= 1
            hashes = merkle.stored_for_leaf(n, leaf, lefts)
            end = self._data_end + len(entry) + 1
            try:
                self._write(ENTRIES, entry + b"\n")
                self._write(HASHES, b"".join(hashes))
                self._write(INDEX, _U64.pack(end))
            except OSError as exc:
                self._frontier.extend(reversed(lefts))
                self._cut_back(n)
                raise LedgerError(f"Cannot write the ledger in {self.folder}: {_why(exc)}; nothing was added, "
                                  "so free space or fix the disk and try again.") from None
            self._frontier.append(hashes[-1])
            self._data_end = end
            self._size = n + 1
            return n

    def _write(self, name: str, data: bytes) -> None:
        written = os.write(self._fds[name], data)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write")

    def _cut_back(self, size: int) -> None:
        """Undo a half-done append so the files end with entry ``size - 1``."""
        try:
            os.ftruncate(self._fds[ENTRIES], self._data_end)
            os.ftruncate(self._fds[HASHES], merkle.stored_count(size) * merkle.HASH_SIZE)
            os.ftruncate(self._fds[INDEX], size * 8)
        except OSError:
            pass  # the next open recovers the same way

    def sync(self) -> int:
        """Make every entry appended so far durable; return how many are."""
        with self._lock:
            self._check_writable()
            size = self._size
            try:
                for name in (ENTRIES, HASHES, INDEX):
                    _datasync(self._fds[name])
            except OSError as exc:
                raise LedgerError(f"Cannot sync the ledger in {self.folder}: {_why(exc)}.") from None
            self._synced = size
            return size

    def _check_writable(self) -> None:
        if self._closed:
            raise LedgerError(f"The ledger in {self.folder} is closed.")
        if self.readonly:
            raise LedgerError(f"The ledger in {self.folder} is open read-only.")

    # --- reading ---------------------------------------------------------------------------------
    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Stored hashes by position (``merkle.HashReader``); consecutive positions are read together."""
        fd = self._fds[HASHES]
        out: list[bytes] = []
        i = 0
        while i < len(positions):
            j = i + 1
            while j < len(positions) and positions[j] == positions[j - 1] + 1:
                j += 1
            want = (j - i) * merkle.HASH_SIZE
            data = os.pread(fd, want, positions[i] * merkle.HASH_SIZE)
            if len(data) != want:
                raise LedgerError(f"The ledger's hashes in {self.folder} end early; it may be damaged.")
            out += [data[k:k + merkle.HASH_SIZE] for k in range(0, want, merkle.HASH_SIZE)]
            i = j
        return out

    def tree_hash(self, size: int) -> bytes:
        self._check_size(size)
        return merkle.tree_hash(size, self.read_hashes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return merkle.inclusion_proof(index, size, self.read_hashes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        self._check_size(new_size)
        return merkle.consistency_proof(old_size, new_size, self.read_hashes)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"the ledger has {self._size} entries, not {size}")

    def leaf_hash(self, index: int) -> bytes:
        return self.read_hashes([merkle.stored_index(0, index)])[0]

    def entry(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise IndexError(f"the ledger has no entry {index}")
        start = _end_of(self._fds[INDEX], index - 1) if index else 0
        end = _end_of(self._fds[INDEX], index)
        data = os.pread(self._fds[ENTRIES], end - start, start)
        if len(data) != end - start or not data.endswith(b"\n"):
            raise LedgerError(f"Entry {index} of the ledger in {self.folder} is damaged.")
        return data[:-1]

    def iter_entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """``(index, entry)`` from ``start`` up to ``stop`` (default: the size now), read in chunks."""
        stop = self._size if stop is None else min(stop, self._size)
        index = start
        while index < stop:
            count = min(4096, stop - index)
            ends = _ends(self._fds[INDEX], index, count)
            first = _end_of(self._fds[INDEX], index - 1) if index else 0
            data = os.pread(self._fds[ENTRIES], ends[-1] - first, first)
            pos = 0
            for k, end in enumerate(ends):
                piece = data[pos:end - first]
                if not piece.endswith(b"\n"):
                    raise LedgerError(f"Entry {index + k} of the ledger in {self.folder} is damaged.")
                yield index + k, piece[:-1]
                pos = end - first
            index += count

    def iter_entries_backward(self, before: int | None = None) -> Iterator[tuple[int, bytes]]:
        """``(index, entry)`` from the newest (below ``before``) to the oldest."""
        index = self._size if before is None else min(before, self._size)
        while index > 0:
            start = max(0, index - 256)
            chunk = list(self.iter_entries(start, index))
            yield from reversed(chunk)
            index = start

    def find_leaves(self, leaves: Iterable[bytes], stop_below: int = 0, *, newest: bool = True) -> dict[bytes, int]:
        """The index of each leaf hash in ``leaves`` that the ledger holds, among entries ``stop_below`` and
        up: its newest occurrence (the scan from the end stops when all are found), or with ``newest=False``
        its first (the whole range is read). The stored hashes are read 1 MiB at a time; a subtree root can
        never equal a leaf hash (RFC 6962's 0x00/0x01 prefixes), so any match is that leaf."""
        wanted = set(leaves)
        found: dict[bytes, int] = {}
        size = self._size
        if not wanted or not size:
            return found
        fd = self._fds[HASHES]
        end = merkle.stored_count(size)
        low = merkle.stored_index(0, stop_below) if stop_below < size else end
        step = (1 << 20) // merkle.HASH_SIZE
        while end > low and (not newest or len(found) < len(wanted)):
            start = max(low, end - step)
            data = os.pread(fd, (end - start) * merkle.HASH_SIZE, start * merkle.HASH_SIZE)
            for k in range(len(data) - merkle.HASH_SIZE, -1, -merkle.HASH_SIZE):
                h = data[k:k + merkle.HASH_SIZE]
                if h in wanted and (not newest or h not in found):
                    found[h] = merkle.leaf_of(start + k // merkle.HASH_SIZE)
            end = start
        return found

    def copy_entries(self, out_path: Path, size: int) -> None:
        """Write the first ``size`` entries (the ``entries`` file's prefix) to ``out_path``."""
        self._check_size(size)
        end = _end_of(self._fds[INDEX], size - 1) if size else 0
        with open(out_path, "wb") as out:
            pos = 0
            while pos < end:
                chunk = os.pread(self._fds[ENTRIES], min(1 << 20, end - pos), pos)
                if not chunk:
                    raise LedgerError(f"The ledger's entries in {self.folder} end early; it may be damaged.")
                out.write(chunk)
                pos += len(chunk)

    # --- recovery helpers ----------------------------------------------------------------------------
    def _read_frontier(self, size: int) -> list[bytes]:
        tiles = merkle._complete_subtrees(0, size)
        return self.read_hashes([merkle.stored_index(level, n) for level, n in tiles]) if tiles else []

    def _verify_tail(self, verify_from: int) -> None:
        """Re-hash the entries from ``verify_from`` (the last signed head's size) on: hashes that do not
        match their entries (a crash before a sync) are rebuilt from the entries, which no signed head
        covers yet. An entry without its newline is a ``LedgerError`` (the files were damaged)."""
        if verify_from >= self._size:
            return
        for index, entry in self.iter_entries(verify_from):
            if sha256(b"\x00" + entry).digest() != self.leaf_hash(index):
                first = _rebuild_hashes(self._fds, merkle.stored_count(index), self._size)
                self.recovered.append({"rebuilt": "hashes", "from_entry": first})
                self._frontier = self._read_frontier(self._size)
                return

    # --- closing -----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self.readonly:
                for name in (ENTRIES, HASHES, INDEX):
                    try:
                        _datasync(self._fds[name])
                    except OSError:
                        pass
            for fd in self._fds.values():
                os.close(fd)
            if self._lock_fd is not None:
                os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_of(index_fd: int, i: int) -> int:
    data = os.pread(index_fd, 8, i * 8)
    if len(data) != 8:
        raise LedgerError("The ledger's index ends early; it may be damaged.")
    return _U64.unpack(data)[0]


def _ends(index_fd: int, start: int, count: int) -> list[int]:
    data = os.pread(index_fd, count * 8, start * 8)
    if len(data) != count * 8:
        raise LedgerError("The ledger's index ends early; it may be damaged.")
    return [v for (v,) in _U64.iter_unpack(data)]


def _set_aside(folder: Path, name: str, fd: int, keep: int) -> dict:
    """Copy the bytes of ``name`` past ``keep`` to the first free ``<name>.torn-<n>``, then cut the file."""
    path = folder / name
    n = 1
    while (folder / f"{name}.torn-{n}").exists():
        n += 1
    torn = folder / f"{name}.torn-{n}"
    digest = sha256()
    size = 0
    with open(torn, "xb", opener=_private) as dst:
        pos = keep
        while chunk := os.pread(fd, 1 << 20, pos):
            dst.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            pos += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return {"file": torn.name, "from": path.name, "bytes": size, "sha256": digest.hexdigest()}


def _recover(folder: Path, fds: dict[str, int]) -> tuple[list[dict], int, int]:
    """Bring the three files back to a common, complete prefix; ``(what was done, size, entries' end)``."""
    recovered: list[dict] = []
    try:
        index_size = os.fstat(fds[INDEX]).st_size
        data_size = os.fstat(fds[ENTRIES]).st_size
        size = index_size // 8
        # Index records whose entry is not all there (or which go backwards) are not committed.
        good = size
        while good:
            end = _end_of(fds[INDEX], good - 1)
            start = _end_of(fds[INDEX], good - 2) if good > 1 else 0
            if start < end <= data_size and os.pread(fds[ENTRIES], 1, end - 1) == b"\n":
                break
            good -= 1
        if good * 8 != index_size:
            recovered.append(_set_aside(folder, INDEX, fds[INDEX], good * 8))
        size = good
        data_end = _end_of(fds[INDEX], size - 1) if size else 0
        if data_size > data_end:
            recovered.append(_set_aside(folder, ENTRIES, fds[ENTRIES], data_end))
        want = merkle.stored_count(size)
        have = os.fstat(fds[HASHES]).st_size // merkle.HASH_SIZE
        if have > want or os.fstat(fds[HASHES]).st_size % merkle.HASH_SIZE:
            os.ftruncate(fds[HASHES], min(have, want) * merkle.HASH_SIZE)
            have = min(have, want)
        if have < want:
            recovered.append({"rebuilt": "hashes", "from_entry": _rebuild_hashes(fds, have, size)})
    except OSError as exc:
        raise LedgerError(f"Cannot recover the ledger in {folder}: {_why(exc)}.") from None
    return recovered, size, data_end


def _rebuild_hashes(fds: dict[str, int], have: int, size: int) -> int:
    """Recompute the stored hashes of the entries whose hashes are missing; return the first such entry."""
    first = 0
    while first < size and merkle.stored_count(first + 1) <= have:
        first += 1
    os.ftruncate(fds[HASHES], merkle.stored_count(first) * merkle.HASH_SIZE)
    tiles = merkle._complete_subtrees(0, first)
    frontier = []
    for level, n in tiles:
        frontier.append(os.pread(fds[HASHES], merkle.HASH_SIZE, merkle.stored_index(level, n) * merkle.HASH_SIZE))
    start = _end_of(fds[INDEX], first - 1) if first else 0
    for i in range(first, size):
        end = _end_of(fds[INDEX], i)
        entry = os.pread(fds[ENTRIES], end - start - 1, start)
        start = end
        lefts = []
        m = i
        while m & 1:
            lefts.append(frontier.pop())
            m >>= 1
        hashes = merkle.stored_for_leaf(i, merkle.leaf_hash(entry), lefts)
        os.write(fds[HASHES], b"".join(hashes))
        frontier.append(hashes[-1])
    return first
