"""Watching the session's folders: every file operation becomes a record, or is counted in one.

The pipeline, each stage on its own thread:

1. ``agent.capture.inotify.EventSource`` (our inotify reader; everything that knows watchdog)
   queues operations: created, deleted, moved, closed after writing.
2. The recorder turns events into :class:`~agent.capture.bursts.Op` objects,
   lets :class:`~agent.capture.bursts.BurstCoalescer` decide which stay
   individual, and writes ``file`` and ``file-burst`` records: size, SHA-256
   before and after, a redacted diff for text configuration files, and who
   wrote the file when known. Large files are hashed on a worker pool.
3. Overflows of the kernel queue (``Overflow`` items on the queue) and folders that could
   not be watched (``max_user_watches``) are answered by rescanning against the
   :class:`~agent.capture.baseline.TreeIndex`: an ``overflow`` or
   ``watch-limit`` record says so, and the changes found become records.

At :meth:`FileWatcher.stop`, a last rescan of every root and a recheck of the
baseline's content make the record exact even where events were missed.

When no inotify instance can be made at all (``max_user_instances`` used up),
every root is rescanned periodically instead, and a ``watch-limit`` record
says so. After a gap in recording (the agent was stopped, hung or restarted),
:meth:`FileWatcher.after_gap` rescans every root and records what changed as
``via: "after-gap"`` with the gap's times, leaving out what the journal
already holds (``known``). :meth:`FileWatcher.dead_workers` names any of its
threads that died, so that the session can fail closed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.capture.baseline import ContentBaseline, Known, TreeIndex
from agent.capture.bursts import Burst, BurstCoalescer, Op
from agent.capture.classify import MAX_DIFF_BYTES, ConfigPlaces, decode_text, is_config_text, is_secret
from agent.capture.hashing import Hasher, HashResult
from agent.capture.inotify import EventSource, Overflow, died
from agent.capture.paths import path_fields
from agent.errors import error_detail
from agent.records import RecordType
from agent.redact import Redactor, default_redactor

MAX_DIFF_TEXT = 256 << 10  # a longer diff is left out (a journal line holds at most 4 MiB)
UNWATCHED_RESCAN_S = 2.0
RESCAN_SHARE = 0.1  # periodic rescans may take at most this share of the time (slower for larger trees)
WATCH_AUDIT_S = 2.0  # at most this often, after folders appeared, check that each one has a watch
BATCH_S = 0.02
_STOP = object()
# What the journal last said of a path, for after_gap: the SHA-256 it had ("" when it had none, a
# folder for instance), or None when the journal last recorded it gone.
JournalState = Mapping[bytes, str | None]


@dataclass(frozen=True)
class AfterGap:
    """Rescan every root: recording stopped from ``gap["from"]`` to ``gap["to"]``."""

    gap: dict
    known: JournalState | None = None


class FileWatcher:
    """Records the file operations below ``roots`` through ``sink.emit``."""

    def __init__(
        self,
        sink,
        roots: list[bytes],
        *,
        index: TreeIndex,
        contents: ContentBaseline,
        config_roots: tuple[bytes, ...] = (b"/etc",),
        attributor=None,
        hasher: Hasher | None = None,
        coalescer: BurstCoalescer | None = None,
        redactor: Redactor | None = None,
    ):
        self._sink = sink
        self._redactor = redactor or default_redactor()
        self.roots = roots
        self._index = index
        self._contents = contents
        self._config_places = ConfigPlaces(roots, tuple(r.rstrip(b"/") + b"/" for r in config_roots))
        self._attributor = attributor
        self._hasher = hasher or Hasher()
        self._coalescer = coalescer or BurstCoalescer()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._source: EventSource | None = None
        self._recorder: threading.Thread | None = None
        self._unwatched: set[bytes] = set()
        self._reported_unwatched: set[bytes] = set()
        self._removed_roots: set[bytes] = set()
        self._dirs_created = False
        self._stale: dict[bytes, set[bytes]] = {}  # names counted in bursts, not yet re-indexed, per folder
        self._audit_possible = True
        self._stopping = False
        self._gap: dict | None = None  # while after-gap records are written: the gap they carry
        self._rescan_every = UNWATCHED_RESCAN_S

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        try:
            self._source = EventSource(self._events)
        except OSError as exc:  # no inotify instance for us (max_user_instances): rescan instead
            self._source = None
            self._without_inotify(exc)
        if self._source is not None:
            for root in self.roots:
                try:
                    self._source.schedule(root)
                except OSError as exc:
                    self._cannot_watch(root, exc)
            self._source.start()
            self._audit_watches()
        self._recorder = threading.Thread(target=self._record_loop, name="chaperone-files", daemon=True)
        self._recorder.start()

    def dead_workers(self) -> list[str]:
        """The threads of this watcher that should run and do not (empty before start and after stop)."""
        if self._recorder is None or self._stopping:
            return []
        dead = ["file recorder"] if died(self._recorder) else []
        if self._source is not None:
            dead += self._source.dead_threads()
        return dead

    def after_gap(self, gap: dict, known: JournalState | None = None) -> None:
        """Rescan every root and record each change as found after a gap (``via: "after-gap"`` and
        ``gap``: its ``from`` and ``to``). Changes the journal already holds (``known``) are left out.
        Before :meth:`start` it runs at once; afterwards the recorder thread does it, in turn."""
        if self._recorder is not None and self._recorder.is_alive():
            self._events.put(AfterGap(gap, known))
        else:
            self._answer_gap(AfterGap(gap, known), time.monotonic())

    def stop(self) -> None:
        """Stop watching, record what is queued, then rescan every root and recheck the baseline."""
        self._stopping = True
        if self._source is not None:
            self._source.stop()
        if self._recorder is not None:
            self._events.put(_STOP)
            self._recorder.join()
        self._catch_up()
        now = time.monotonic()
        for root in self.roots:
            for op in self._index.rescan(root):
                self._coalescer.add(op, now)
        self._write(*self._coalescer.flush(now, final=True))
        self._recheck_contents()
        self._hasher.close()

    # -- the recorder thread ------------------------------------------------

    def _record_loop(self) -> None:
        last_unwatched_scan = last_audit = time.monotonic()
        stopping = False
        while not stopping:
            try:
                items = [self._events.get(timeout=self._coalescer.window / 2)]
                time.sleep(BATCH_S)  # let a batch gather: fewer wake-ups under a burst
            except queue.Empty:
                items = []
            while len(items) < 50_000:
                try:
                    items.append(self._events.get_nowait())
                except queue.Empty:
                    break
            now = time.monotonic()
            overflowed: set[bytes] = set()
            try:
                for item in items:
                    if type(item) is Op:
                        self._take(item, now)
                    elif item is _STOP:
                        stopping = True
                    elif type(item) is Overflow:
                        overflowed.add(item.root)
                    elif type(item) is AfterGap:
                        self._answer_gap(item, now)
                if overflowed:
                    self._answer_overflow(overflowed, now)
                if stopping or self._coalescer.due(now):
                    self._write(*self._coalescer.flush(now, final=stopping))
                if self._unwatched and now - last_unwatched_scan >= self._rescan_every:
                    self._rescan_unwatched(now)
                    last_unwatched_scan = time.monotonic()
                    # a large tree is rescanned less often: at most RESCAN_SHARE of the time
                    self._rescan_every = max(UNWATCHED_RESCAN_S, (last_unwatched_scan - now) / RESCAN_SHARE)
                if self._stale and not items and self._coalescer.idle:
                    self._catch_up()
                if self._dirs_created and now - last_audit >= WATCH_AUDIT_S:
                    last_audit = now
                    self._audit_watches()
            except Exception as exc:  # noqa: BLE001 - the recorder must keep recording
                with contextlib.suppress(Exception):  # the sink itself may be what fails
                    self._error("file-recorder", None, error_detail(exc))

    def _take(self, op: Op, now: float) -> None:
        if op.op == "deleted" and op.path in self.roots:
            self._root_removed(op.path)
        if op.op in ("created", "moved") and op.is_dir:
            self._dirs_created = True
        self._coalescer.add(op, now)

    def _root_removed(self, root: bytes) -> None:
        if root in self._removed_roots:
            return
        self._removed_roots.add(root)
        self._error("watch-path-removed", root,
                    "The watched folder was removed during the session; watching it stopped.")

    # -- writing records ----------------------------------------------------

    def _write(self, individual: list[Op], bursts: list[Burst]) -> None:
        for op in individual:
            self._write_op(op)
        for burst in bursts:
            self._write_burst(burst)

    def _write_burst(self, burst: Burst) -> None:
        data = {
            **path_fields(burst.folder, "root"),
            "counts": dict(burst.counts),
            "paths": len(burst.names),
            "names_sha256": burst.names_sha256(),
        }
        self._sink.emit(RecordType.FILE_BURST, data)
        self._stale.setdefault(burst.folder, set()).update(burst.names)  # indexed later, see _catch_up
        if burst.counts["created"] or burst.counts["moved"]:
            self._dirs_created = True

    def _write_op(self, op: Op, result: HashResult | None = None) -> None:
        """One ``file`` record; ``result`` is the new content's hash when the caller has it already."""
        if op.op == "modified" and op.via is None and self._never_seen(op.path):
            op = Op("created", op.path, via="first-write")
        data, known = self._describe(op)
        secret = is_secret(op.path, op.dest)
        data["secret"] = secret
        data["sha256_before"] = known.sha256 if known else None
        if op.op == "deleted":
            data.update(kind="dir" if op.is_dir else "file", size=None, sha256_after=None)
            if known and known.text is not None and not secret:
                self._add_diff(data, op.path, known.text, None)
            self._contents.forget(op.path)
            self._index.update(op.path, None)
            self._sink.emit(RecordType.FILE, data)
            return
        target = op.dest if op.op == "moved" and op.dest is not None else op.path
        if op.op == "moved":
            self._contents.forget(op.path)
            self._index.update(op.path, None)
        self._attribute(data, target)
        try:
            st = os.lstat(target)
        except OSError:
            st = None
        self._index.update(target, st)
        if result is None and st is not None and stat.S_ISREG(st.st_mode) and self._hasher.is_large(st.st_size):
            future = self._hasher.hash_later(target)
            future.add_done_callback(lambda f: self._finish(data, op, target, known, f.result()))
            return
        if result is None:
            result = self._hasher.hash_now(target, keep_bytes=0 if secret else MAX_DIFF_BYTES)
        self._finish(data, op, target, known, result)

    def _never_seen(self, path: bytes) -> bool:
        """Whether a file in an indexed folder is neither indexed nor counted in a burst: its creation's
        event was lost (a kernel queue overflow), and the close of its first write is the first sign of it.
        Recording that write as the creation keeps the creation counted: the overflow's rescan will find
        the file indexed."""
        if self._index.holds(path) is not False:
            return False
        folder, _, name = path.rpartition(b"/")
        return name not in self._stale.get(folder or b"/", ())

    def _describe(self, op: Op) -> tuple[dict, Known | None]:
        """The record's first fields, and what was known of the content the operation changed."""
        if op.op == "moved" and not op.is_dir:
            return self._describe_rename(op)
        data: dict = {"op": op.op, **path_fields(op.path)}
        if op.dest is not None:
            data.update(path_fields(op.dest, "dest"))
        if op.via is not None:
            data["via"] = op.via
        if op.via == "after-gap" and self._gap is not None:
            data["gap"] = self._gap
        return data, self._contents.last(op.path)

    def _describe_rename(self, op: Op) -> tuple[dict, Known | None]:
        """A file renamed over a file that was there replaced it (an atomic save): a modification
        of the target, compared with the target's previous content, naming the file that replaced
        it. A rename to a new name is a move. ``temp_created``: the record carries the creation of
        the renamed file too, which is not recorded on its own."""
        assert op.dest is not None  # a move always has one (a move in or out is a creation or deletion)
        target_known = self._contents.last(op.dest)
        if self._index.holds(op.dest) or (target_known is not None and target_known.sha256 is not None):
            data: dict = {"op": "modified", **path_fields(op.dest), "via": "replace"}
            data.update(path_fields(op.path, "replaced_by"))
            known = target_known
        else:
            data = {"op": "moved", **path_fields(op.path), **path_fields(op.dest, "dest")}
            known = self._contents.last(op.path)
        if op.temp_created:
            data["temp_created"] = True
        return data, known

    def _finish(self, data: dict, op: Op, target: bytes, known: Known | None, result: HashResult) -> None:
        vanished = result.kind == "missing"
        data.update(
            kind=("dir" if op.is_dir else "file") if result.kind in ("missing", "unknown") else result.kind,
            size=result.size,
            sha256_after=result.sha256,
        )
        if result.error:
            data["error"] = result.error
        text = None
        if result.kind == "file" and not data["secret"] and is_config_text(self._config_places, target, result):
            text = decode_text(result.data) if result.data is not None else None
            if text is None:
                data["diff_omitted"] = "not text" if result.data is not None else f"larger than {MAX_DIFF_BYTES} bytes"
            else:
                self._add_diff(data, target, known.text if known else None, text)
        if vanished:
            self._contents.forget(target)
        else:
            self._contents.remember(target, result.sha256, text)
        self._sink.emit(RecordType.FILE, data)

    def _add_diff(self, data: dict, path: bytes, before: str | None, after: str | None) -> None:
        try:
            diff = self._redactor.redact_diff(os.fsdecode(path), before, after)
        except Exception as exc:  # noqa: BLE001 - a redaction failure must hide the diff, not the record
            data["diff_omitted"] = f"redaction failed: {type(exc).__name__}"
            return
        if diff is None:
            data["secret"] = True
        elif len(diff) > MAX_DIFF_TEXT:
            data["diff_omitted"] = f"diff longer than {MAX_DIFF_TEXT} characters"
        elif diff:
            data["diff"] = diff

    def _attribute(self, data: dict, path: bytes) -> None:
        if self._attributor is None:
            return
        attribution = self._attributor.attribute(path)
        if attribution is not None:
            data["attribution"] = attribution

    def _error(self, what: str, path: bytes | None, error: str) -> None:
        data = {"what": what, "path": None, "error": error}
        if path is not None:
            data.update(path_fields(path))
        self._sink.emit(RecordType.CAPTURE_ERROR, data)

    # -- overflow, watch limits, rechecks -----------------------------------

    def _answer_overflow(self, roots: set[bytes], now: float) -> None:
        self._write(*self._coalescer.flush(now, final=True))
        for root in sorted(roots):
            ops = self._index.rescan(root)
            self._sink.emit(
                RecordType.OVERFLOW,
                {
                    **path_fields(root, "root"),
                    "detail": "The kernel's event queue overflowed; the folder was rescanned.",
                    "rescanned": True,
                    "changes": len(ops),
                },
            )
            for op in ops:
                self._coalescer.add(op, now)
        self._write(*self._coalescer.flush(now, final=True))

    def _answer_gap(self, item: AfterGap, now: float) -> None:
        """Rescan every root after a gap; write each change the journal does not already explain."""
        self._write(*self._coalescer.flush(now, final=True))
        self._catch_up()
        gap = {k: item.gap[k] for k in ("from", "to") if k in item.gap}
        changes = explained = 0
        self._gap = gap
        try:
            for root in self.roots:
                for op in self._index.rescan(root):
                    op = Op(op.op, op.path, op.is_dir, via="after-gap")
                    result = None if op.op == "deleted" else self._hasher.hash_now(op.path, keep_bytes=MAX_DIFF_BYTES)
                    if item.known is not None and _explained(op, result, item.known):
                        explained += 1
                        continue
                    if item.known is not None and item.known.get(op.path):  # the last hash the journal holds
                        self._contents.remember(op.path, item.known[op.path], None)
                    changes += 1
                    self._write_op(op, result)
        finally:
            self._gap = None
        self._sink.emit(RecordType.BASELINE, {
            "phase": "after-gap", **gap, "roots": len(self.roots), "changes": changes, "explained": explained,
            "detail": (f"Every watched folder was rescanned after the gap: {changes} change(s) not in the journal "
                       f"before it, recorded as found after the gap" +
                       (f"; {explained} more were already recorded before it." if explained else ".")),
        })

    def _without_inotify(self, exc: OSError) -> None:
        limit = _read_int("/proc/sys/fs/inotify/max_user_instances")
        self._unwatched |= set(self.roots)
        self._reported_unwatched |= set(self.roots)
        for root in self.roots:
            self._sink.emit(RecordType.WATCH_LIMIT, {
                **path_fields(root, "root"),
                "detail": (f"No inotify instance could be made ({exc.strerror or exc}; max_user_instances is "
                           f"{limit}); every watched folder is rescanned periodically instead (every "
                           f"{UNWATCHED_RESCAN_S:g} s or more for a large tree), so changes are found late "
                           "and who made them is not known."),
                "rescanned": False,
                "changes": 0,
                "fallback": "periodic-rescan",
            })

    def _cannot_watch(self, root: bytes, exc: OSError) -> None:
        if not os.path.isdir(root):
            self._error("watch-path-missing", root, "The folder to watch does not exist.")
            return
        self._unwatched.add(root)
        self._report_unwatched({root}, str(exc.strerror or exc))

    def _audit_watches(self) -> None:
        """Find indexed folders that have no inotify watch (the reader skips them when it cannot add one)."""
        self._dirs_created = False
        if self._source is None:
            return  # everything is rescanned already
        watched = self._source.watched_inodes()
        if watched is None:
            if self._audit_possible:
                self._audit_possible = False
                self._error("watch-audit", None, "Cannot check which folders are watched; watch limits go unnoticed.")
            return
        missing = {folder for folder, ino in self._index.folders().items() if ino not in watched}
        missing -= self._removed_roots
        new = missing - self._unwatched
        if new:
            self._unwatched |= new
            self._report_unwatched(new, "no watch could be added")

    def _report_unwatched(self, folders: set[bytes], why: str) -> None:
        limit = _read_int("/proc/sys/fs/inotify/max_user_watches")
        said = _topmost(self._reported_unwatched)
        fresh = {f for f in folders if not any(f == t or f.startswith(t + b"/") for t in said)}
        for top in _topmost(fresh):
            below = sum(1 for f in folders if f == top or f.startswith(top + b"/"))
            self._sink.emit(
                RecordType.WATCH_LIMIT,
                {
                    **path_fields(top, "root"),
                    "detail": (
                        f"{below} folder(s) here could not be watched ({why}; max_user_watches is {limit}); "
                        f"they are rescanned every {UNWATCHED_RESCAN_S:g} s instead."
                    ),
                    "rescanned": False,
                    "changes": 0,
                },
            )
        self._reported_unwatched |= folders

    def _catch_up(self) -> None:
        """Index the paths that bursts counted, once the recorder is idle.

        Only those paths: re-reading whole folders would also index files whose
        events were lost in an overflow not yet answered, and hide them from its rescan.
        """
        while self._stale:
            folder, names = self._stale.popitem()
            self._index.update_names(folder, names)

    def _rescan_unwatched(self, now: float) -> None:
        for top in _topmost(self._unwatched):
            for op in self._index.rescan(top):
                self._coalescer.add(op, now)
            if not os.path.isdir(top):
                self._unwatched = {f for f in self._unwatched if not (f == top or f.startswith(top + b"/"))}

    def _recheck_contents(self) -> None:
        """Rehash the baseline's files: catches changes that left size and mtime alone, or were never seen."""
        for path in self._contents.started_with():
            known = self._contents.last(path)
            result = self._hasher.hash_now(path, keep_bytes=MAX_DIFF_BYTES)
            now_sha = None if result.kind == "missing" else result.sha256
            if known is not None and now_sha == known.sha256:
                continue
            if result.kind == "missing":
                self._write_op(Op("deleted", path, via="recheck"))
            else:
                self._write_op(Op("modified", path, via="recheck"), result)


def _explained(op: Op, result: HashResult | None, known: JournalState) -> bool:
    """Whether the journal before the gap already says that ``op.path`` is as it is now."""
    if op.path not in known:
        return False
    last = known[op.path]
    if op.op == "deleted":
        return last is None
    if last is None or result is None:
        return False
    if result.kind == "file":
        return result.sha256 is not None and last == result.sha256
    return last == "" and result.kind != "missing"


def _topmost(folders: set[bytes]) -> list[bytes]:
    tops: list[bytes] = []
    for folder in sorted(folders):
        if not any(folder.startswith(t + b"/") for t in tops):
            tops.append(folder)
    return tops


def _read_int(path: str | Path) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
