"""Coalescing bursts of file operations without losing count of any.

Operations arrive in time windows (default 250 ms). At the end of a window,
each folder's operations either stay individual (they become one ``file``
record each) or, when a folder had ``threshold`` or more operations in the
window, or is already bursting, they join that folder's burst. A burst ends
when its folder is quiet for one window, or after ``max_burst_s``; it becomes
one ``file-burst`` record with counts per kind and a SHA-256 over the sorted
names. A window also has a global budget of individual operations; beyond it
the busiest folders are coalesced, so the work per window stays bounded.

A file's creation is usually followed by the close of its first write: that
close is part of the creation, not a separate modification. Within the same
window it is folded into the creation; in the next window it is marked
``via: "creation-write"``: a burst does not count it, and an individual record
of it is written (its hash is the content's final one) but not counted as an
operation of its own. Every other operation is counted exactly
once, either as an individual operation or in a burst's counts.

An atomic save (``sed -i``, editors, package managers, ``os.replace``) writes
a temporary file and renames it over its target. When the temporary file's
creation and its rename fall in the same window, the creation is folded into
the rename: the rename's ``temp_created`` says it carries both operations, and
the creation is not written on its own (a burst still counts both).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

KINDS = ("created", "modified", "deleted", "moved")


@dataclass(slots=True)
class Op:
    """One file operation as the watcher saw it."""

    op: str  # created / modified / deleted / moved
    path: bytes
    is_dir: bool = False
    dest: bytes | None = None
    via: str | None = None  # "move-in" / "move-out" / "rescan" ...
    seq: int = 0  # arrival order, set by the coalescer
    temp_created: bool = False  # a rename that also carries the creation of its source (atomic save)
    folded: bool = False  # a creation carried by a later rename: not written, nor counted, on its own

    @property
    def folder(self) -> bytes:
        return self.path.rpartition(b"/")[0] or b"/"

    @property
    def name(self) -> bytes:
        return self.path.rpartition(b"/")[2]


@dataclass
class Burst:
    """The operations of one folder, coalesced."""

    folder: bytes
    started: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    names: set[bytes] = field(default_factory=set)

    def add(self, op: Op) -> None:
        if op.via == "creation-write" or op.folded:  # counted with the operation that carries it
            return
        self.counts[op.op] += 1
        self.names.add(op.name)
        if op.temp_created:
            self.counts["created"] += 1

    @property
    def ops(self) -> int:
        return sum(self.counts.values())

    def names_sha256(self) -> str:
        return hashlib.sha256(b"\0".join(sorted(self.names))).hexdigest()


class BurstCoalescer:
    """Decides, window by window, which operations are recorded one by one."""

    def __init__(self, *, window: float = 0.25, threshold: int = 200, budget: int = 2000, max_burst_s: float = 2.0):
        self.window = window
        self.threshold = threshold
        self.budget = budget
        self.max_burst_s = max_burst_s
        self._pending: dict[bytes, list[Op]] = defaultdict(list)
        self._awaiting_close: set[bytes] = set()  # creations of this window, before their first close
        self._created_before: set[bytes] = set()  # the same for the window before
        self._created_now: dict[bytes, Op] = {}  # file creations of this window, which a rename may carry
        self._bursts: dict[bytes, Burst] = {}
        self._window_start: float | None = None
        self._seq = 0

    def add(self, op: Op, now: float) -> None:
        if self._window_start is None:
            self._window_start = now
        self._seq += 1
        op.seq = self._seq
        if op.op == "modified" and op.path in self._awaiting_close:
            self._awaiting_close.discard(op.path)
            return
        if op.op == "modified" and op.path in self._created_before:
            self._created_before.discard(op.path)
            op.via = "creation-write"
        if op.op == "created" and not op.is_dir and op.via is None:
            self._awaiting_close.add(op.path)
            self._created_now[op.path] = op
        elif op.op == "moved" and op.dest is not None and not op.is_dir:
            self._fold_temp_creation(op)
        elif op.op != "modified":  # gone, or there again by other means: no longer a fresh creation
            self._created_now.pop(op.path, None)
        self._pending[op.folder].append(op)

    def _fold_temp_creation(self, rename: Op) -> None:
        """A file created in this window and renamed: the rename carries the creation."""
        created = self._created_now.pop(rename.path, None)
        if rename.dest is not None:
            self._created_now.pop(rename.dest, None)  # whatever was created there is replaced, not renamed
        if created is None:
            return
        created.folded = True
        rename.temp_created = True
        self._awaiting_close.discard(rename.path)

    def due(self, now: float) -> bool:
        """Whether the current window is over (a burst in progress keeps windows ticking)."""
        return self._window_start is not None and now - self._window_start >= self.window

    @property
    def idle(self) -> bool:
        return not self._pending and not self._bursts

    def flush(self, now: float, *, final: bool = False) -> tuple[list[Op], list[Burst]]:
        """Close the current window: the individual operations, and the bursts that ended.

        Each individual operation is one operation, two when it is ``temp_created``."""
        pending, self._pending = self._pending, defaultdict(list)
        self._created_before, self._awaiting_close = self._awaiting_close, set()
        self._created_now = {}
        self._window_start = None if final else now
        individual: list[Op] = []
        coalesce = {f for f, ops in pending.items() if f in self._bursts or len(ops) >= self.threshold}
        calm = sorted((f for f in pending if f not in coalesce), key=lambda f: len(pending[f]))
        budget = self.budget
        for folder in calm:
            if len(pending[folder]) <= budget:
                budget -= len(pending[folder])
                individual.extend(op for op in pending[folder] if not op.folded)
            else:
                coalesce.add(folder)
        for folder in coalesce:
            burst = self._bursts.get(folder)
            if burst is None:
                burst = self._bursts[folder] = Burst(folder, started=now)
            for op in pending[folder]:
                burst.add(op)
        ended = []
        for folder, burst in list(self._bursts.items()):
            if final or folder not in pending or now - burst.started >= self.max_burst_s:
                del self._bursts[folder]
                if burst.ops:
                    ended.append(burst)
        if not self._bursts:
            self._window_start = None
        individual.sort(key=lambda op: op.seq)
        return individual, ended
