"""After a crash: what the journal says, and what to do with each session left unsealed.

Pure functions: ``journal_facts`` reads what recovery needs from a journal;
``plan_recovery`` decides, from the state the history last knew and those
facts, whether the session resumes, ends, expires or is only sealed. The
session manager carries the plan out (``SessionManager._recover``), and
``agent.session.failclosed`` records the gap (``gap_data``) and gives a
session that cannot resume its final rescan and "after" inventory.

The journal has the last word over the history: a session whose journal
holds its ``session-end`` is only sealed, even if the history (which a full
disk may have kept from being updated) still says it is active.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from agent.clock import parse_rfc3339
from agent.errors import ChaperoneError
from agent.records import RecordType
from agent.session.lifecycle import State


def journal_facts(path: Path) -> dict:
    """The request, the grant's end, the start, whether the customer was warned, the last time, the seal."""
    facts: dict = {}
    try:
        fh = open(path, "rb")
    except OSError:
        return facts
    with fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn tail; Journal.open sets it aside
            if not isinstance(record, dict):
                continue
            data = record.get("data") or {}
            facts["last_ts"] = record.get("ts", facts.get("last_ts"))
            kind = record.get("type")
            if kind == RecordType.REQUEST:
                facts["request"] = data
            elif kind == RecordType.DECISION and data.get("granted"):
                facts["until"] = data["granted"].get("until")
                facts["capabilities"] = data["granted"].get("capabilities")
            elif kind == RecordType.SESSION_START:
                facts["started"] = record.get("ts")
            elif kind == RecordType.TIME_WARNING:
                facts["warned"] = True
            elif kind == RecordType.SESSION_END:
                facts["ended"] = data.get("reason") or "recovery"
            elif kind == RecordType.INVENTORY and data.get("phase") == "after":
                facts["after_taken"] = True
            elif kind == RecordType.BASELINE and data.get("phase") == "saved":
                facts["baseline"] = True
            elif kind == RecordType.SEAL:
                facts["sealed"] = True
    return facts


class Step(Enum):
    SEAL_EMPTY = "seal-empty"  # torn before the request was written: nothing to resume
    EXPIRE = "expire"          # nobody decided before the agent stopped
    SEAL_ENDED = "seal-ended"  # it had ended; only the seal was missing
    RESUME = "resume"          # allowed or active, and still within its time: record on
    FINISH = "finish"          # allowed or active, but its time is up: end it now


@dataclass(frozen=True)
class RecoveryPlan:
    step: Step
    gap_s: int | None  # seconds between the journal's last record and now
    until: datetime    # the grant's end (now when there was none)

    @property
    def resumed(self) -> bool:
        return self.step is Step.RESUME


def plan_recovery(state: State, facts: dict, now: datetime) -> RecoveryPlan:
    """What to do with a session the history last knew in ``state``, given its journal's ``facts``."""
    gap_s = round((now - parse_rfc3339(facts["last_ts"])).total_seconds()) if facts.get("last_ts") else None
    until = parse_rfc3339(facts["until"]) if facts.get("until") else now
    if "request" not in facts:
        step = Step.SEAL_EMPTY
    elif state is State.REQUESTED:
        step = Step.EXPIRE
    elif state is State.ENDED or facts.get("ended"):
        step = Step.SEAL_ENDED
    elif state in (State.ALLOWED, State.ACTIVE) and until > now:
        step = Step.RESUME
    else:
        step = Step.FINISH
    return RecoveryPlan(step, gap_s, until)


GAP_CAUSES = {
    "killed": "the agent was killed",
    "exited": "the agent stopped without ending the session",
    "stopped": "the agent was stopped (SIGSTOP, or a debugger)",
    "hung": "the agent stopped answering",
    "stalled": "the agent was not running for a while",
    "unknown": "the agent stopped (how is not known: no guard saw it)",
}


def gap_data(report: dict | None, since: str | None, until: str, *, default_cause: str = "unknown") -> dict:
    """The ``gap`` record for a time recording stopped: from ``since`` (the last record or heartbeat) to
    ``until`` (when it runs again), with the guard's ``report`` (why, what it ended) when there is one."""
    report = report or {}
    cause = str(report["cause"]) if report.get("cause") in GAP_CAUSES else default_cause
    start = report.get("last_beat") or since
    data: dict[str, Any] = {"cause": cause, "from": start, "to": until, "gap_s": None, "noticed": report.get("acted"),
            "access": report.get("access"), "by": "guard" if report else "agent",
            "guard_detail": str(report["detail"])[:500] if report.get("detail") else None}
    if start:
        try:
            data["gap_s"] = max(0, round((parse_rfc3339(until) - parse_rfc3339(start)).total_seconds()))
        except ChaperoneError:
            pass
    ended = (data["access"] or {}).get("ended") or []
    data["detail"] = (f"Recording stopped: {GAP_CAUSES[cause]}"
                      + (f", from {start}" if start else "") + f" to {until}. "
                      + (f"The guard ended the technician's access ({len(ended)} process(es)). " if report else "")
                      + "What changed meanwhile is recorded next, marked as found after the gap; programs "
                        "that started and ended within it cannot be known.")
    return data
