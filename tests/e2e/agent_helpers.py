"""Helpers for the agent's end-to-end tests: events, journals, export and verify."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

from agent.devicekey import DeviceKey
from agent.journal import verify_journal

EVENT_TIMEOUT = 20.0
TECHNICIAN = ["--technician", "Alice Example <alice@example.com>", "--org", "Acme IT", "--ticket", "4711",
              "--reason", "printer queue stuck"]


class Events:
    """Collects an agent's events in a thread; ``wait_for`` returns the next matching one."""

    def __init__(self, client):
        self._client = client
        self._queue: queue.Queue = queue.Queue()
        self._stream = client.subscribe()  # subscribed once this returns
        self.seen: list[dict] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self._stream:
            self._queue.put(event)
        self._queue.put(None)

    def wait_for(self, name: str, match=lambda data: True, timeout: float = EVENT_TIMEOUT) -> dict:
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {name!r} event within {timeout} s; saw {[e['event'] for e in self.seen]}") from None
            if event is None:
                raise AssertionError(f"the event stream ended before {name!r}; saw {[e['event'] for e in self.seen]}")
            self.seen.append(event)
            if event["event"] == name and match(event["data"]):
                return event["data"]

    def close(self) -> None:
        self._client.close()
        self._thread.join(10)


def records(home, sid: str) -> list[dict]:
    return [json.loads(line) for line in home.journal_path(sid).read_bytes().splitlines()]


def types(home, sid: str) -> list[str]:
    return [r["type"] for r in records(home, sid)]


def assert_sealed_and_genuine(home, sid: str, agent=None, tmp_path: Path | None = None) -> None:
    """The journal verifies and is sealed; given the agent, ``chaperone export`` + ``verify`` agree."""
    check = verify_journal(home.journal_path(sid), DeviceKey.load(home).public_blob)
    assert check.ok, check.reason
    assert check.unsealed == 0
    assert types(home, sid)[-1] == "seal"
    if agent is not None and tmp_path is not None:
        out = tmp_path / f"{sid}.zip"
        exported = agent.cli("export", sid, "-o", str(out))
        assert exported.returncode == 0, exported.stderr
        verified = agent.cli("verify", str(out))
        assert verified.returncode == 0, verified.stdout + verified.stderr
