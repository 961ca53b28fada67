"""The one bridge between the agent and the GUI thread.

Everything that can block — the event subscription, calls to the local API,
verifying and exporting bundles, rendering reports — runs in plain Python
threads. Those threads never touch a Qt object: they put what they got into
one queue, and a ``QTimer`` on the GUI thread drains that queue, turns agent
events into Qt signals, and runs the callbacks of finished jobs. Activity is
merged into at most one ``activity`` signal per tick, and a tick hands over
at most ``max_items_per_tick`` activity items, so a burst of 100,000 events
reaches the views in bounded slices instead of freezing the window.

Threads:

- ``chaperone-subscription``: connects, subscribes, then reads ``status`` and
  ``pending`` (so no request falls between the two), and reconnects with a back-off when the agent goes away
  (starting one through the ``launcher`` if none answers for a while);
- a small pool for calls and jobs (:meth:`AgentBridge.call`, :meth:`AgentBridge.run`).

:meth:`AgentBridge.stop` ends both deterministically.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer, Signal

from agent.api.client import AgentClient, system_socket_path
from agent.errors import AgentUnavailable, ChaperoneError, user_message
from agent.home import Home

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]
_RESUME_READING = QEvent.Type(QEvent.registerEventType())


class Launcher(Protocol):
    """Starts an agent when none answers (see ``ui.agent_process.AgentProcess``)."""

    def ensure_running(self) -> None: ...


def default_client_factory(home: Home) -> AgentClient:
    """The system agent when one is installed (its customer socket exists), else the home's agent."""
    system = system_socket_path()
    if system.is_socket():
        return AgentClient.system()
    return AgentClient(home)


