"""The inventory's shared types: what a snapshot is, what a category is.

A snapshot maps a category (``packages``, ``users``, …) to its items: item
key -> details (a dict of strings, ints, bools and lists of strings). Every
item's details name their ``source`` (``dpkg``, ``/etc/passwd``, a folder…);
an item defined by one file also names it in ``path`` when ``source`` is not
that file (a folder, or ``systemctl``), so that its package can be found.

A source that cannot be read becomes an *error entry*: key
``"!error:<source>"``, details ``{"source", "error"}``. The diff ignores
every item of a source that failed on either side (so a failed read never
looks like everything was removed), and the summary reports the errors.

A :class:`Category` is what the live watcher needs to know of one kind of
item: how to collect it, which files and folders to watch for it, and, for
what no file shows (listening ports, running programs), a cheap fingerprint
to poll. The tables of categories are built per OS in ``registry``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

ERROR_PREFIX = "!error:"

Items = dict[str, dict]
Collector = Callable[[], Items]
Snapshot = dict[str, Items]


def error_entry(source: str, error: str) -> tuple[str, dict]:
    """The item that records that ``source`` could not be read."""
    return ERROR_PREFIX + source, {"source": source, "error": error}


def is_error(key: str) -> bool:
    return key.startswith(ERROR_PREFIX)


class Watch(NamedTuple):
    """A file or folder whose change means: collect the category again.

    ``path`` is the real path to watch (under the collectors' root). A folder
    is watched for its entries and, with ``depth`` 1, its sub-folders' entries
    too (``multi-user.target.wants``, ``*.d``). A path that does not exist
    yet is waited for: its nearest existing parent is watched for it.
    """

    path: str
    depth: int = 0


@dataclass(frozen=True)
class Category:
    """One kind of item: how to collect it, and how to notice that it changed.

    ``watches()`` is called again whenever a category was collected (a new
    user brings a new home to watch); it must be cheap. ``fingerprint()`` is
    polled every ``poll_s`` seconds when set: the category is collected again
    when its value changes. ``quiet_s`` is the debounce: a burst of changes
    is collected once, ``quiet_s`` after the last of them (and at most
    ``4 * quiet_s`` after the first).
    """

    name: str
    collect: Collector
    watches: Callable[[], list[Watch]] | None = None
    fingerprint: Callable[[], object] | None = None
    poll_s: float = 2.0
    quiet_s: float = 0.1


Categories = dict[str, Category]


def collectors_of(categories: Categories) -> dict[str, Collector]:
    """category -> collector, for :func:`take_snapshot`."""
    return {name: c.collect for name, c in categories.items()}
