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
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from agent import text as display
from agent.errors import BadLine
from agent.journal.reader import parse_record

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


def _obj(value) -> dict:
    """``value`` if it is an object, else {} (a tampered journal may hold anything)."""
    return value if isinstance(value, dict) else {}


def _items(value, sep: str = ", ") -> str:
    """A list shown joined, anything else as text."""
    if isinstance(value, list):
        return sep.join(str(v) for v in value)
    return "" if value is None else str(value)


def _yes_no(value) -> str:
    return "yes" if value is True else "no" if value is False else ""


def _summary(record: dict) -> str:
    """One line saying what a record is about, as plain (unescaped) text."""
    d, kind = record["data"], record["type"]
    if kind == "file":
        where = f"{d.get('path', '')}" + (f" -> {d['dest']}" if d.get("dest") else "")
        return f"{d.get('op', '')} {where}"
    if kind == "process":
        cmd = _items(d.get("cmdline"), " ") or d.get("exe", "")
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


#: Rows shown per section; the table of all records below them has every one.
SECTION_LIMIT = 5_000
_COLUMNS = {
    "back": ("Ways back in", ["Time", "What", "Item", "Why"]),
    "files": ("Files", ["Time", "Change", "Path", "Size", "SHA-256 after", "By", "Diff"]),
    "processes": ("Processes", ["Time", "Event", "PID", "User", "Command line", "Technician's"]),
    "changes": ("Software and system changes", ["Time", "Category", "Change", "Item", "Detail"]),
    "notes": ("Notes", ["Time", "Author", "Note"]),
}


def render_report(journal_lines: Iterable[bytes], *, verified: bool | None = None, verification: str = "",
                  history: dict | None = None) -> str:
    """The report of a journal, given its lines (bytes, with or without ``\\n``).

    ``verified``/``verification``: the outcome of checking the journal or its
    bundle, shown in the header (None: not checked). ``history``: the session's
    History row, used for header fields the journal lacks. Lines that are not
    records are shown as such, never skipped.
    """
    lines = list(journal_lines)
    out = io.StringIO()
    write_report(out, lambda: lines, verified=verified, verification=verification, history=history)
    return out.getvalue()


def write_report(out: TextIO, read_lines: Callable[[], Iterable[bytes]], *, verified: bool | None = None,
                 verification: str = "", history: dict | None = None) -> None:
    """Write the report to ``out`` in constant memory: ``read_lines()`` is
    called twice, once for the header and sections, once for the full table."""
    history = history or {}
    session = _Session()
    sections: dict[str, list[str]] = {key: [] for key in _COLUMNS}
    totals = dict.fromkeys(_COLUMNS, 0)
    count = 0
    for _, record in _records(read_lines()):
        if isinstance(record, dict):
            count += 1
            session.see(record)
            _sort_into(sections, totals, record)
    out.write("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
              "<meta name=viewport content='width=device-width,initial-scale=1'>"
              f"<title>Chaperone session {_safe(session.id or history.get('id'))}</title>"
              f"<style>{_STYLE}</style></head><body>\n")
    out.write(_header(session, history, verified, verification, count))
    for key, (title, columns) in _COLUMNS.items():
        out.write(_section(title, columns, sections[key], totals[key]))
    out.write(f"<h2 id=records>All records ({count})</h2>\n"
              "<table><tr><th>Seq</th><th>Time (UTC)</th><th>Type</th><th>Details</th></tr>\n")
    for number, record in _records(read_lines()):
        if isinstance(record, BadLine):
            out.write(f'<tr class="flag"><td>?</td><td>line {number}</td><td>not a record</td>'
                      f"<td>{_safe(str(record))}</td></tr>\n")
            continue
        flagged = ' class="flag"' if record["type"] in ("alarm", "recovery", "capture-error", "overflow") else ""
        out.write(f"<tr{flagged}><td>{record['seq']}</td><td class=mono>{_safe(record['ts'])}</td>"
                  f"<td>{_safe(record['type'])}</td><td>{_safe(_summary(record))}</td></tr>\n")
    out.write("</table>\n</body></html>\n")


