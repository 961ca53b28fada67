"""Every write by the technician, anywhere; metadata changes; who wrote what below the watch paths.

As root, :class:`WriteRecorder` marks every mounted filesystem that holds
files (``FAN_MARK_FILESYSTEM``, reporting the folder and the name of each
object, see :mod:`agent.capture.fanotify`) and asks the lineage whose each
event is:

- **the technician's, outside the watch paths** (a program copied into
  ``/usr/local/bin``, a unit file, a file in a bind mount): a ``file``
  record per operation (``created``, ``modified``, ``deleted``, ``moved``)
  with ``via: "filesystem"``, the size and SHA-256 after, the mode, and the
  attribution (pid, program, user, lineage). Operations on one path within
  ``QUIET_S`` are one record (a creation and its first close are one
  ``created``). Inside the watch paths the file watcher records them, with
  the attribution this class gives (:meth:`attribute`).
- **anyone's metadata change inside the watch paths, and the technician's
  anywhere**: a ``file-meta`` record (mode, owner, group, ACL, file
  capabilities; before and after where known) with ``way_back_in`` and
  ``why`` (:mod:`agent.capture.filemeta`).
- **anyone else's writes outside the watch paths**: not recorded (the
  customer's privacy, and the volume).

A unit file the technician writes (``…/systemd/…/NAME.service`` and the
like) is handed to the lineage (``claim_unit``): that unit's processes are
the technician's. A kernel queue overflow is an ``overflow`` record with a
count (``source: "fanotify-filesystem"``); filesystems that cannot be
watched are ``capture-error`` records (``what: "filesystem-watch"``).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.capture.fanotify import (
    FAN_ATTRIB,
    FAN_CLASS_NOTIF,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_EVENT_INFO_TYPE_DFID,
    FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_FID,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    FAN_MOVED_FROM,
    FAN_MOVED_TO,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    FAN_REPORT_DFID_NAME,
    FanotifyGroup,
    FanotifyUnavailable,
    FidEvent,
    HandleResolver,
    event_spans,
    join_name,
    parse_fid_events,
)
from agent.capture.filemeta import changed, read_metadata, way_back_in
from agent.capture.hashing import hash_file
from agent.capture.lineage import Lineage
from agent.capture.mountinfo import PSEUDO_FILESYSTEMS, Mount, read_mountinfo, storage_mounts
from agent.capture.paths import path_fields
from agent.capture.units import UNIT_SUFFIXES
from agent.records import RecordType
from agent.redact import is_secret_file

BASE_MASK = FAN_CREATE | FAN_DELETE | FAN_CLOSE_WRITE | FAN_ATTRIB | FAN_ONDIR
QUIET_S = 1.0
# A file created and not closed yet is still being written (cp, a download, a slow machine): its record
# waits for the close (every open for writing ends in one), up to this long; then it is recorded as it is,
# and the close, when it comes, is a "modified" record of its own.
OPEN_WAIT_S = 30.0
MAX_PENDING = 10_000
MAX_HASH_BYTES = 64 << 20
MAX_WRITERS = 65_536
MAX_META = 65_536
MAX_VERDICTS = 65_536
BUSY_EVENTS = 8
COALESCE_S = 0.02
_PATH_INFO = (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_DFID, FAN_EVENT_INFO_TYPE_FID)


@dataclass
class Pending:
    """What one path went through since its first event (a technician's, outside the watch paths)."""

    path: bytes
    pid: int
    label: str
    dir: bool
    created: bool = False
    written: bool = False
    attrib: bool = False
    meta: dict | None = None  # the metadata read at its last metadata change
    reasons: list[str] = field(default_factory=list)  # ways back in seen at any of its metadata changes
    first: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)


def _still_open(entry: Pending) -> bool:
    """Created, not a folder, and not closed after writing yet: most likely still being written."""
    return entry.created and not entry.written and not entry.dir


