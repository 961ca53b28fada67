"""Which folders to watch for which categories, and which categories an event concerns.

A file is watched through its folder (an event names the entry), so that
its replacement by a rename (``sed -i``, ``visudo``, ``useradd``'s
``passwd+`` → ``passwd``) is seen like a write. A folder is watched for all
its entries, and through its own parent, so that its removal or creation is
seen too. A path that does not exist yet is waited for: its nearest existing
parent is watched for the next name on the way (``~`` for ``.ssh`` until
``~/.ssh`` exists). The live watcher applies the plan again after each batch
of changes, before collecting, so nothing falls between a new folder and
its watch.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping

from agent.capture.inventory import inotify
from agent.capture.inventory.types import Watch

ANY = None                # interest in every entry of a folder
MAX_SUBFOLDERS = 256      # of one folder watched with depth 1

Interests = dict[str, dict[str, "set[str] | None"]]   # folder -> category -> names (None: any)


def _add(plan: Interests, folder: str, category: str, names: set[str] | None) -> None:
    per = plan.setdefault(folder, {})
    if category in per and (per[category] is ANY or names is ANY):
        per[category] = ANY
    elif category in per:
        per[category] = per[category] | names  # type: ignore[operator]
    else:
        per[category] = None if names is ANY else set(names)


def plan_watches(wanted: Mapping[str, Iterable[Watch]]) -> Interests:
    """folder -> category -> the entry names that concern it (None: all of them)."""
    plan: Interests = {}
    for category, watches in wanted.items():
        for w in watches:
            path = os.path.normpath(w.path)
            if os.path.isdir(path):
                _add(plan, path, category, ANY)
                if path != "/":
                    _add(plan, os.path.dirname(path), category, {os.path.basename(path)})
                if w.depth >= 1:
                    try:
                        subs = sorted(os.listdir(path))[: MAX_SUBFOLDERS * 4]
                    except OSError:
                        subs = []
                    found = [s for s in subs if os.path.isdir(os.path.join(path, s))][:MAX_SUBFOLDERS]
                    for sub in found:
                        _add(plan, os.path.join(path, sub), category, ANY)
                continue
            child, parent = path, os.path.dirname(path)
            while parent != child and not os.path.isdir(parent):
                child, parent = parent, os.path.dirname(parent)
            if parent != child:
                _add(plan, parent, category, {os.path.basename(child)})
    return plan


class WatchPlan:
    """The folders watched now, by inotify descriptor, and what each one's events concern."""

    def __init__(self) -> None:
        self.interests: Interests = {}
        self._wd_of: dict[str, int] = {}
        self._folders_of: dict[int, set[str]] = {}

    @property
    def folders(self) -> list[str]:
        return sorted(self._wd_of)

    def apply(self, ino: inotify.Inotify, wanted: Mapping[str, Iterable[Watch]]) -> list[tuple[str, str, OSError]]:
        """Watch what ``wanted`` needs and nothing else; (category, folder, error) of what could not be."""
        plan = plan_watches(wanted)
        failures: list[tuple[str, str, OSError]] = []
        for folder in [f for f in self._wd_of if f not in plan]:
            wd = self._wd_of.pop(folder)
            sharing = self._folders_of.get(wd, set())
            sharing.discard(folder)
            if not sharing:
                self._folders_of.pop(wd, None)
                ino.remove(wd)
        for folder in plan:
            if folder in self._wd_of:
                continue
            try:
                wd = ino.add(folder)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # gone meanwhile: its parent's event says so
                    failures += [(category, folder, exc) for category in plan[folder]]
                continue
            self._wd_of[folder] = wd
            self._folders_of.setdefault(wd, set()).add(folder)
        self.interests = plan
        return failures

    def categories_for(self, wd: int, name: str, mask: int) -> set[str]:
        """The categories an event (on folder ``wd``, about entry ``name``) concerns."""
        found: set[str] = set()
        for folder in self._folders_of.get(wd, ()):
            for category, names in self.interests.get(folder, {}).items():
                if names is ANY or not name or name in names:
                    found.add(category)
        if mask & inotify.IN_IGNORED:  # the kernel dropped the watch (the folder is gone)
            for folder in self._folders_of.pop(wd, set()):
                self._wd_of.pop(folder, None)
        return found
