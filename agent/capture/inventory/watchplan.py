"""Which folders to watch for which categories, and which categories an event concerns.

A file is watched through its folder (an event names the entry), so that
its replacement by a rename (``sed -i``, ``visudo``, ``useradd``'s
``passwd+`` → ``passwd``) is seen like a write; and by itself (its inode),
so that a write through a hard link made elsewhere (``ln /etc/sudoers.d/x
/var/tmp/y``, then writing ``/var/tmp/y``: the folder's watch hears nothing)
is seen too. The files in a watched folder are watched by inode the same way
(folders of depth 0 only, at most ``MAX_FILES`` each: the unit folders hold
hundreds of files that their packages own). A folder is watched for all its
entries, and through its own parent, so that its removal or creation is
seen too. A watch follows an inode: when a path now names another one, the
watch is set again. A path that does not exist yet is waited for: its nearest existing
parent is watched for the next name on the way (``~`` for ``.ssh`` until
``~/.ssh`` exists). The live watcher applies the plan again after each batch
of changes, before collecting, so nothing falls between a new folder and
its watch.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping

from agent.capture.inotify_events import IN_IGNORED
from agent.capture.inventory import inotify
from agent.capture.inventory.types import Watch

ANY = None                # interest in every entry of a folder
MAX_SUBFOLDERS = 256      # of one folder watched with depth 1
MAX_FILES = 256           # of one folder watched by inode

Interests = dict[str, dict[str, "set[str] | None"]]   # folder -> category -> names (None: any)


def _add(plan: Interests, folder: str, category: str, names: set[str] | None) -> None:
    per = plan.setdefault(folder, {})
    if category in per and (per[category] is ANY or names is ANY):
        per[category] = ANY
    elif category in per:
        per[category] = per[category] | names  # type: ignore[operator]
    else:
        per[category] = None if names is ANY else set(names)


def plan_watches(wanted: Mapping[str, Iterable[Watch]]) -> tuple[Interests, set[str]]:
    """(path -> category -> the entry names that concern it, None: all of them; the paths that are files)."""
    plan: Interests = {}
    files: set[str] = set()

    def add_file(path: str, category: str) -> None:
        _add(plan, path, category, ANY)
        files.add(path)

    for category, watches in wanted.items():
        for w in watches:
            path = os.path.normpath(w.path)
            if os.path.isdir(path):
                _add(plan, path, category, ANY)
                if path != "/":
                    _add(plan, os.path.dirname(path), category, {os.path.basename(path)})
                try:
                    entries = sorted(os.listdir(path))[: MAX_SUBFOLDERS * 4]
                except OSError:
                    entries = []
                if w.depth >= 1:
                    found = [e for e in entries if os.path.isdir(os.path.join(path, e))][:MAX_SUBFOLDERS]
                    for sub in found:
                        _add(plan, os.path.join(path, sub), category, ANY)
                else:
                    regular = [e for e in entries if os.path.isfile(os.path.join(path, e))][:MAX_FILES]
                    for name in regular:
                        add_file(os.path.join(path, name), category)
                continue
            child, parent = path, os.path.dirname(path)
            while parent != child and not os.path.isdir(parent):
                child, parent = parent, os.path.dirname(parent)
            if parent != child:
                _add(plan, parent, category, {os.path.basename(child)})
            if child == path and os.path.isfile(path):
                add_file(path, category)
    return plan, files


class WatchPlan:
    """The paths watched now, by inotify descriptor, and what each one's events concern."""

    def __init__(self) -> None:
        self.interests: Interests = {}
        self._wd_of: dict[str, tuple[int, tuple[int, int]]] = {}   # path -> (wd, (dev, inode))
        self._paths_of: dict[int, set[str]] = {}

    @property
    def folders(self) -> list[str]:
        return sorted(self._wd_of)

    def _drop(self, ino: inotify.Inotify, path: str) -> None:
        wd, _inode = self._wd_of.pop(path)
        sharing = self._paths_of.get(wd, set())
        sharing.discard(path)
        if not sharing:
            self._paths_of.pop(wd, None)
            ino.remove(wd)

    def apply(self, ino: inotify.Inotify, wanted: Mapping[str, Iterable[Watch]]) -> list[tuple[str, str, OSError]]:
        """Watch what ``wanted`` needs and nothing else; (category, path, error) of what could not be."""
        plan, files = plan_watches(wanted)
        failures: list[tuple[str, str, OSError]] = []
        for path in [p for p in self._wd_of if p not in plan]:
            self._drop(ino, path)
        for path in plan:
            try:
                st = os.stat(path)
            except OSError:
                if path in self._wd_of:
                    self._drop(ino, path)
                continue  # gone meanwhile: its parent's event says so
            inode = (st.st_dev, st.st_ino)
            if path in self._wd_of:
                if self._wd_of[path][1] == inode:
                    continue
                self._drop(ino, path)  # the path names another file or folder now: follow it
            try:
                wd = ino.add(path, inotify.FILE_MASK if path in files else inotify.FOLDER_MASK)
            except OSError as exc:
                # ENOENT: gone meanwhile, its parent's event says so. EACCES: another user's folder that an
                # agent not running as root may not watch, nor read: its collector records that instead.
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    failures += [(category, path, exc) for category in plan[path]]
                continue
            self._wd_of[path] = (wd, inode)
            self._paths_of.setdefault(wd, set()).add(path)
        self.interests = plan
        return failures

    def categories_for(self, wd: int, name: str, mask: int) -> set[str]:
        """The categories an event (on path ``wd``, about entry ``name``: empty for the path itself) concerns."""
        found: set[str] = set()
        for path in self._paths_of.get(wd, ()):
            for category, names in self.interests.get(path, {}).items():
                if names is ANY or not name or name in names:
                    found.add(category)
        if mask & IN_IGNORED:  # the kernel dropped the watch (the path is gone)
            for path in self._paths_of.pop(wd, set()):
                self._wd_of.pop(path, None)
        return found
