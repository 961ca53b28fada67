"""One bundle, checked and summarised: what the review keeps of it (run in a worker process).

``examine(snapshot)`` verifies a bundle read once (``verify_bundle``) and
reads its journal once more for what the review shows (who, when, ways back
in, alarms, gaps), and, when asked, writes the session's own report with the
verdict it computed. The bundle is opened once for both, and a journal up to
``KEEP`` bytes is inflated once and read from memory after that. It never raises for bad content: an unreadable or
hostile bundle is an entry that says so.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path

from agent.atomic import replace_file
from agent.bundle.layout import JOURNAL
from agent.bundle.report import ReportCheck, collect, write_collected
from agent.bundle.report.header import gap_count
from agent.bundle.report.model import Collected
from agent.bundle.source import BundleSource, Snapshot, Unexpected, Unreadable
from agent.bundle.verify import KEEP, Verdict, verify_bundle
from agent.journal.reader import LineTooLong, iter_lines

#: How many ways back in and alarms of one bundle the review lists (all are counted).
ITEMS_PER_BUNDLE = 20


def _journal_lines(source: BundleSource) -> Iterable[bytes]:
    """The journal's lines: split at once when verification kept it in memory, else streamed."""
    kept = source.load(JOURNAL)
    if kept is not None:  # verified already, so no line is longer than MAX_LINE
        return kept.splitlines(keepends=True)
    return _streamed(source)


def _streamed(source: BundleSource) -> Iterator[bytes]:
    with source.open(JOURNAL) as stream:
        yield from iter_lines(stream)


def _summary(c: Collected) -> dict:
    req = c.request
    ways = [{"category": w.category, "op": w.op, "item": w.item[:300], "why": w.why[:300], "package": w.package,
             "ts": w.ts} for w in c.ways_back[:ITEMS_PER_BUNDLE]]
    alarms = [{"ts": e.ts, "text": e.text[:300]} for e in c.alarms[:ITEMS_PER_BUNDLE]]
    decided = next((d for _, d in reversed(c.decisions) if isinstance(d, dict)), {})
    by = decided["by"] if isinstance(decided.get("by"), dict) else {}
    return {
        "session": c.session or None,
        "technician": req.get("technician") if isinstance(req.get("technician"), str) else None,
        "org": req.get("org") if isinstance(req.get("org"), str) else None,
        "ticket": req.get("ticket") if isinstance(req.get("ticket"), str) else None,
        "started": c.started or None,
        "ended": c.ended or None,
        "requested": c.requested or None,
        "decision": decided.get("decision") if isinstance(decided.get("decision"), str) else None,
        "decided_by": by.get("user") if isinstance(by.get("user"), str) else None,
        "ways_back_in": sum(c.ways_back_total.values()),
        "ways_back_unexplained": c.ways_back_total["unexplained"],
        "alarms": c.alarm_total,
        "gaps": gap_count(c),
        "config_changes": c.config_total,
        "file_changes": c.other_files_total,
        "commands": c.technician_total,
        "journal_device": c.device or None,
        "ways": ways,
        "alarm_items": alarms,
    }


def examine(bundle: Snapshot, report: str | None = None, known_devices: frozenset[str] = frozenset(),
            witnesses: tuple[str, ...] = ()) -> dict:
    """Verify and summarise a bundle read once (``snapshot``); write its report to ``report`` when given. With
    ``witnesses``, ``witnessed`` says whether each of them cosigned every checkpoint and the seal in time (a
    bundle that is genuine but not witnessed so stays genuine here; the review calls it unwitnessed)."""
    source: BundleSource | None = None
    try:
        source = bundle.open(KEEP)
    except Unreadable as exc:  # the verdict of these bytes: the file is not opened again
        failed = Verdict(False, False, str(exc))
    except Unexpected as exc:
        failed = Verdict(False, True, str(exc))
    with source or nullcontext():
        # the same open bundle for the verdict and the summary: its journal is inflated once
        verdict = verify_bundle(source, witnesses=witnesses) if source is not None else failed
        witness = verdict.witness
        # verify_bundle checks the witnesses only once the bundle itself is genuine: a report means it passed
        genuine = verdict.genuine or (bool(witnesses) and witness is not None and not witness.get("complete"))
        entry: dict = {"genuine": genuine, "readable": verdict.readable,
                       "reason": verdict.reason if genuine == verdict.genuine else "Genuine, but not witnessed as "
                       f"required: {verdict.reason}",
                       "device": verdict.fingerprint, "principal": verdict.principal, "records": verdict.records,
                       "unsealed": verdict.unsealed, "session": verdict.session,
                       "witnessed": bool(witness and witness.get("complete")) if witnesses else None,
                       "witness_problem": (witness or {}).get("problem") if witnesses else None,
                       "ledger_evidence": bool(witness and witness.get("present"))}
        if not verdict.readable or source is None or JOURNAL not in source.names:
            return entry
        try:
            collected = collect(_journal_lines(source))
            entry.update({k: v for k, v in _summary(collected).items() if v is not None or k not in entry})
            if report is not None:
                check = ReportCheck(genuine, entry["reason"], verdict.fingerprint,
                                    pinned=verdict.fingerprint in known_devices,
                                    witnesses=_witness_sentence(witness, witnesses))
                write_session_report(collected, Path(report), check)
        except (Unreadable, Unexpected, LineTooLong, OSError) as exc:
            entry["summary_error"] = str(exc)
    return entry


def _witness_sentence(witness: dict | None, required: tuple[str, ...]) -> str | None:
    if not witness or not witness.get("present"):
        return "No ledger evidence: nothing shows this session's record left the device."
    if required:
        return ("Witnessed as required: every checkpoint and the seal cosigned in time." if witness.get("complete")
                else f"NOT witnessed as required: {witness.get('problem') or 'the evidence is incomplete'}")
    cosigners = ", ".join(witness.get("cosigners") or [])
    return (f"The seal's ledger head names the cosigners {cosigners} (their keys were not given)." if cosigners
            else "The bundle carries ledger evidence, but no witness cosigned the seal's head.")


def write_session_report(collected: Collected, out: Path, check: ReportCheck) -> None:
    """The session's report with the verdict the review computed, replacing ``out`` at once
    (``agent.atomic``: a review stopped half-way leaves no report that a later one would take as written)."""
    page = io.StringIO()
    write_collected(page, collected, check=check)
    replace_file(out, page.getvalue().encode("utf-8"), None, durable=False)
