"""Publishing: sealed sessions' bundles (and the ledger's files) from the spool to the fleet store.

``Publisher.catch_up()`` spools every sealed session of the History that is
not spooled yet (so a seal while the agent was down, or before publishing was
set, is never missed); ``flush()`` uploads what is due and reschedules what
failed with back-off. ``PublishWorker`` does both on its own thread, so the
agent's loop never waits for the store; ``nudge()`` wakes it after a seal.

Object names: ``<prefix>/<device>/bundles/<session>.zip`` and
``<prefix>/<device>/ledger/…``, where ``<device>`` is the device key's
fingerprint without ``SHA256:`` and with ``/`` and ``+`` made URL-safe.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.bundle.export import export_bundle
from agent.errors import ChaperoneError
from agent.history import History
from agent.home import Home
from agent.publish.ledger_files import spool_ledger_export
from agent.publish.spool import Spool
from agent.publish.store import S3Store, StoreError
from agent.settings import PublishSettings
from agent.sshkeys import fingerprint, line_to_blob

log = logging.getLogger("chaperone.publish")


def device_id(fp: str) -> str:
    """``SHA256:ab/c+d`` -> ``ab_c-d``: a device's folder in the store."""
    return fp.removeprefix("SHA256:").replace("/", "_").replace("+", "-")


def home_device_id(home: Home) -> str:
    parts = home.pub_path.read_text(encoding="ascii").split()
    return device_id(fingerprint(line_to_blob(" ".join(parts[:2]))))


def bundle_name(device: str, session: str) -> str:
    return f"{device}/bundles/{session}.zip"


@dataclass
class FlushResult:
    published: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, sentence)
    waiting: int = 0


class Publisher:
    """The home's publishing. ``store``: an ``S3Store`` (default: from the settings)."""

    def __init__(self, home: Home, settings: PublishSettings | None = None, store: S3Store | None = None) -> None:
        self.home = home
        self.settings = settings or home.settings().publish
        if store is None and self.settings.url:
            store = S3Store(self.settings.url, self.settings.endpoint_url, retain_days=self.settings.retain_days,
                            mode=self.settings.mode)
        self.store = store
        self.spool = Spool(home)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def close(self) -> None:
        self.spool.close()

    def catch_up(self) -> list[str]:
        """Spool the bundle of every sealed session not spooled yet; the sessions spooled now."""
        if not self.enabled:
            return []
        device = home_device_id(self.home)
        with History(self.home, readonly=True) as history:
            sealed = [row["id"] for row in history.list() if row.get("sealed") or row.get("state") == "sealed"]
        added = []
        for session in reversed(sealed):  # oldest first
            name = bundle_name(device, session)
            if self.spool.has(name):
                continue
            temp = self.spool.files / f".export-{session}.zip"
            try:
                export_bundle(self.home, session, temp)
                if self.spool.add_file(name, "bundle", temp, session=session):
                    added.append(session)
            except ChaperoneError as exc:
                log.warning("cannot spool session %s for publishing: %s", session, exc)
            finally:
                temp.unlink(missing_ok=True)
        return added

    def add_file(self, name: str, kind: str, path: Path, session: str | None = None) -> bool:
        """Spool another file (e.g. the ledger's) under the device's folder."""
        return self.spool.add_file(f"{home_device_id(self.home)}/{name}", kind, path, session=session)

    def flush(self, *, everything: bool = False, deadline: float | None = None) -> FlushResult:
        """Upload what is due (``everything``: what waits, whatever its back-off); never raises for the store."""
        result = FlushResult()
        store = self.store
        if store is None:
            result.waiting = len(self.spool.waiting())
            return result
        with self._lock:
            items = self.spool.waiting() if everything else self.spool.due()
            for item in items:
                if deadline is not None and time.monotonic() > deadline:
                    break
                try:
                    version = store.put_locked(item.name, Path(item.file), item.sha256)
                except StoreError as exc:
                    self.spool.failed(item, str(exc))
                    result.failed.append((item.name, str(exc)))
                    if exc.store_wide:  # the store as a whole is unusable now: the rest would fail the same way
                        for rest in items[items.index(item) + 1:]:
                            self.spool.failed(rest, str(exc))
                        break
                    continue
                self.spool.done(item, version)
                result.published.append(item.name)
            result.waiting = len(self.spool.waiting())
        return result


class PublishWorker:
    """Catches up and flushes on its own thread every ``interval`` seconds (sooner after ``nudge()``).

    ``ledger_export(folder)``, when given, writes the device ledger's export into ``folder`` (as ``chaperone
    ledger export`` does); what is new in it is spooled each round (``agent.publish.ledger_files``)."""

    def __init__(self, make_publisher: Callable[[], Publisher], interval: float = 30.0,
                 ledger_export: Callable[[Path], object] | None = None) -> None:
        self._make = make_publisher
        self._interval = interval
        self._ledger_export = ledger_export
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self.last: FlushResult | None = None

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop soon; an upload under way is abandoned after ``timeout`` (the thread is a daemon, and what it
        was sending stays in the spool for the next start)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _spool_ledger(self, publisher: Publisher) -> None:
        if self._ledger_export is None:
            return
        with tempfile.TemporaryDirectory(dir=publisher.spool.folder, prefix=".ledger-export-") as folder:
            self._ledger_export(Path(folder) / "export")
            spool_ledger_export(publisher, Path(folder) / "export")

    def _run(self) -> None:
        try:
            publisher = self._make()
        except ChaperoneError as exc:
            log.warning("publishing is off: %s", exc)
            return
        try:
            while not self._stop.is_set():
                try:
                    publisher.catch_up()
                    if self._ledger_export is not None:
                        self._spool_ledger(publisher)
                    self.last = publisher.flush(deadline=time.monotonic() + self._interval)
                    for name, why in self.last.failed[:1]:
                        log.warning("not published yet (%d waiting): %s: %s", self.last.waiting, name, why)
                except ChaperoneError as exc:
                    log.warning("publishing: %s", exc)
                except Exception:  # the worker must not die silently: log it and try again later
                    log.exception("publishing failed unexpectedly; it will be tried again")
                self._wake.wait(self._interval)
                self._wake.clear()
        finally:
            publisher.close()