def _records(lines: Iterable[bytes]) -> Iterator[tuple[int, dict | BadLine]]:
    """(line number, record or BadLine) for each line."""
    for number, line in enumerate(lines, 1):
        try:
            yield number, parse_record(line if line.endswith(b"\n") else line + b"\n", canonical=False)
        except BadLine as exc:
            yield number, exc


def _row(cells: list) -> str:
    return "<tr>" + "".join(f"<td>{_safe(c)}</td>" for c in cells) + "</tr>"


def _sort_into(sections: dict[str, list[str]], totals: dict[str, int], record: dict) -> None:
    key = _section_of(record)
    if key is None:
        return
    totals[key] += 1
    if len(sections[key]) < SECTION_LIMIT:
        sections[key].append(_section_row(key, record))


def _section_of(record: dict) -> str | None:
    kind = record["type"]
    if kind in ("inventory-change", "file", "file-meta") and _obj(record["data"]).get("way_back_in") is True:
        return "back"
    if kind == "inventory-change":
        return "changes"
    return {"alarm": "back", "process": "processes", "process-summary": "processes", "note": "notes",
            "file-meta": "files", "mount": "files"}.get(kind) or ("files" if kind in _FILE_TYPES else None)


def _section_row(key: str, record: dict) -> str:
    kind, d, ts = record["type"], record["data"], record["ts"]
    if kind == "inventory-change" and key == "back":
        return _row([ts, d.get("category"), f"{d.get('op', '')} {d.get('item', '')}", d.get("why")])
    if kind == "inventory-change":
        return _row([ts, d.get("category"), d.get("op"), d.get("item"), d.get("detail")])
    if kind in ("file", "file-meta") and key == "back":
        who = _obj(d.get("attribution"))
        by = f" by {who.get('exe', '')} ({who.get('user', '')})" if who else ""
        return _row([ts, "file" if kind == "file" else "file metadata",
                     f"{d.get('op', 'changed')} {d.get('path', '')}{by}", d.get("why")])
    if kind == "alarm" and d.get("tool") == "mount":
        return _row([ts, "mount", d.get("mountpoint") or "(gone before it could be read)", d.get("detail")])
    if kind == "alarm" and d.get("tool") == "ledger":  # agent.service.ledger_link: a cut journal, a fork
        return _row([ts, "device ledger", d.get("kind"), d.get("detail")])
    if kind == "alarm":
        return _row([ts, f"remote-access tool {d.get('tool', '')}", f"{d.get('process', '')} (pid {d.get('pid', '')})",
                     d.get("detail")])
    if kind == "file-meta":
        who = _obj(d.get("attribution"))
        by = f"{who.get('exe', '')} ({who.get('user', '')}, {who.get('how', '')})" if who else ""
        after = _obj(d.get("after"))
        change = f"metadata: {_items(d.get('changed')) or 'unknown before'}"
        now = f"mode {after.get('mode', '')} owner {after.get('user', '')}"
        return _row([ts, change, d.get("path"), "", now, by, ""])
    if kind == "mount":
        mounter = _obj(d.get("by"))
        what = f"{d.get('fstype', '')} from {d.get('source', '')}" if d.get("fstype") else d.get("detail")
        return _row([ts, d.get("op"), d.get("mountpoint"), "", what, mounter.get("exe", ""), ""])
    if kind == "process-summary":
        programs = _obj(d.get("programs"))
        names = ", ".join(f"{name} ×{count}" for name, count in list(programs.items())[:50])
        return _row([ts, "customer's programs", "", "", f"{d.get('execs', '')} runs: {names}", "no"])
    if kind == "file":
        who = d.get("attribution") or {}
        by = f"{who.get('exe', '')} ({who.get('user', '')}, {who.get('how', '')})" if isinstance(who, dict) and who else ""
        where = f"{d.get('path', '')}" + (f" -> {d['dest']}" if d.get("dest") else "")
        diff = d.get("diff")
        diff_cell = (f"<pre>{_safe_lines(diff)}</pre>" if isinstance(diff, str) and diff
                     else _safe(d.get("diff_omitted") or d.get("error")))
        digest = d.get("sha256_after")
        digest_cell = (f"{_safe(digest[:12])}…" if isinstance(digest, str) and len(digest) > 12
                       else _safe(digest))  # the journal has it whole
        cells = "".join(f"<td>{_safe(c)}</td>" for c in [ts, d.get("op"), where, d.get("size")])
        return f"<tr>{cells}<td>{digest_cell}</td><td>{_safe(by)}</td><td>{diff_cell}</td></tr>"
    if kind in _FILE_TYPES:
        return _row([ts, kind, d.get("root"), "", "", "", _summary(record)])
    if kind == "process":
        cmd = _items(d.get("cmdline"), " ")
        technician = _yes_no(d.get("technician"))
        return _row([ts, d.get("op"), d.get("pid"), d.get("user"), cmd or d.get("exe"), technician])
    return _row([ts, d.get("author"), d.get("text")])  # a note