class WriteRecorder:
    """Filesystem-wide capture through one fanotify group; ``start()``/``stop()``; thread-safe."""

    def __init__(self, sink, lineage: Lineage, roots: Iterable[bytes | str], *, hash_limit: int = MAX_HASH_BYTES,
                 quiet_s: float = QUIET_S):
        self._sink = sink
        self._lineage = lineage
        raw = [os.fsencode(r) for r in roots]
        self._roots = tuple({os.fsencode(os.path.realpath(r)).rstrip(b"/") or b"/" for r in raw} |
                            {r.rstrip(b"/") or b"/" for r in raw})
        self._prefixes = tuple(r if r == b"/" else r + b"/" for r in self._roots)
        self._hash_limit = hash_limit
        self.quiet_s = quiet_s
        self._own_pid = os.getpid()
        self._lock = threading.RLock()
        self._pending: OrderedDict[bytes, Pending] = OrderedDict()
        self._writers: OrderedDict[bytes, tuple[int, str | None]] = OrderedDict()
        self._meta: OrderedDict[bytes, dict] = OrderedDict()
        self._group: FanotifyGroup | None = None
        self._resolver: HandleResolver | None = None
        self._mask = BASE_MASK
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r = self._wake_w = -1
        self.overflows = 0
        self._overflows_reported = 0
        self.marked: list[str] = []
        self._devs: set[str] = set()  # the devices of the filesystems marked
        self.events = 0
        self._synced = False
        self._verdicts: dict[bytes, bool] = {}  # folder key -> may concern a watch path

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Mark every filesystem that holds files; raises FanotifyUnavailable when none can be."""
        self._group = FanotifyGroup(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME)
        self._resolver = HandleResolver(self._group.libc)
        mounts = storage_mounts(read_mountinfo())
        for mount in mounts:
            if self.add_filesystem(mount.mountpoint):
                self._devs.add(mount.dev)
        if not self.marked:
            self._group.close()
            raise FanotifyUnavailable("no filesystem could be watched for writes.")
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="chaperone-writes", daemon=True)
        self._thread.start()

    def add_filesystem(self, mountpoint: bytes) -> bool:
        """Watch one more filesystem (a mount made during the session). False, with a
        ``capture-error`` record, when the kernel refuses."""
        assert self._group is not None and self._resolver is not None
        fsid = self._resolver.fsid_of(mountpoint)
        if fsid is not None and self._resolver.knows(fsid):
            return True  # the same filesystem, mounted again (a bind mount): its mark covers it
        try:
            try:
                self._group.mark(mountpoint, self._mask | FAN_RENAME)
                self._mask |= FAN_RENAME
            except FanotifyUnavailable:
                if self._mask & FAN_RENAME:
                    raise
                self._group.mark(mountpoint, self._mask | FAN_MOVED_FROM | FAN_MOVED_TO)  # kernels before 5.17
                self._mask |= FAN_MOVED_FROM | FAN_MOVED_TO
        except FanotifyUnavailable as exc:
            self._sink.emit(RecordType.CAPTURE_ERROR, {"what": "filesystem-watch", **path_fields(mountpoint),
                                              "error": f"{exc} Writes there are not seen outside the watch paths."})
            return False
        self._resolver.add(mountpoint)
        self.marked.append(os.fsdecode(mountpoint))
        return True

    def stop(self) -> None:
        """Read what is queued, record every pending operation, stop."""
        if self._thread is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        with self._lock:
            self._drain()
            self._flush(everything=True)
            self._report_overflow()
        assert self._group is not None and self._resolver is not None
        self._group.close()
        self._resolver.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        assert self._group is not None
        poller = select.poll()
        poller.register(self._group.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        busy = False
        while not self._stop.is_set():
            # Busy: let events gather (the kernel merges a file's create and close into one) instead
            # of waking for each; a stop ends the pause at once.
            if busy:
                self._stop.wait(COALESCE_S)
                ready = poller.poll(0)
            else:
                ready = poller.poll(int(self.quiet_s * 500))
            try:
                with self._lock:
                    busy = self._drain() >= BUSY_EVENTS
                    self._flush()
                    self._report_overflow()
            except Exception as exc:  # noqa: BLE001 - a capture thread must not die silently
                self._sink.emit(RecordType.CAPTURE_ERROR, {"what": "filesystem-watch", "path": None, "error": str(exc)})
            if any(fd == self._wake_r for fd, _ in ready):
                os.read(self._wake_r, 64)

    def on_mount(self, mount: Mount) -> None:
        """For :class:`agent.capture.mounts.MountWatcher`: watch a filesystem mounted during the session.
        One already watched (a bind mount of it) is not even opened: opening a mount point that is
        about to be unmounted makes the ``umount`` fail as busy."""
        if mount.fstype not in PSEUDO_FILESYSTEMS and mount.dev not in self._devs:
            with self._lock:
                if self.add_filesystem(mount.mountpoint):
                    self._devs.add(mount.dev)

    # --- attribution for the file watcher -----------------------------------------------------------

    def attribute(self, path: bytes) -> dict | None:
        """The last process that closed ``path`` (below the watch paths) after writing, or None."""
        with self._lock:
            found = self._writers.get(path)
            if found is None:
                self._drain()  # its event may still be queued
                found = self._writers.get(path)
            self._synced = False
            return self._attribution(*found) if found is not None else None

    def _attribution(self, pid: int, label: str | None) -> dict:
        if not self._synced:  # once per batch: the writer's exec may not be applied yet (its program)
            self._lineage.sync(timeout=0.5)
            self._synced = True
        described = self._lineage.describe(pid) or {}
        return {"pid": pid, "exe": described.get("exe"), "user": described.get("user"), "how": "fanotify",
                "technician": label is not None, "label": label, "via": described.get("via")}

    # --- events ----------------------------------------------------------------------------------

    def _drain(self) -> int:
        """Read and handle what is queued; returns how many events there were.

        Every write on the machine comes through here, so an event is first looked at cheaply: its
        writer (the lineage's table, without waiting) and its folder (cached per handle). Anyone
        else's event in a folder outside the watch paths is dropped there; the rest are parsed in
        full and handled."""
        assert self._group is not None and self._resolver is not None
        count = 0
        peek = self._lineage.peek
        folder_of = self._resolver.folder_raw
        while True:
            data = self._group.read()
            if not data:
                return count
            self._synced = False
            for start, end, mask, pid, key, name in event_spans(data):
                count += 1
                if pid == self._own_pid and not mask & FAN_Q_OVERFLOW:
                    continue
                if not mask & (FAN_Q_OVERFLOW | FAN_RENAME | FAN_MOVED_FROM | FAN_MOVED_TO) and key:
                    known, label = peek(pid)
                    if known and label is None:
                        if not self._folder_may_hold_watched(key):
                            continue
                        if not mask & (FAN_CLOSE_WRITE | FAN_ATTRIB):
                            continue  # anyone else's creation or deletion: the file watcher's alone
                        if mask & (FAN_ATTRIB | FAN_ONDIR) == 0 and name is not None:
                            # anyone else's close after writing: only who wrote it, as _handle does
                            folder = folder_of(key)
                            path = join_name(folder, name) if folder is not None else None
                            if path is not None and self._inside(path):
                                self._wrote(path, pid, None)
                                continue
                for event in parse_fid_events(data[start:end]):
                    self._handle(event)
            self.events += count

    def _folder_may_hold_watched(self, key: bytes) -> bool:
        """Whether an event in this folder may concern a watch path: the folder is one, or inside
        one, or holds one (an event on a watch path itself names its parent folder)."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            assert self._resolver is not None
            folder = self._resolver.folder_raw(key)
            if folder is None:
                return True  # cannot tell: look closer
            holds = any(os.path.dirname(r) == folder for r in self._roots)
            verdict = self._inside(folder) or holds
            if len(self._verdicts) > MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _inside(self, path: bytes | None) -> bool:
        return path is not None and (path in self._roots or path.startswith(self._prefixes))

    def _path(self, event: FidEvent, *kinds: int) -> bytes | None:
        info = event.info(*kinds)
        if info is None or self._resolver is None:
            return None
        return self._resolver.path(info)

    def _handle(self, event: FidEvent) -> None:
        mask, pid = event.mask, event.pid
        if mask & FAN_Q_OVERFLOW:
            self.overflows += 1
            return
        if pid == self._own_pid:
            return
        label = self._lineage.owner(pid, fresh=False)
        is_dir = bool(mask & FAN_ONDIR)
        if mask & FAN_RENAME:
            old = self._path(event, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME)
            new = self._path(event, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)
            if is_dir and self._resolver is not None:
                self._resolver.forget_folders()  # every cached path below it is stale now
                self._verdicts.clear()
            if label is not None and not (self._inside(old) and self._inside(new)):
                self._moved(old, new, pid, label, is_dir)
            return
        path = self._path(event, *_PATH_INFO)
        inside = self._inside(path)
        if path is None or (label is None and not inside):
            return
        if mask & (FAN_MOVED_FROM | FAN_MOVED_TO):
            if is_dir and self._resolver is not None:
                self._resolver.forget_folders()
                self._verdicts.clear()
            if label is not None and not inside:
                self._moved(path if mask & FAN_MOVED_FROM else None, path if mask & FAN_MOVED_TO else None,
                            pid, label, is_dir)
            return
        if inside:
            if mask & FAN_CLOSE_WRITE and not is_dir:
                self._wrote(path, pid, label)
            if mask & FAN_ATTRIB:
                self._metadata(path, pid, label)
            return
        assert label is not None  # outside the watch paths, only the technician's events get here
        if mask & FAN_DELETE:
            self._deleted(path, pid, label, is_dir)
            return
        entry = self._pending.get(path)
        if entry is None and mask & FAN_ATTRIB and not mask & (FAN_CREATE | FAN_CLOSE_WRITE):
            self._metadata(path, pid, label, inside=False)  # an existing file's mode or owner: at once
            return
        if entry is None:
            entry = self._pending[path] = Pending(path, pid, label, is_dir)
        entry.last = time.monotonic()
        entry.created |= bool(mask & FAN_CREATE)
        entry.written |= bool(mask & FAN_CLOSE_WRITE)
        if mask & FAN_ATTRIB:
            entry.attrib = True
            seen = read_metadata(path)  # now: a later change (chown clears setuid) or a delete may hide it
            if seen is not None:
                why = way_back_in(entry.meta or _EMPTY, seen)
                if why and why not in entry.reasons:
                    entry.reasons.append(why)
                entry.meta = seen
        if len(self._pending) > MAX_PENDING:
            self._flush(everything=True)

    def _wrote(self, path: bytes, pid: int, label: str | None) -> None:
        self._writers[path] = (pid, label)
        self._writers.move_to_end(path)
        if len(self._writers) > MAX_WRITERS:
            self._writers.popitem(last=False)

    # --- records ---------------------------------------------------------------------------------

    def _flush(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        cutoff, open_cutoff = now - self.quiet_s, now - OPEN_WAIT_S
        for path in [p for p, e in self._pending.items()
                     if everything or e.last <= (open_cutoff if _still_open(e) else cutoff)]:
            self._record(self._pending.pop(path))

    def _record(self, entry: Pending, read_from: bytes | None = None) -> None:
        """The record of a pending path; ``read_from``: where the file is now (it was moved)."""
        where = read_from or entry.path
        after = read_metadata(where) or entry.meta
        attribution = self._attribution(entry.pid, entry.label)
        self._file_record("created" if entry.created else "modified", entry, after, attribution, where)
        if after is not None:
            self._remember(where, after)

    def _file_record(self, op: str, entry: Pending, after: dict | None, attribution: dict, where: bytes) -> None:
        name = os.fsdecode(entry.path)
        data: dict = {"op": op, **path_fields(entry.path), "via": "filesystem", "attribution": attribution,
                      "sha256_before": None, "secret": is_secret_file(name)}
        if entry.dir or (after and after["kind"] == "dir"):
            data.update(kind="dir", size=None, sha256_after=None)
        else:
            result = hash_file(where, max_bytes=self._hash_limit)
            data.update(kind=result.kind if result.kind not in ("missing", "unknown") else "file",
                        size=result.size, sha256_after=result.sha256)
            if result.error:
                data["error"] = result.error
        reasons = list(entry.reasons)
        if after is not None:
            data["mode"] = after["mode"]
            data["owner"] = after["user"] if after["user"] is not None else after["uid"]
            why = way_back_in(_EMPTY if op == "created" else self._meta.get(entry.path), after)
            if why and why not in reasons:
                reasons.append(why)
        data["way_back_in"] = bool(reasons)
        data["why"] = "; ".join(reasons) if reasons else None
        if entry.attrib:
            data["metadata_changed"] = True
        self._sink.emit(RecordType.FILE, data)
        self._claim_unit(entry.path, entry.label)

    def _metadata(self, path: bytes, pid: int, label: str | None, *, inside: bool = True) -> None:
        """A metadata change: the technician's always; anyone else's (below the watch paths) when it
        changed something the agent knew before, or is a way back in."""
        before = self._meta.get(path)
        after = read_metadata(path)
        if after is not None:
            self._remember(path, after)
        if label is None and not way_back_in(before, after) and not (before is not None and changed(before, after)):
            return
        self._meta_record(path, before, after, self._attribution(pid, label), inside=inside)

    def _meta_record(self, path: bytes, before: dict | None, after: dict | None, attribution: dict, *,
                     inside: bool) -> None:
        """``changed`` is null when the metadata before is unknown (the change was the agent's first sight
        of the file); an empty list means times or attributes the record does not keep (``touch``)."""
        what = changed(before, after) if before is not None else None
        why = way_back_in(before, after)
        self._sink.emit(RecordType.FILE_META, {
            **path_fields(path), "kind": (after or before or {}).get("kind"), "before": before, "after": after,
            "changed": what, "way_back_in": why is not None, "why": why, "attribution": attribution,
            "inside_watch": inside, "error": None if after is not None else "gone before it could be read",
        })

    def _deleted(self, path: bytes, pid: int, label: str, is_dir: bool) -> None:
        pending = self._pending.pop(path, None)
        if pending is not None:
            self._record(pending)
        before = self._meta.pop(path, None)
        kind = "dir" if is_dir else (before or {}).get("kind", "file")
        secret = is_secret_file(os.fsdecode(path))
        self._sink.emit(RecordType.FILE, {"op": "deleted", **path_fields(path), "kind": kind, "via": "filesystem",
                                 "size": None, "sha256_before": None, "sha256_after": None, "secret": secret,
                                 "attribution": self._attribution(pid, label)})

    def _moved(self, old: bytes | None, new: bytes | None, pid: int, label: str, is_dir: bool) -> None:
        if old is not None and old in self._pending:
            self._record(self._pending.pop(old), read_from=new)
        if new is not None and new in self._pending:
            self._record(self._pending.pop(new))
        data = {"op": "moved", "via": "filesystem", "kind": "dir" if is_dir else "file",
                "attribution": self._attribution(pid, label), "sha256_before": None, "sha256_after": None,
                "size": None, "secret": is_secret_file(os.fsdecode(new or old or b""))}
        data.update(path_fields(old) if old is not None else {"path": None})
        data.update(path_fields(new, "dest") if new is not None else {"dest": None})
        if old is None or new is None:
            data["detail"] = "moved in from outside what is watched" if old is None else "moved out of what is watched"
        if old is not None and old in self._meta:
            self._meta.pop(old)
        if new is not None:
            after = read_metadata(new)
            if after is not None:
                self._remember(new, after)
                why = way_back_in(_EMPTY, after) if not is_dir else None
                data.update(mode=after["mode"], way_back_in=why is not None, why=why)
            self._claim_unit(new, label)
        self._sink.emit(RecordType.FILE, data)

    def _remember(self, path: bytes, meta: dict) -> None:
        self._meta[path] = meta
        self._meta.move_to_end(path)
        if len(self._meta) > MAX_META:
            self._meta.popitem(last=False)

    def _claim_unit(self, path: bytes, label: str | None) -> None:
        name = os.path.basename(os.fsdecode(path))
        if label is not None and b"/systemd/" in path and name.endswith(UNIT_SUFFIXES):
            self._lineage.claim_unit(name, label)

    def _report_overflow(self) -> None:
        if self.overflows > self._overflows_reported:
            self._sink.emit(RecordType.OVERFLOW, {
                "root": None, "source": "fanotify-filesystem", "count": self.overflows - self._overflows_reported,
                "detail": "The kernel's queue of file events overflowed: changes made meanwhile outside the watch "
                          "paths are not recorded (below them the file watcher's rescan finds them).",
                "rescanned": False, "changes": 0})
            self._overflows_reported = self.overflows


_EMPTY = {"mode": "0000", "kind": None, "acl": None, "capabilities": None}

