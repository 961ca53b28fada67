"""What happens at the door when a session starts and ends, beside the journal: the login source's hooks
(agent.ssh.lifecycle: sudo given and taken back, SSH connections ended) and the end of the technician's
process lineage. Each runs in a thread; whatever it raises is journaled, never lost, and never stops the seal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from agent.errors import error_detail
from agent.records import RecordType
from agent.session.hooks import LoginHooks
from agent.session.model import Session
from agent.settings import Settings


class Ended(Protocol):
    """What ending a technician's lineage found: each process described (``pid``, ``exe``…)."""

    ended: list[dict]
    survivors: list[dict]


async def run_login_hook(hooks: LoginHooks | None, which: str, session: Session, home_path: str,
                         settings: Settings) -> dict:
    """``on_session_started`` or ``on_session_ended`` of the session's login source, in a thread;
    the last record of each type the hook emitted (what it did)."""
    outcome: dict = {}
    if hooks is None:
        return outcome
    sink = session.sink
    assert sink is not None

    def emit(type: str, data: dict) -> object:
        outcome[type] = data
        return sink.emit(type, data)

    try:
        await asyncio.to_thread(getattr(hooks, which), session.hook_view(home_path), settings, emit)
    except Exception as exc:  # noqa: BLE001 - whatever a hook raises, never lose the seal over it
        what = "ssh-session-end" if which == "on_session_ended" else "ssh-session-start"
        session.record(RecordType.CAPTURE_ERROR, {"what": what, "path": None, "error": error_detail(exc)})
    return outcome


async def end_technician_processes(end: Callable[[str], Ended] | None, session: Session) -> None:
    """Every process of the technician's lineage ends with the session, detached ones included; one that
    survives is an alarm and a way back in."""
    if end is None:
        return
    try:
        result = await asyncio.to_thread(end, session.id)
    except Exception as exc:  # noqa: BLE001 - whatever the lineage raises, journal it and still seal
        session.record(RecordType.CAPTURE_ERROR, {"what": "technician-processes", "path": None,
                                                  "error": error_detail(exc)})
        return
    if not result.ended and not result.survivors:
        return
    session.record(RecordType.TECHNICIAN_PROCESSES, {
        "action": "ended", "ended": result.ended[:200], "survivors": result.survivors[:200],
        "counts": {"ended": len(result.ended), "survivors": len(result.survivors)}})
    for survivor in result.survivors[:20]:
        session.record(RecordType.ALARM, {
            "tool": "chaperone", "kind": "survivor", "way_back_in": True, "pid": survivor.get("pid"),
            "process": survivor.get("exe"), "connections": [],
            "detail": f"A process of the technician (pid {survivor.get('pid')}, {survivor.get('exe')}) is "
                      "still running after the session ended; end it or ask who started it."})
