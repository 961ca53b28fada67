"""Live ways back in: each category checked again as soon as its sources change, during the session.

    live = LiveInventory(sink, before, categories, root="/")
    live.start()             # watches set, then every category checked once (in the background)
    ...                      # inventory-change records (live: true), an alarm for each new way back in
    live.stop()
    live.final_changes(after)   # before -> after, attributed: the end-of-session records

One thread. It waits on an inotify descriptor (``inotify``) that watches the
folders holding each category's files (``Category.watches()``), and wakes
for the polled categories (listening ports, remote-access tools: a cheap
fingerprint every ``poll_s``). A burst of events is debounced per category
(``quiet_s``), then that category alone is collected again and compared with
its last state; each difference is an ``inventory-change`` record, and a way
back in is also an ``alarm`` record. When nothing happens it costs nothing
but the polls (measured in bench/RESULTS.md).

Why ``start()`` checks every category once: the "before" was taken before
the watches existed, so a change in between would otherwise be missed; and
after an agent restart (``start(gap=…)``) that first check is what finds the
changes made while the agent was down (their records carry ``gap``).

Record fields added to the documented ``inventory-change`` shape: ``live``
(true here; false at the end), ``origin`` (``package``/``unexplained``),
``package`` and ``origin_detail`` (``origin``), and ``gap`` when found by
the first check after a restart. ``alarm`` records of this module have
``kind: "way-back-in"`` and ``category``, ``op``, ``item``, ``why``,
``origin``, ``origin_detail``, ``live`` and ``detail`` (one sentence).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from agent.capture.inotify_events import IN_Q_OVERFLOW
from agent.capture.inventory import inotify
from agent.capture.inventory.diff import diff_category, diff_snapshots
from agent.capture.inventory.machine import Machine
from agent.capture.inventory.origin import PackageOrigins
from agent.capture.inventory.snapshot import take_snapshot
from agent.capture.inventory.types import Categories, Snapshot, collectors_of
from agent.capture.inventory.watchplan import WatchPlan
from agent.records import RecordType

DPKG_WAIT_S = 30.0           # longest a change is held back while dpkg runs
UNWATCHED_POLL_S = 30.0      # a category whose folders cannot be watched is collected this often
MAX_ERRORS_REPORTED = 20
COLLECT_TIMEOUT_S = 60.0


def change_file(change: dict) -> str | None:
    """The file that defines a change's item: ``path`` in its details, else ``source`` when it is a path."""
    detail = change["detail"]
    d = detail.get("after") if change["op"] == "changed" else detail
    d = d or {}
    path = d.get("path") or d.get("source")
    return path if isinstance(path, str) and path.startswith("/") else None


def alarm_of(change: dict) -> dict:
    """The ``alarm`` record's data for a change that is a way back in."""
    note = f" ({change['origin_detail']})" if change.get("origin_detail") else ""
    return {
        "kind": "way-back-in",
        "category": change["category"],
        "op": change["op"],
        "item": change["item"],
        "why": change["why"],
        "origin": change.get("origin", "unexplained"),
        "origin_detail": change.get("origin_detail"),
        "live": change.get("live", False),
        "detail": f"{change['why']}{note}",
    }


