"""``report.html``: a self-contained report of one session that a person reads.

One HTML file with its style inline and no script: nothing in it can run or
reach the network (a Content-Security-Policy says so to the browser too).
Every piece of journal text is made display-safe (``agent.text``: control,
invisible and bidirectional characters shown as escapes), clipped, then
HTML-escaped. Times are local, with their zone.

Order: what this page is (a verdict computed by ``chaperone report`` or
``review``, or the bundle's own copy, which is not a verification), a summary
read in ten seconds (who, why, allowed by whom and how, how long, counts,
the technician's notes), then ways back in (unexplained first), configuration
changes with their diffs, the technician's commands as a tree, other file
changes by folder (folded), software and system changes, the customer's own
activity as counts, the consent timeline, alarms and gaps in recording.

The journal is read once, in bounded memory; every section is capped
(``Limits``) and says how much it left out, so the page stays a few hundred
kilobytes whatever the journal holds; the full records stay in
``session.jsonl``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import Protocol

import orjson

from agent.bundle.report import sections
from agent.bundle.report.header import BundleCopy, ReportCheck, banner, summary
from agent.bundle.report.markup import esc
from agent.bundle.report.model import LIMITS, Collected, Limits
from agent.bundle.report.style import STYLE
from agent.bundle.report.times import Times, parse
from agent.errors import BadLine
from agent.journal.reader import parse_record

__all__ = ["LIMITS", "BundleCopy", "Limits", "ReportCheck", "collect", "render_report", "write_collected",
           "write_report"]

#: The browser may load nothing and run nothing: only the inline style applies.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _record(line: bytes) -> dict:
    """A line as a record to show; ``BadLine`` when it is not one. Verification is not this function's job
    (``verify_journal`` does it); this only needs a JSON object with the envelope's fields, read fast."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if type(record) is not dict or not _ENVELOPE.issubset(record) or type(record["type"]) is not str:
        return parse_record(line if line.endswith(b"\n") else line + b"\n", canonical=False)  # says why
    return record


_ENVELOPE = frozenset({"v", "seq", "ts", "session", "type", "data", "prev"})


def collect(lines: Iterable[bytes], limits: Limits = LIMITS) -> Collected:
    """Read a journal's lines (bytes, with or without ``\\n``) into what a report shows."""
    collected = Collected(limits)
    for number, line in enumerate(lines, 1):
        try:
            record = _record(line)
        except BadLine as exc:
            collected.bad_line(number, str(exc))
            continue
        collected.see(record)
    return collected


def render_report(journal_lines: Iterable[bytes], *, check: ReportCheck | None = None, copy: BundleCopy | None = None,
                  history: dict | None = None, tz: tzinfo | None = None, limits: Limits = LIMITS) -> str:
    """The report of a journal, given its lines, as one string (see ``write_report``)."""
    out = io.StringIO()
    write_report(out, lambda: journal_lines, check=check, copy=copy, history=history, tz=tz, limits=limits)
    return out.getvalue()


class TextSink(Protocol):
    """Where a report is written: a text file, a string buffer, or a stream that encodes and hashes."""

    def write(self, text: str, /) -> object: ...


def write_report(out: TextSink, read_lines: Callable[[], Iterable[bytes]], *, check: ReportCheck | None = None,
                 copy: BundleCopy | None = None, history: dict | None = None, tz: tzinfo | None = None,
                 limits: Limits = LIMITS) -> None:
    """Write the report to ``out``; ``read_lines()`` is called once and read in bounded memory.

    ``check``: the verdict the caller computed (``chaperone report``, ``review``, the tray); ``copy``: the
    page is the copy written into a bundle (it says it is no verification); neither: "not checked".
    ``history``: the session's History row, for what the journal lacks. ``tz``: the zone times are shown
    in (default: this computer's).
    """
    write_collected(out, collect(read_lines(), limits), check=check, copy=copy, history=history, tz=tz)


def write_collected(out: TextSink, c: Collected, *, check: ReportCheck | None = None, copy: BundleCopy | None = None,
                    history: dict | None = None, tz: tzinfo | None = None) -> None:
    """Write the report of a journal already read by ``collect``."""
    history = history or {}
    times = Times(tz)
    session = c.session or str(history.get("id") or "")
    ticket = c.request.get("ticket") or history.get("ticket")
    title = f"Chaperone session {session}" + (f" — {ticket}" if isinstance(ticket, str) and ticket else "")
    out.write("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
              f"<meta http-equiv=Content-Security-Policy content=\"{CSP}\">"
              "<meta name=viewport content='width=device-width,initial-scale=1'>"
              f"<title>{esc(title, 300)}</title><style>{STYLE}</style></head><body>\n")
    out.write(f"<h1>{esc(title, 300)}</h1>\n<p class=muted>Times are in {esc(times.zone(c.started or c.requested))}."
              "</p>\n")
    out.write(banner(check, copy))
    first = parse(c.started or c.requested)
    times.day = times.local(first) if first else None
    out.write(summary(c, history, times))
    out.write("".join((sections.ways_back(c, times), sections.config(c, times), sections.commands(c, times),
                       sections.other_files(c, times), sections.system_changes(c, times), sections.customer(c),
                       sections.timeline(c, times), sections.alarms_and_gaps(c, times), sections.others(c))))
    software = f" by {esc(c.software)}" if c.software else ""
    out.write(f"<footer>{c.records:,} records in session.jsonl{software}. This page shows a bounded summary of "
              "them; the journal holds every record in full.</footer>\n</body></html>\n")