class AgentBridge(QObject):
    """Turns the agent's events into Qt signals and runs blocking work off the GUI thread."""

    connected = Signal(object)        # {"status": status result, "pending": [pending items]}
    disconnected = Signal(str)        # one sentence: why the connection is gone
    consentNeeded = Signal(object)    # a pending item
    consentDecided = Signal(object)   # {"id", "state"}
    sessionStarted = Signal(object)   # a session summary
    sessionEnded = Signal(object)     # {"id", "reason"}
    sessionSealed = Signal(object)    # {"id", "reason", "disconnected", "summary"}
    timeWarning = Signal(object)      # {"id", "remaining_s"}
    activity = Signal(object, int)    # activity items (after the transform, if any), coalesced count
    alarm = Signal(object)            # alarm data
    ledger = Signal(object)           # the device ledger's state: agent.service.ledger_link.LedgerLink.status()
    witnessLag = Signal(object)       # {"lag_s", "max_lag_s", "on_lag", "quorum"}: the record is not leaving
    agentStopping = Signal()

    _EVENT_SIGNALS = {
        "consent-needed": "consentNeeded",
        "consent-decided": "consentDecided",
        "session-started": "sessionStarted",
        "session-ended": "sessionEnded",
        "session-sealed": "sessionSealed",
        "time-warning": "timeWarning",
        "alarm": "alarm",
        "ledger": "ledger",
        "witness-lag": "witnessLag",
    }

    def __init__(
        self,
        home: Home,
        *,
        client_factory: Callable[[Home], Any] = default_client_factory,
        launcher: Launcher | None = None,
        launch_after_s: float = 3.0,
        activity_transform: Callable[[list], list] | None = None,
        drain_interval_ms: int = 30,
        max_items_per_tick: int = 2000,
        workers: int = 3,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.home = home
        self._client_factory = client_factory
        self._launcher = launcher
        self._launch_after_s = launch_after_s
        self._transform = activity_transform
        self._max_items = max_items_per_tick
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        # Back-pressure: the subscription thread stops reading while this many
        # activity items wait for the GUI, so it does not compete with the
        # GUI thread for the interpreter while the views paint.
        self._max_ahead = max_items_per_tick
        self._ahead = 0
        self._ahead_changed = threading.Condition()
        self._backlog: deque = deque()          # activity items waiting for a tick (GUI thread only)
        self._backlog_coalesced = 0
        self._stop = threading.Event()
        self._client_lock = threading.Lock()
        self._client = None
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chaperone-job")
        self._timer = QTimer(self)
        self._timer.setInterval(drain_interval_ms)
        self._timer.timeout.connect(self.drain)
        self.is_connected = False
        self._announced_down = False
        self.last_failure: str | None = None   # why the last connection attempt failed

    # --- life cycle -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._timer.start()
        self._thread = threading.Thread(target=self._subscription_loop, name="chaperone-subscription", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the subscription and the job pool, and wait for their threads; idempotent."""
        self._stop.set()
        if self._thread is not None:
            deadline = time.monotonic() + timeout
            # Closing again until the thread ends also catches a subscription
            # that was being opened at the moment of the first close.
            while self._thread.is_alive() and time.monotonic() < deadline:
                self._close_client()
                self._thread.join(0.05)
            if self._thread.is_alive():
                log.warning("the subscription thread did not stop within %.0f s", timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._timer.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- blocking work, off the GUI thread ---------------------------------------
    def call(self, op: str, *, on_done: Callback | None = None, on_error: Callback | None = None, **params) -> Future:
        """Call ``op`` on the local API in a worker; callbacks run on the GUI thread."""

        def work():
            client = self._client_factory(self.home)
            try:
                return client.call(op, **params)
            finally:
                client.close()

        return self.run(work, on_done=on_done, on_error=on_error)

    def run(self, fn: Callable, *args, on_done: Callback | None = None, on_error: Callback | None = None) -> Future:
        """Run ``fn(*args)`` in a worker; ``on_done(result)`` or ``on_error(sentence)`` run on the GUI thread."""

        def job():
            try:
                result = fn(*args)
            except Exception as exc:  # reported to the GUI as one sentence, never raised there
                if not isinstance(exc, ChaperoneError):
                    log.exception("background job failed")
                self._inbox.put(("callback", on_error, user_message(exc)))
                return None
            self._inbox.put(("callback", on_done, result))
            return result

        if self._stop.is_set():
            future: Future = Future()
            future.cancel()
            return future
        return self._pool.submit(job)

    def dispatch(self, event: dict) -> None:
        """Queue an event as if the agent had sent it (thread-safe)."""
        self._inbox.put(("event", event))

    # --- the subscription thread ----------------------------------------------------
    def _subscription_loop(self) -> None:
        delay = 0.2
        unavailable_since: float | None = None
        launched_for_this_outage = False
        was_connected = False
        while not self._stop.is_set():
            client = self._client_factory(self.home)
            with self._client_lock:
                self._client = client
            try:
                # Subscribe first (AgentClient.subscribe is subscribed when it returns),
                # then read the state: a request made in between is in both, never in neither.
                events = client.subscribe()
                status = client.call("status")
                pending = client.call("pending")
                info = client.call("ping")
                self._inbox.put(("connected", {"status": status, "pending": pending, "info": info}))
                was_connected, delay = True, 0.2
                unavailable_since, launched_for_this_outage = None, False
                for event in events:
                    if self._stop.is_set():
                        break
                    prepared = self._prepare(event)
                    self._inbox.put(("event", prepared))
                    self._wait_for_gui(prepared)
                reason = "The Chaperone agent closed the connection."
            except AgentUnavailable as exc:
                reason = str(exc)
                now = time.monotonic()
                unavailable_since = unavailable_since or now
                if (
                    self._launcher is not None
                    and getattr(client, "home", None) is not None  # never start one beside a system agent
                    and not launched_for_this_outage
                    and (not was_connected or now - unavailable_since >= self._launch_after_s)
                    and not self._stop.is_set()
                ):
                    launched_for_this_outage = True
                    try:
                        self._launcher.ensure_running()
                    except ChaperoneError as launch_error:
                        reason = str(launch_error)
            except Exception as exc:  # noqa: BLE001 - a broken connection must never end the loop
                reason = user_message(exc)
            finally:
                with self._client_lock:
                    self._client = None
                client.close()
            if self._stop.is_set():
                break
            self._inbox.put(("disconnected", reason))
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)

    def _wait_for_gui(self, event: dict) -> None:
        """Count the rows just queued; wait while more than a tick's worth is waiting for the views."""
        data = event.get("data") if isinstance(event, dict) and event.get("event") == "activity" else None
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return
        with self._ahead_changed:
            self._ahead += len(items)
            while self._ahead > self._max_ahead and not self._stop.is_set():
                self._ahead_changed.wait(0.1)

    def _prepare(self, event: dict) -> dict:
        """Run the activity transform here, in the subscription thread, not on the GUI thread."""
        if self._transform is None or not isinstance(event, dict) or event.get("event") != "activity":
            return event
        data = event.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            return event
        return {"event": "activity", "data": {**data, "items": self._transform(data["items"])}}

    def _close_client(self) -> None:
        with self._client_lock:
            client = self._client
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not fail the caller
                log.debug("closing the agent client failed", exc_info=True)

    # --- the GUI thread ------------------------------------------------------------
    def drain(self) -> None:
        """Deliver what the threads queued: run on the GUI thread by the timer."""
        handled = 0
        while handled < 10_000:
            try:
                entry = self._inbox.get_nowait()
            except queue.Empty:
                break
            handled += 1
            kind = entry[0]
            if kind == "event":
                self._deliver_event(entry[1])
            elif kind == "callback":
                _, callback, value = entry
                if callback is not None:
                    try:
                        callback(value)
                    except Exception:  # a broken slot must not stop the bridge
                        log.exception("a bridge callback failed")
            elif kind == "connected":
                self.is_connected = True
                self._announced_down = False
                self.last_failure = None
                self.connected.emit(entry[1])
            elif kind == "disconnected":
                self.last_failure = entry[1]
                if self.is_connected or not self._announced_down:
                    self.is_connected = False
                    self._announced_down = True
                    self.disconnected.emit(entry[1])
        self._flush_activity()

    def _deliver_event(self, event: dict) -> None:
        if not isinstance(event, dict):
            return
        name = event.get("event")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if name == "activity":
            items = data.get("items")
            if isinstance(items, list):
                self._backlog.extend(items)
            coalesced = data.get("coalesced")
            if isinstance(coalesced, int) and not isinstance(coalesced, bool):
                self._backlog_coalesced += coalesced
        elif name == "agent-stopping":
            self.agentStopping.emit()
        elif name in self._EVENT_SIGNALS:
            getattr(self, self._EVENT_SIGNALS[name]).emit(data)
        else:
            log.debug("ignoring unknown agent event %r", name)

    def _flush_activity(self) -> None:
        if not self._backlog and not self._backlog_coalesced:
            return
        count = min(len(self._backlog), self._max_items)
        items = [self._backlog.popleft() for _ in range(count)]
        coalesced, self._backlog_coalesced = self._backlog_coalesced, 0
        with self._ahead_changed:
            self._ahead = max(0, self._ahead - count)
        self.activity.emit(items, coalesced)
        # Let the subscription thread read on only after the views have painted
        # these rows: a low-priority event is delivered after the repaint that
        # the insertion asked for (also low priority, posted before it).
        QCoreApplication.postEvent(self, QEvent(_RESUME_READING), Qt.EventPriority.LowEventPriority.value)

    def customEvent(self, event: QEvent) -> None:
        if event.type() == _RESUME_READING:
            with self._ahead_changed:
                self._ahead_changed.notify_all()

    @property
    def backlog(self) -> int:
        """Activity items received but not yet handed to the views."""
        return len(self._backlog)