class LiveInventory:
    """Watches the machine's ways back in while a session runs; records go to ``sink.emit(type, data)``."""

    def __init__(self, sink, before: Snapshot, categories: Categories, *, root: str = "/",
                 attribute: bool = True, unwatched_poll_s: float = UNWATCHED_POLL_S, dpkg_wait_s: float = DPKG_WAIT_S,
                 make_inotify: Callable[[], inotify.Inotify] = inotify.Inotify,
                 collect_timeout_s: float = COLLECT_TIMEOUT_S):
        """``before``: the session's "before" snapshot; only its categories are watched.
        ``categories``: the table (``registry.default_categories(root=…)``). ``root``: where dpkg's
        database is read for attribution (the same root as the categories'). ``attribute``: look
        packages up at all. ``unwatched_poll_s``: how often a category whose folders cannot be
        watched is collected instead. ``dpkg_wait_s``: the longest a change is held back while dpkg
        runs. ``make_inotify``: the inotify maker (tests give a failing one). ``collect_timeout_s``:
        the longest one collection may take before it counts as failed."""
        self._sink = sink
        self.before = before
        self._categories = {name: c for name, c in categories.items() if name in before}
        self._current: Snapshot = {name: dict(before[name]) for name in self._categories}
        self._origins = PackageOrigins(Machine(root), before.get("packages")) if attribute else None
        self._unwatched_poll_s = unwatched_poll_s
        self._dpkg_wait_s = dpkg_wait_s
        self._collect_timeout_s = collect_timeout_s
        self._make_inotify = make_inotify
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._ino: inotify.Inotify | None = None
        self._plan = WatchPlan()
        self._dirty: dict[str, tuple[float, float]] = {}     # category -> (first event, last event)
        self._next_poll: dict[str, float] = {}
        self._fingerprints: dict[str, object] = {}
        self._unwatched: set[str] = set()
        self._held: list[tuple[float, dict]] = []            # (deadline, change) while dpkg runs
        self._errors: set[str] = set()
        self._gap: dict | None = None
        self.ready = threading.Event()                        # set once the first check is done
        self.checks: Counter[str] = Counter()                 # category -> times collected again

    # -- life cycle -------------------------------------------------------------------

    def start(self, gap: dict | None = None) -> None:
        """Set the watches, then check every category once in the background.

        ``gap`` (e.g. ``{"from": ts, "to": ts}``) says that the "before" is
        from before an agent restart: what the first check finds carries it."""
        self._gap = gap
        if inotify.available():
            try:
                self._ino = self._make_inotify()
            except OSError as exc:
                self._error(f"inotify could not be started ({exc.strerror or exc}); categories are polled instead.")
        self._replan()
        self._thread = threading.Thread(target=self._run, name="inventory-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; changes still held back for dpkg are recorded as they are. Safe to call twice."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for _deadline, change in self._held:
            self._record(change)
        self._held = []
        if self._ino is not None:
            self._ino.close()
            self._ino = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def current(self) -> Snapshot:
        """The last state seen of every category (a copy)."""
        return {name: dict(items) for name, items in self._current.items()}

    def final_changes(self, after: Snapshot) -> list[dict]:
        """Data of the end-of-session ``inventory-change`` records: before -> after, attributed, ``live`` false."""
        return [self._attributed({**c, "live": False}, look_further=c["way_back_in"])
                for c in diff_snapshots(self.before, after)]

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            now = time.monotonic()
            for name, c in self._categories.items():
                if c.fingerprint is not None:
                    self._next_poll[name] = now  # its first fingerprint, taken before the first check
            self._poll(now)
            self._dirty.clear()
            self._check(list(self._categories))
        except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad step; it says so
            self._error(f"the first live check failed: {type(exc).__name__}: {exc}")
        self._gap = None
        self.ready.set()
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad step; it says so
                self._error(f"the live check failed: {type(exc).__name__}: {exc}")
                self._stop.wait(1.0)

    def _timeout(self, now: float) -> float:
        deadlines = [self._due_at(name) for name in self._dirty]
        deadlines += list(self._next_poll.values())
        if self._held:
            deadlines.append(now + 0.25)
        return max(0.0, min(deadlines, default=now + 60.0) - now)

    def _due_at(self, name: str) -> float:
        first, last = self._dirty[name]
        quiet = self._categories[name].quiet_s
        return min(last + quiet, first + 4 * quiet)

    def _step(self) -> None:
        now = time.monotonic()
        fds = [self._wake_r] + ([self._ino.fd] if self._ino is not None else [])
        ready, _, _ = select.select(fds, [], [], self._timeout(now))
        if self._stop.is_set():
            return
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
        now = time.monotonic()
        if self._ino is not None and self._ino.fd in ready:
            self._route(self._ino.read(), now)
        self._poll(now)
        due = [name for name in self._dirty if self._due_at(name) <= now]
        for name in due:
            del self._dirty[name]
        if due:
            self._replan()  # before collecting: a write into a folder that just appeared is then seen either way
            self._check(due)
        self._release_held()

    def _route(self, events: Iterable[inotify.Event], now: float) -> None:
        touched: set[str] = set()
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                touched |= {n for n, c in self._categories.items() if c.watches is not None}
                continue
            touched |= self._plan.categories_for(event.wd, event.name, event.mask)
        for name in touched:
            first, _last = self._dirty.get(name, (now, now))
            self._dirty[name] = (first, now)

    def _poll(self, now: float) -> None:
        for name, at in list(self._next_poll.items()):
            if at > now:
                continue
            c = self._categories[name]
            self._next_poll[name] = now + (c.poll_s if c.fingerprint is not None else self._unwatched_poll_s)
            if c.fingerprint is None:
                self._dirty.setdefault(name, (now, now))
                continue
            try:
                fingerprint = c.fingerprint()
            except Exception as exc:  # noqa: BLE001 - a failed poll is recorded and collected instead
                self._error(f"the {name} poll failed: {type(exc).__name__}: {exc}")
                fingerprint = None
            if name not in self._fingerprints or fingerprint != self._fingerprints[name] or fingerprint is None:
                self._fingerprints[name] = fingerprint
                self._dirty.setdefault(name, (now - 60, now - 60))  # due at once

    def _check(self, names: list[str]) -> None:
        # in threads, within a time limit: a collector stuck on a hung home is an error entry, not a stuck watcher
        fresh = take_snapshot(collectors_of({n: self._categories[n] for n in names}), timeout=self._collect_timeout_s)
        for name in sorted(names):
            changes = diff_category(name, self._current[name], fresh[name])
            self._current[name] = fresh[name]
            for change in changes:
                change = {**change, "live": True}
                if self._gap is not None:
                    change["gap"] = self._gap
                self._hold_or_record(change)
            self.checks[name] += 1

    # -- attribution, held changes, records ---------------------------------------------

    def _attributed(self, change: dict, look_further: bool = True) -> dict:
        if self._origins is None or change["op"] == "removed":
            return {**change, "origin": "unexplained", "package": None, "origin_detail": None}
        return {**change, **self._origins.attribute(change_file(change), look_further=look_further)}

    def _hold_or_record(self, change: dict) -> None:
        """Record a change now, or, while dpkg runs, hold it until its database is written.

        The question "is dpkg running?" comes first: an answer read from dpkg's
        database while dpkg writes it would be stale when dpkg ends meanwhile."""
        if (self._origins is not None and change["op"] != "removed" and change_file(change)
                and self._origins.busy()):
            self._held.append((time.monotonic() + self._dpkg_wait_s, change))
            return
        self._record(change)

    def _release_held(self) -> None:
        if not self._held:
            return
        busy = self._origins is not None and self._origins.busy()
        now = time.monotonic()
        keep = []
        for deadline, change in self._held:
            if busy and now < deadline:
                keep.append((deadline, change))
            else:
                self._record(change)
        self._held = keep

    def _record(self, change: dict) -> None:
        change = self._attributed(change, look_further=change["way_back_in"])
        self._sink.emit(RecordType.INVENTORY_CHANGE, change)
        if change["way_back_in"]:
            self._sink.emit(RecordType.ALARM, alarm_of(change))

    def _error(self, text: str) -> None:
        if text in self._errors or len(self._errors) >= MAX_ERRORS_REPORTED:
            return
        self._errors.add(text)
        try:
            self._sink.emit(RecordType.CAPTURE_ERROR, {"what": "live-inventory", "path": None, "error": text})
        except Exception:  # noqa: BLE001 - nowhere left to report to; the end-of-session check still runs
            return

    # -- watches ----------------------------------------------------------------------------

    def _replan(self) -> None:
        wanted: dict[str, list] = {}
        for name, c in self._categories.items():
            if c.watches is None:
                continue
            try:
                wanted[name] = c.watches()
            except Exception as exc:  # noqa: BLE001 - a category that cannot say what to watch is polled
                self._error(f"what to watch for {name} could not be listed: {type(exc).__name__}: {exc}")
                wanted[name] = []
                self._unwatch(name)
        if self._ino is None:
            for name in wanted:
                self._unwatch(name)
            return
        for name, path, error in self._plan.apply(self._ino, wanted):
            self._error(f"{path} cannot be watched for {name} ({error.strerror or error}); it is checked every "
                        f"{self._unwatched_poll_s:g} s instead.")
            self._unwatch(name)

    def _unwatch(self, name: str) -> None:
        """Poll a category that cannot be watched (no inotify, a watch limit reached)."""
        if name not in self._unwatched and self._categories[name].fingerprint is None:
            self._unwatched.add(name)
            self._next_poll[name] = time.monotonic() + self._unwatched_poll_s

