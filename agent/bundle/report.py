"""``report.html``: a self-contained, readable report of one session.

One HTML file with its style inline: no scripts, no external resources, so it
opens anywhere, offline, and nothing in it can run. Every piece of text from
the journal is made display-safe (``agent.text``: control, invisible and
bidirectional characters shown as escapes) and then HTML-escaped.

Layout: the header (who, why, the decision, the times, the key), then the
sections a reviewer reads first — ways back in, files, processes, software and
system changes, notes — then every record in a table.
"""

from __future__ import annotations

import html
import json
from typing import Iterable

from agent import text as display
from agent.journal.reader import BadLine, parse_record

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#1b1b1b}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.k{width:14em;color:#555}code,pre,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{white-space:pre-wrap;word-break:break-all;margin:0}.ok{background:#e7f6e7;border:1px solid #7c7}.bad{background:#fde8e8;border:1px solid #d77}
.unk{background:#f4f4f4;border:1px solid #bbb}.banner{padding:.6em 1em;margin:1em 0;font-weight:600}.empty{color:#666;font-style:italic}
tr.flag td{background:#fff4e0}
"""
_FILE_TYPES = ("file", "file-burst", "overflow", "watch-limit")


def _safe(value) -> str:
    """Display-safe, HTML-escaped text of any value."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return html.escape(display.escape(value))


def _safe_lines(value: str) -> str:
    """Like ``_safe`` but keeps line breaks (for diffs)."""
    return "\n".join(_safe(line) for line in value.split("\n"))


def _summary(record: dict) -> str:
    """One line saying what a record is about, as plain (unescaped) text."""
    d, kind = record["data"], record["type"]
    if kind == "file":
        where = d.get("path", "")
        if d.get("dest"):
            where += f" -> {d['dest']}"
        return f"{d.get('op', '')} {where}"
    if kind == "process":
        cmd = " ".join(str(a) for a in d.get("cmdline") or []) or d.get("exe", "")
        return f"{d.get('op', '')} pid {d.get('pid', '')} ({d.get('user', '')}): {cmd}"
    if kind == "inventory-change":
        return f"{d.get('op', '')} {d.get('category', '')}: {d.get('item', '')}"
    if kind == "alarm":
        return f"{d.get('tool', '')}: {d.get('process', '')} (pid {d.get('pid', '')}) {d.get('detail', '')}"
    if kind == "note":
        return f"{d.get('author', '')}: {d.get('text', '')}"
    if kind in ("checkpoint", "seal"):
        extra = {k: v for k, v in d.items() if k not in ("sig", "head", "count")}
        return " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in sorted(d.items()))


class _Session:
    """What the header shows, gathered while reading the records."""

    def __init__(self) -> None:
        self.id = self.device = self.principal = None
        self.request: dict = {}
        self.decisions: list[tuple[str, dict]] = []
        self.started = self.ended = self.end = self.sealed = None
        self.recoveries: list[tuple[str, dict]] = []

    def see(self, record: dict) -> None:
        kind, data, ts = record["type"], record["data"], record["ts"]
        self.id = self.id or record["session"]
        if kind == "journal-start":
            self.device, self.principal = data.get("device"), data.get("principal")
        elif kind == "request":
            self.request = data
        elif kind == "decision":
            self.decisions.append((ts, data))
        elif kind == "session-start":
            self.started = ts
        elif kind == "session-end":
            self.ended, self.end = ts, data
        elif kind == "seal":
            self.sealed = ts
        elif kind == "recovery":
            self.recoveries.append((ts, data))


def render_report(journal_lines: Iterable[bytes], *, verified: bool | None = None, verification: str = "",
                  history: dict | None = None) -> str:
    """The report of a journal, given its lines (bytes, with or without ``\\n``).

    ``verified``/``verification``: the outcome of checking the journal or its
    bundle, shown in the header (None: not checked). ``history``: the session's
    History row, used for header fields the journal lacks. Lines that are not
    records are shown as such, never skipped.
    """
    session = _Session()
    sections: dict[str, list[str]] = {"back": [], "files": [], "processes": [], "changes": [], "notes": []}
    table: list[str] = []
    count = 0
    for number, line in enumerate(journal_lines, 1):
        if not line.endswith(b"\n"):
            line += b"\n"
        try:
            record = parse_record(line)
        except BadLine as exc:
            table.append(f'<tr class="flag"><td>?</td><td>line {number}</td><td>not a record</td>'
                         f"<td>{_safe(str(exc))}</td></tr>")
            continue
        count += 1
        session.see(record)
        _sort_into(sections, record)
        flagged = ' class="flag"' if record["type"] in ("alarm", "recovery", "capture-error", "overflow") else ""
        table.append(f"<tr{flagged}><td>{record['seq']}</td><td class=mono>{_safe(record['ts'])}</td>"
                     f"<td>{_safe(record['type'])}</td><td>{_safe(_summary(record))}</td></tr>")
    return "".join([
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>Chaperone session {_safe(session.id or (history or {}).get('id'))}</title>",
        f"<style>{_STYLE}</style></head><body>\n",
        _header(session, history or {}, verified, verification, count),
        _section("Ways back in", "back", sections, ["Time", "What", "Item", "Why"]),
        _section("Files", "files", sections, ["Time", "Change", "Path", "Size", "SHA-256 after", "By", "Diff"]),
        _section("Processes", "processes", sections, ["Time", "Event", "PID", "User", "Command line", "Technician's"]),
        _section("Software and system changes", "changes", sections, ["Time", "Category", "Change", "Item", "Detail"]),
        _section("Notes", "notes", sections, ["Time", "Author", "Note"]),
        f"<h2 id=records>All records ({count})</h2>\n",
        "<table><tr><th>Seq</th><th>Time (UTC)</th><th>Type</th><th>Details</th></tr>\n",
        "\n".join(table),
        "</table>\n</body></html>\n",
    ])


def _row(cells: list) -> str:
    return "<tr>" + "".join(f"<td>{_safe(c)}</td>" for c in cells) + "</tr>"


def _sort_into(sections: dict[str, list[str]], record: dict) -> None:
    kind, d, ts = record["type"], record["data"], record["ts"]
    if kind == "inventory-change":
        if d.get("way_back_in") is True:
            sections["back"].append(_row([ts, d.get("category"), f"{d.get('op', '')} {d.get('item', '')}", d.get("why")]))
        else:
            sections["changes"].append(_row([ts, d.get("category"), d.get("op"), d.get("item"), d.get("detail")]))
    elif kind == "alarm":
        sections["back"].append(_row([ts, f"remote-access tool {d.get('tool', '')}",
                                      f"{d.get('process', '')} (pid {d.get('pid', '')})", d.get("detail")]))
    elif kind == "file":
        who = d.get("attribution") or {}
        by = f"{who.get('exe', '')} ({who.get('user', '')}, {who.get('how', '')})" if who else ""
        where = d.get("path", "") + (f" -> {d['dest']}" if d.get("dest") else "")
        diff = d.get("diff")
        diff_cell = f"<pre>{_safe_lines(diff)}</pre>" if isinstance(diff, str) and diff else _safe(d.get("diff_omitted") or d.get("error"))
        digest = d.get("sha256_after")
        short = f"{digest[:12]}…" if isinstance(digest, str) and len(digest) > 12 else digest  # the journal has it whole
        cells = "".join(f"<td>{_safe(c)}</td>" for c in [ts, d.get("op"), where, d.get("size"), short, by])
        sections["files"].append(f"<tr>{cells}<td>{diff_cell}</td></tr>")
    elif kind in _FILE_TYPES:
        sections["files"].append(_row([ts, kind, d.get("root"), "", "", "", _summary(record)]))
    elif kind == "process":
        cmd = " ".join(str(a) for a in d.get("cmdline") or [])
        technician = {True: "yes", False: "no"}.get(d.get("technician"), "")
        sections["processes"].append(_row([ts, d.get("op"), d.get("pid"), d.get("user"), cmd or d.get("exe"), technician]))
    elif kind == "note":
        sections["notes"].append(_row([ts, d.get("author"), d.get("text")]))


def _section(title: str, key: str, sections: dict[str, list[str]], columns: list[str]) -> str:
    rows = sections[key]
    head = f"<h2>{html.escape(title)} ({len(rows)})</h2>\n"
    if not rows:
        return head + "<p class=empty>Nothing recorded.</p>\n"
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return head + f"<table><tr>{header}</tr>\n" + "\n".join(rows) + "\n</table>\n"


def _header(s: _Session, history: dict, verified: bool | None, verification: str, count: int) -> str:
    req = s.request

    def pick(key: str):
        return req.get(key) if req.get(key) not in (None, "") else history.get(key)

    if verified is True:
        banner = f'<div class="banner ok">Verified: {_safe(verification)}</div>'
    elif verified is False:
        banner = f'<div class="banner bad">NOT VERIFIED: {_safe(verification)}</div>'
    else:
        banner = '<div class="banner unk">This report was not checked against a signature.</div>'
    identity = req.get("verification") or {}
    if identity:
        who_checked = "verified" if identity.get("verified") else "NOT verified"
        signer = " ".join(str(x) for x in (identity.get("principal"), identity.get("fingerprint")) if x)
        who_checked += f" ({signer})" if signer else ""
        who_checked += f": {identity['detail']}" if identity.get("detail") else ""
    else:
        who_checked = {True: "verified", False: "NOT verified"}.get(history.get("verified"), "unknown")
    rows = [
        ("Technician", " ".join(x for x in [str(pick("technician") or ""), f"<{pick('email')}>" if pick("email") else ""] if x)),
        ("Identity", who_checked),
        ("Organisation", pick("org")),
        ("Ticket", pick("ticket")),
        ("Reason", pick("reason")),
        ("Request flags", ", ".join(req.get("flags") or history.get("flags") or []) or "none"),
    ]
    for ts, d in s.decisions or []:
        by = d.get("by") or {}
        rows.append(("Decision", f"{d.get('decision', '')} by {by.get('user', '?')} (uid {by.get('uid', '?')}), "
                                 f"{d.get('how', '')}, at {ts}" + (f": {d['reason']}" if d.get("reason") else "")))
        granted = d.get("granted")
        if granted:
            rows.append(("Granted", f"capabilities {', '.join(granted.get('capabilities') or []) or 'none'}; "
                                    f"watching {', '.join(granted.get('watch') or []) or 'nothing'}; "
                                    f"until {granted.get('until', '?')}"))
    if not s.decisions and history.get("state"):
        rows.append(("Decision", f"{history.get('state')} ({history.get('how') or 'no record'})"))
    end = s.end or {}
    rows += [
        ("Started", s.started or history.get("started") or "not started"),
        ("Ended", s.ended or history.get("ended") or "not ended"),
        ("End reason", " ".join(str(x) for x in [end.get("reason") or history.get("end_reason") or "",
                                                   f"(by {end['by']})" if end.get("by") else ""] if x) or "none"),
        ("Sealed", s.sealed or "NOT SEALED"),
        ("Device key", f"{s.device or history.get('key_fingerprint') or 'unknown'} ({s.principal or ''})"),
        ("Records", count),
    ]
    for ts, d in s.recoveries:
        aside = d.get("set_aside")
        rows.append(("Recovery", f"at {ts}, after seq {d.get('last_seq')}"
                                 + (f"; set aside {aside.get('bytes')} bytes in {aside.get('file')}" if aside else "")))
    table = "\n".join(f"<tr><td class=k>{html.escape(k)}</td><td>{_safe(v)}</td></tr>" for k, v in rows)
    return (f"<h1>Chaperone session {_safe(s.id or history.get('id') or '')}</h1>\n{banner}\n"
            f"<table>\n{table}\n</table>\n")
