"""Mounts and unmounts during the session, and an alarm for a mount over or under a watched path.

The kernel flags ``/proc/self/mountinfo`` (``POLLPRI``) whenever the mount
table changes; :class:`MountWatcher` then reads it again and compares it
with what it knew, by mount id:

- ``mount`` records: ``op`` ``mounted``, ``unmounted`` or ``remounted``
  (options changed, e.g. read-only), with the mount point, the filesystem
  type, the source, the folder of the source mounted there (``root``: a
  bind mount of a subfolder shows it), the options, and ``watched`` (the
  watch paths it covers, hides or sits in);
- an ``alarm`` record (``tool: "mount"``) for a mount *over* a watched path
  (at it, or at a folder above it: what was watched is hidden, and writes
  go elsewhere) or *under* one (a folder inside it now shows another
  filesystem);
- ``on_mount`` (capture passes the filesystem-wide capture's and the
  lineage's) is called for each new mount, so writes on, and programs from,
  a filesystem mounted during the session are seen too.

Where the kernel has fanotify's mount events (Linux 6.15+, as root), every
attach and detach in the agent's mount namespace is also queued with the
pid of the process that did it: records then say who (``by``: the
process and its lineage), and a mount that came and went between two reads
of the table (a bind mount, a write, an unmount, within milliseconds) is
not lost: it is a ``mount`` record with ``op: "mounted-and-unmounted"``
(where it was is no longer knowable) and an alarm. Without them
(``events: false`` in the records), such a mount may go unseen; the
technician's ``mount`` command is still in their process records.

What this does not see: mounts in another mount namespace (``unshare -m``,
containers), which do not change the agent's table.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterable

from agent.capture.fanotify import (
    FAN_CLASS_NOTIF,
    FAN_MARK_ADD,
    FAN_MARK_MNTNS,
    FAN_MNT_ATTACH,
    FAN_MNT_DETACH,
    FAN_Q_OVERFLOW,
    FAN_REPORT_MNT,
    FanotifyGroup,
    FanotifyUnavailable,
    mount_events,
    old_mount_id,
)
from agent.capture.mountinfo import Mount, parse_mountinfo
from agent.records import RecordType

MOUNTINFO = "/proc/self/mountinfo"


def relation(mountpoint: bytes, root: bytes) -> str | None:
    """How a mount at ``mountpoint`` stands to the watched ``root``: ``over`` (at it or above it),
    ``under`` (inside it), or None."""
    mp = mountpoint.rstrip(b"/") or b"/"
    rt = root.rstrip(b"/") or b"/"
    if mp == rt or rt.startswith(mp if mp == b"/" else mp + b"/"):
        return "over"
    if mp.startswith(rt if rt == b"/" else rt + b"/"):
        return "under"
    return None


def mount_changes(before: dict[int, Mount], after: dict[int, Mount]) -> list[tuple[str, Mount]]:
    """(op, mount) for every mount added, removed, or whose options changed (pure)."""
    changes: list[tuple[str, Mount]] = []
    for mount_id in sorted(set(after) - set(before)):
        changes.append(("mounted", after[mount_id]))
    for mount_id in sorted(set(before) - set(after)):
        changes.append(("unmounted", before[mount_id]))
    for mount_id in sorted(set(before) & set(after)):
        old, new = before[mount_id], after[mount_id]
        if (old.options, old.super_options, old.mountpoint) != (new.options, new.super_options, new.mountpoint):
            changes.append(("remounted", new))
    return changes


class MountEvents:
    """fanotify's mount events for the agent's mount namespace (attach, detach, with the pid)."""

    def __init__(self) -> None:
        self._group = FanotifyGroup(FAN_CLASS_NOTIF | FAN_REPORT_MNT)
        ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if self._group.libc.fanotify_mark(self._group.fd, FAN_MARK_ADD | FAN_MARK_MNTNS,
                                              FAN_MNT_ATTACH | FAN_MNT_DETACH, ns, None) != 0:
                self._group.close()
                raise FanotifyUnavailable("the kernel has no mount events (Linux 6.15 or later).")
        finally:
            os.close(ns)
        self.libc = self._group.libc

    def fileno(self) -> int:
        return self._group.fileno()

    def drain(self) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        while True:
            data = self._group.read()
            if not data:
                return out
            out += mount_events(data)

    def close(self) -> None:
        self._group.close()


class MountWatcher:
    """Watches the mount table in a thread; ``start()``/``stop()``."""

    def __init__(self, sink, watch_roots: Iterable[bytes | str], *,
                 on_mount: Callable[[Mount], object] | None = None, path: str = MOUNTINFO,
                 describe: Callable[[int], dict | None] | None = None):
        """``describe(pid)``: who a pid is, for ``by`` (the lineage's ``describe``)."""
        self._sink = sink
        roots = [os.fsencode(r) for r in watch_roots]
        self._roots = list(dict.fromkeys([*roots, *(os.fsencode(os.path.realpath(r)) for r in roots)]))
        self._on_mount = on_mount
        self._describe = describe
        self._path = path
        self._fd = -1
        self._known: dict[int, Mount] = {}
        self._unique: dict[int, int] = {}  # mountinfo id -> unique id, for mounts attached during the session
        self._detached: dict[int, int] = {}  # unique id -> pid, detach events not matched yet
        self._attached: dict[int, tuple[int, int, bool]] = {}  # mountinfo id -> (pid, unique id, before a read)
        self._events: MountEvents | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._wake_r = self._wake_w = -1
        self.changes = 0
        self.event_overflows = 0

    @property
    def with_events(self) -> bool:
        return self._events is not None

    def start(self) -> None:
        self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._events = MountEvents() if self._path == MOUNTINFO else None
        except FanotifyUnavailable:
            self._events = None
        self._known = self._read()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="chaperone-mounts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        self.check()  # a change made just before the end
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)
        if self._events is not None:
            self._events.close()

    def _read(self) -> dict[int, Mount]:
        chunks = []
        os.lseek(self._fd, 0, os.SEEK_SET)
        while True:
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return parse_mountinfo(b"".join(chunks))

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLPRI | select.POLLERR)
        poller.register(self._wake_r, select.POLLIN)
        if self._events is not None:
            poller.register(self._events.fileno(), select.POLLIN)
        while not self._stop.is_set():
            ready = poller.poll()
            if any(fd != self._wake_r for fd, _ in ready):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - a capture thread must not die silently
                    self._sink.emit(RecordType.CAPTURE_ERROR, {"what": "mounts", "path": None, "error": str(exc)})

    def check(self) -> None:
        """Compare the mount table with the last one seen, match the kernel's mount events (who, and
        mounts that came and went unseen), and record the differences."""
        with self._lock:
            self._absorb(read_before=True)  # attached before the read below: in it, unless gone already
            before = self._known
            self._known = self._read()
            changes = mount_changes(before, self._known)
            self._absorb(read_before=False)  # attached meanwhile: the pid of a mount the read just found
            for op, mount in changes:
                if op == "unmounted":
                    uid = self._unique.pop(mount.mount_id, None)
                    pid = self._detached.pop(uid, None) if uid is not None else None
                else:
                    pid = self._attached.pop(mount.mount_id, (None, 0, False))[0]
                self._record(op, mount, pid)
            for old, (pid, uid, early) in list(self._attached.items()):
                if old in self._known:
                    del self._attached[old]  # recorded by an earlier read, before its event came
                elif early:
                    del self._attached[old]  # it was attached before the read, yet the read never showed it
                    self._unseen(uid, pid, self._detached.pop(uid, None) is not None)
                else:
                    self._attached[old] = (pid, uid, True)  # the next read will show it (or not)
            if len(self._detached) > 1024:
                self._detached.clear()

    def _absorb(self, *, read_before: bool) -> None:
        if self._events is None:
            return
        events = self._events.drain()
        for mask, pid, uid in events:  # detaches first: an attach whose mount is gone may be in them
            if mask & FAN_MNT_DETACH and mask != FAN_Q_OVERFLOW:
                self._detached[uid] = pid
        for mask, pid, uid in events:
            if mask == FAN_Q_OVERFLOW:
                self.event_overflows += 1
            elif mask & FAN_MNT_ATTACH:
                old = self._old_id(uid)
                if old is None:  # gone already: no read of the table can show it
                    self._unseen(uid, pid, self._detached.pop(uid, None) is not None)
                else:
                    self._attached[old] = (pid, uid, read_before)
                    self._unique[old] = uid

    def _old_id(self, uid: int) -> int | None:
        return old_mount_id(self._events.libc, uid) if self._events is not None else None

    def _by(self, pid: int | None) -> dict | None:
        if pid is None:
            return None
        described = self._describe(pid) if self._describe is not None else None
        if not described:
            return {"pid": pid}
        return {k: described.get(k) for k in ("pid", "exe", "user", "technician", "label", "via")}

    def _record(self, op: str, mount: Mount, pid: int | None) -> None:
        self.changes += 1
        watched = [{"path": os.fsdecode(root), "relation": rel} for root in self._roots
                   if (rel := relation(mount.mountpoint, root)) is not None]
        watched = list({w["path"]: w for w in watched}.values())
        by = self._by(pid)
        self._sink.emit(RecordType.MOUNT, {"op": op, **mount.describe(), "watched": watched, "by": by,
                                  "events": self._events is not None})
        if op == "mounted":
            for hit in watched:
                what = ("hides the watched folder" if hit["relation"] == "over"
                        else "puts another filesystem inside the watched folder")
                self._sink.emit(RecordType.ALARM, {
                    "tool": "mount", "pid": pid, "process": (by or {}).get("exe"), "user": (by or {}).get("user"),
                    "connections": [], "by": by,
                    "mountpoint": mount.describe()["mountpoint"], "watch_path": hit["path"],
                    "relation": hit["relation"], "fstype": mount.fstype, "source": mount.describe()["source"],
                    "detail": f"A {mount.fstype} mount at {mount.describe()['mountpoint']} {what} "
                              f"{hit['path']}: changes there may not be where the watch expects them.",
                })
            if self._on_mount is not None:
                self._on_mount(mount)

    def _unseen(self, uid: int, pid: int, gone: bool) -> None:
        """A mount the kernel reported that the table never showed: it came and went at once."""
        self.changes += 1
        by = self._by(pid)
        detail = ("A mount was attached and removed again before the mount table could be read (within "
                  "milliseconds): where it was is no longer known, and it may have covered a watched folder.")
        self._sink.emit(RecordType.MOUNT, {"op": "mounted-and-unmounted" if gone else "mounted-unseen",
                                  "mount_id_unique": uid, "mountpoint": None, "watched": None, "by": by,
                                  "events": True, "detail": detail})
        self._sink.emit(RecordType.ALARM, {"tool": "mount", "pid": pid, "process": (by or {}).get("exe"),
                                  "user": (by or {}).get("user"), "connections": [], "by": by,
                                  "mountpoint": None, "watch_path": None, "relation": None, "detail": detail})
