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
- ``on_mount`` (the service passes the filesystem-wide capture's
  ``add_filesystem``) is called for each new mount, so writes on a
  filesystem mounted during the session are seen too.

What this does not see: mounts in another mount namespace (``unshare -m``,
containers), which do not change the agent's table. Who mounted is not in
the table either; the technician's ``mount`` command is in their process
records.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterable

from agent.capture.mountinfo import Mount, parse_mountinfo

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


class MountWatcher:
    """Watches the mount table in a thread; ``start()``/``stop()``."""

    def __init__(self, sink, watch_roots: Iterable[bytes | str], *,
                 on_mount: Callable[[Mount], object] | None = None, path: str = MOUNTINFO):
        self._sink = sink
        roots = [os.fsencode(r) for r in watch_roots]
        self._roots = list(dict.fromkeys([*roots, *(os.fsencode(os.path.realpath(r)) for r in roots)]))
        self._on_mount = on_mount
        self._path = path
        self._fd = -1
        self._known: dict[int, Mount] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r = self._wake_w = -1
        self.changes = 0

    def start(self) -> None:
        self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
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
        while not self._stop.is_set():
            ready = poller.poll()
            if any(fd == self._fd for fd, _ in ready):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - a capture thread must not die silently
                    self._sink.emit("capture-error", {"what": "mounts", "path": None, "error": str(exc)})

    def check(self) -> None:
        """Compare the mount table with the last one seen and record the differences."""
        now = self._read()
        for op, mount in mount_changes(self._known, now):
            self._record(op, mount)
        self._known = now

    def _record(self, op: str, mount: Mount) -> None:
        self.changes += 1
        watched = [{"path": os.fsdecode(root), "relation": rel} for root in self._roots
                   if (rel := relation(mount.mountpoint, root)) is not None]
        watched = list({w["path"]: w for w in watched}.values())
        self._sink.emit("mount", {"op": op, **mount.describe(), "watched": watched})
        if op == "mounted":
            for hit in watched:
                what = ("hides the watched folder" if hit["relation"] == "over"
                        else "puts another filesystem inside the watched folder")
                self._sink.emit("alarm", {
                    "tool": "mount", "pid": None, "process": None, "user": None, "connections": [],
                    "mountpoint": mount.describe()["mountpoint"], "watch_path": hit["path"],
                    "relation": hit["relation"], "fstype": mount.fstype, "source": mount.describe()["source"],
                    "detail": f"A {mount.fstype} mount at {mount.describe()['mountpoint']} {what} "
                              f"{hit['path']}: changes there may not be where the watch expects them.",
                })
            if self._on_mount is not None:
                self._on_mount(mount)