def _section(title: str, columns: list[str], rows: list[str], total: int) -> str:
    head = f"<h2>{html.escape(title)} ({total})</h2>\n"
    if not rows:
        return head + "<p class=empty>Nothing recorded.</p>\n"
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    more = (f"<p class=empty>The first {len(rows)} are shown; all {total} are in the table of all records.</p>\n"
            if total > len(rows) else "")
    return head + f"<table><tr>{header}</tr>\n" + "\n".join(rows) + "\n</table>\n" + more


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
    identity = _obj(req.get("verification"))
    if identity:
        who_checked = "verified" if identity.get("verified") is True else "NOT verified"
        signer = " ".join(str(x) for x in (identity.get("principal"), identity.get("fingerprint")) if x)
        who_checked += f" ({signer})" if signer else ""
        who_checked += f": {identity['detail']}" if identity.get("detail") else ""
    else:
        who_checked = {"yes": "verified", "no": "NOT verified"}.get(_yes_no(history.get("verified")), "unknown")
    email = pick("email")
    rows = [
        ("Technician", f"{pick('technician') or ''}" + (f" <{email}>" if email else "")),
        ("Identity", who_checked),
        ("Organisation", pick("org")),
        ("Ticket", pick("ticket")),
        ("Reason", pick("reason")),
        ("Request flags", _items(req.get("flags") or history.get("flags")) or "none"),
    ]
    for ts, d in s.decisions:
        by = _obj(d.get("by"))
        rows.append(("Decision", f"{d.get('decision', '')} by {by.get('user', '?')} (uid {by.get('uid', '?')}), "
                                 f"{d.get('how', '')}, at {ts}" + (f": {d['reason']}" if d.get("reason") else "")))
        granted = _obj(d.get("granted"))
        if granted:
            rows.append(("Granted", f"capabilities {_items(granted.get('capabilities')) or 'none'}; "
                                    f"watching {_items(granted.get('watch')) or 'nothing'}; "
                                    f"until {granted.get('until', '?')}"))
    if not s.decisions and history.get("state"):
        rows.append(("Decision", f"{history.get('state')} ({history.get('how') or 'no record'})"))
    end = s.end or {}
    end_reason = f"{end.get('reason') or history.get('end_reason') or 'none'}"
    rows += [
        ("Started", s.started or history.get("started") or "not started"),
        ("Ended", s.ended or history.get("ended") or "not ended"),
        ("End reason", end_reason + (f" (by {end['by']})" if end.get("by") else "")),
        ("Sealed", s.sealed or "NOT SEALED"),
        ("Device key", f"{s.device or history.get('key_fingerprint') or 'unknown'} ({s.principal or ''})"),
        ("Records", count),
    ]
    for ts, d in s.recoveries:
        aside = _obj(d.get("set_aside"))
        rows.append(("Recovery", f"at {ts}, after seq {d.get('last_seq')}"
                                 + (f"; set aside {aside.get('bytes')} bytes in {aside.get('file')}" if aside else "")))
    table = "\n".join(f"<tr><td class=k>{html.escape(k)}</td><td>{_safe(v)}</td></tr>" for k, v in rows)
    return (f"<h1>Chaperone session {_safe(s.id or history.get('id') or '')}</h1>\n{banner}\n"
            f"<table>\n{table}\n</table>\n")
