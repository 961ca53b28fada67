"""The review as one self-contained HTML page: problems first, then a timeline, per device and per
technician, ways back in and alarms across sessions, each session linking to its own report.

Everything is written on the page (it reads without script); one inline
script, allowed by its hash in the Content-Security-Policy and by nothing
else, sorts a table when its header is clicked and filters every table by
the text typed in the filter box. Nothing is fetched: no network, no other file.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections import defaultdict
from datetime import UTC, datetime, tzinfo
from typing import TextIO

from agent.bundle.report.markup import esc, plural
from agent.bundle.report.style import STYLE
from agent.bundle.report.times import Times, length, seconds_between
from agent.review.run import Review

_SCRIPT = """
(function(){
  function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent.trim().toLowerCase():v;}
  function cmp(a,b){var x=parseFloat(a),y=parseFloat(b);
    if(!isNaN(x)&&!isNaN(y)&&String(x)===a&&String(y)===b)return x-y;return a<b?-1:a>b?1:0;}
  document.querySelectorAll('table.sortable th').forEach(function(th){
    th.addEventListener('click',function(){
      var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex;
      var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
      table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',dir===1?'ascending':'descending');
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){return dir*cmp(key(a.cells[i]),key(b.cells[i]));});
      var frag=document.createDocumentFragment();rows.forEach(function(r){frag.appendChild(r);});body.appendChild(frag);
    });
  });
  var box=document.getElementById('filter'),shown=document.getElementById('shown');
  function filter(){
    var words=box.value.toLowerCase().split(/\\s+/).filter(Boolean),count=0;
    document.querySelectorAll('table.filterable').forEach(function(table){
      Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
        var text=r.textContent.toLowerCase(),ok=words.every(function(w){return text.indexOf(w)>=0;});
        r.hidden=!ok;if(ok&&table.id==='sessions')count++;
      });
    });
    shown.textContent=count;
  }
  box.addEventListener('input',filter);
  if(box.value)filter();
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; img-src data:; "
       "base-uri 'none'; form-action 'none'")
_EXTRA_STYLE = """
body{max-width:96em}.filterbar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid var(--line);
z-index:2;display:flex;gap:1em;align-items:center}.filterbar input{font:inherit;padding:.3em .6em;width:28em;
max-width:60%;border:1px solid #aab;border-radius:4px}table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}table.sortable th[aria-sort=descending]::after{content:" ▼"}
td.ok{color:var(--ok);font-weight:600}td.bad{color:var(--bad);font-weight:600}td.warn{color:var(--warn)}
tr.problem td{background:var(--badbg)}.kind{font-weight:600;white-space:nowrap}
table.sortable{table-layout:auto}table.sortable td,table.sortable th{overflow-wrap:break-word}
table.sortable.fixed{table-layout:fixed}table.sortable.fixed td{overflow-wrap:anywhere}
table.sortable.fixed th{white-space:normal;vertical-align:bottom}
table.fixed tbody tr{content-visibility:auto;contain-intrinsic-size:auto 2.6em}
table.sortable th{white-space:nowrap}td.nw{white-space:nowrap}
table.sortable td.t,table.sortable th.t{width:auto;white-space:nowrap}
"""
#: Rows the page lists across sessions (ways back in, alarms) and of problems; the rest is counted (JSON and CSV
#: have every bundle and problem, each session's report every way back in and alarm).
LIST_LIMIT = 2_000
PROBLEM_LIMIT = 5_000
_KIND_ORDER = {k: i for i, k in enumerate(("not-genuine", "fork", "missing", "unreadable", "unknown-device",
                                          "unwitnessed", "gap", "pruned"))}


def _device_name(review: Review, fp: str | None, whole: bool = False) -> str:
    if not fp:
        return "unknown"
    name = review.devices.get(fp)
    if name:
        return f"{name} ({fp[:14]}…)"
    return fp if whole or not review.devices else f"{fp[:19]}… (unknown)"


def _base(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1] or name


def _table(table_id: str, head: list[tuple[str, str]], rows: list[str], filterable: bool = True,
           widths: tuple[str, ...] = ()) -> str:
    classes = "sortable filterable" + (" fixed" if widths else "") if filterable else "sortable"
    cols = "".join(f"<th{' class=' + cls if cls else ''}>{html.escape(title)}</th>" for title, cls in head)
    colgroup = "<colgroup>" + "".join(f"<col style='width:{w}'>" for w in widths) + "</colgroup>" if widths else ""
    return (f"<table id={table_id} class='{classes}'>{colgroup}<thead><tr>{cols}</tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>\n")


def _link(b: dict, text: str) -> str:
    return f"<a href='{html.escape(b['report_href'], quote=True)}'>{text}</a>" if b.get("report_href") else text


def write_page(out: TextIO, review: Review, *, reports_href: str | None = None, tz: tzinfo | None = None,
               sources: list[str] | None = None) -> None:
    """Write the review page. ``reports_href``: the folder of the sessions' reports, relative to the page."""
    times = Times(tz)
    for b in review.bundles:
        b["report_href"] = f"{reports_href}/{b['report']}" if reports_href and b.get("report") else None
    genuine = sum(1 for b in review.bundles if b.get("genuine"))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out.write("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
              f"<meta http-equiv=Content-Security-Policy content=\"{CSP}\">"
              "<meta name=viewport content='width=device-width,initial-scale=1'><title>Chaperone review</title>"
              f"<style>{STYLE}{_EXTRA_STYLE}</style></head><body>\n<h1>Chaperone review</h1>\n")
    out.write(f"<p class=muted>Written {esc(times.full(now))}; times are in {esc(times.zone(now))}. "
              f"Sources: {esc(', '.join(sources or []), 2000)}.</p>\n")
    problems = len(review.problems) + len(review.unreadable_sources)
    verdict = ("ok", "Every bundle is genuine and complete.") if not problems else (
        "bad", f"{plural(problems, 'problem')} found: see below.")
    out.write(f"<div class='banner {verdict[0]}'><b>{html.escape(verdict[1])}</b>"
              f"{plural(len(review.bundles), 'bundle')} from "
              f"{plural(len({b.get('device') for b in review.bundles}), 'device')}"
              f"; {genuine:,} genuine. {plural(review.examined, 'bundle')} verified in this run, the rest known from "
              "the index.</div>\n")
    out.write("<div class=filterbar><input id=filter type=search placeholder='Filter: device, technician, ticket, "
              "problem…' aria-label=Filter><span class=muted><span id=shown>"
              f"{len(review.bundles)}</span> of {len(review.bundles):,} sessions shown</span></div>\n")
    out.write(_problems(review))
    out.write(_timeline(review, times))
    out.write(_per_device(review, times))
    out.write(_per_technician(review, times))
    out.write(_ways_back(review, times))
    out.write(_alarms(review, times))
    if review.skipped:
        shown = "".join(f"<li><code>{esc(s, 300)}</code></li>" for s in review.skipped[:50])
        out.write(f"<h2>Skipped <span class=n>({len(review.skipped):,})</span></h2><p class=muted>Files that are not "
                  f"bundles.</p><ul>{shown}</ul>\n")
    out.write(f"<footer>Chaperone review. Each session's report was written with the verdict this review computed."
              f"</footer>\n<script>{_SCRIPT}</script>\n</body></html>\n")


def _problems(review: Review) -> str:
    total = len(review.problems) + len(review.unreadable_sources)
    out = f"<h2 id=problems>Problems <span class=n>({total:,})</span></h2>\n"
    if not total:
        return out + "<p class=empty>None: every bundle is genuine, from a known device, and nothing is missing.</p>\n"
    by_file = {b["file"]: b for b in review.bundles}
    rows = [f"<tr class=problem><td class=kind>cannot read</td><td></td><td></td><td></td><td>{esc(s, 600)}</td></tr>"
            for s in review.unreadable_sources]
    ordered = sorted(review.problems, key=lambda p: (_KIND_ORDER.get(p["kind"], 99), p.get("file") or ""))
    for p in ordered[:PROBLEM_LIMIT]:
        b = by_file.get(p.get("file") or "")
        name = esc(_base(p.get("file") or ""), 200)
        rows.append(f"<tr class=problem><td class=kind>{esc(p['kind'])}</td>"
                    f"<td>{_link(b, name) if b else name}</td><td>{esc(p.get('session') or '')}</td>"
                    f"<td>{esc(_device_name(review, p.get('device')))}</td><td>{esc(p.get('detail'), 600)}</td></tr>")
    more = (f"<p class=more>{len(ordered) - PROBLEM_LIMIT:,} more problems are in the review's JSON and CSV."
            "</p>\n" if len(ordered) > PROBLEM_LIMIT else "")
    return out + _table("problem-list", [("Problem", ""), ("File", ""), ("Session", ""), ("Device", ""),
                                         ("Detail", "")], rows) + more


def _verdict_cell(b: dict) -> str:
    if not b.get("readable"):
        return "<td class=bad data-v=2>unreadable</td>"
    if not b.get("genuine"):
        return "<td class='bad nw' data-v=1>NOT GENUINE</td>"
    return "<td class=ok data-v=0>genuine</td>"


def _timeline(review: Review, times: Times) -> str:
    rows = []
    for b in review.bundles:
        start = b.get("started") or b.get("requested")
        took = length(seconds_between(b.get("started"), b.get("ended"))) if b.get("ended") and b.get("started") else ""
        witnessed = {True: "yes", False: "no", None: ""}.get(b.get("witnessed"), "")
        rows.append(
            f"<tr><td class=t data-v='{esc(start or '')}'>{esc(times.short(start) if start else '')}</td>"
            f"<td class=nw data-v='{seconds_between(b.get('started'), b.get('ended')) or 0}'>{esc(took)}</td>"
            f"<td>{esc(_device_name(review, b.get('device')))}</td><td>{esc(b.get('technician') or '', 128)}</td>"
            f"<td>{esc(b.get('org') or '', 128)}</td><td class=nw>{esc(b.get('ticket') or '', 64)}</td>"
            f"{_verdict_cell(b)}"
            f"<td>{witnessed}</td>"
            f"<td class=n>{b.get('ways_back_in') or 0}</td><td class=n>{b.get('alarms') or 0}</td>"
            f"<td class=n>{b.get('gaps') or 0}</td>"
            f"<td title='{esc(b['file'])}'>{_link(b, esc(_base(b['file']), 120))}</td>"
            "</tr>")
    head = [("Started", ""), ("Length", ""), ("Device", ""), ("Technician", ""), ("Organisation", ""),
            ("Ticket", ""), ("Verdict", ""), ("Witnessed", ""), ("Ways back in", "n"), ("Alarms", "n"),
            ("Gaps", "n"), ("Report", "")]
    return (f"<h2 id=timeline>Sessions <span class=n>({len(review.bundles):,})</span></h2>\n"
            "<p class=muted>Oldest first; click a column to sort, the file name to open the session's report.</p>\n"
            + _table("sessions", head, rows, widths=("10em", "7em", "15%", "11%", "9%", "7.5em", "7em", "6.5em",
                                                     "4.5em", "4.5em", "3.5em", "auto")))


def _per_device(review: Review, times: Times) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in review.bundles:
        groups[b.get("device") or ""].append(b)
    for fp in review.devices:
        groups.setdefault(fp, [])
    rows = []
    for fp, items in sorted(groups.items()):
        starts = sorted(s for s in (b.get("started") for b in items) if s)
        known = "yes" if fp in review.devices else ("—" if not review.devices else "<b class=flag>NO</b>")
        bad = sum(1 for b in items if not b.get("genuine"))
        rows.append(f"<tr><td>{esc(_device_name(review, fp or None, whole=True))}</td><td>{known}</td>"
                    f"<td class=n>{len(items)}</td>"
                    f"<td class=n>{bad}</td><td class=n>{sum(b.get('ways_back_in') or 0 for b in items)}</td>"
                    f"<td class=n>{sum(b.get('alarms') or 0 for b in items)}</td>"
                    f"<td>{esc(times.short(starts[0]) if starts else '')}</td>"
                    f"<td>{esc(times.short(starts[-1]) if starts else '')}</td></tr>")
    head = [("Device", ""), ("Known", ""), ("Sessions", "n"), ("Not genuine", "n"), ("Ways back in", "n"),
            ("Alarms", "n"), ("First", ""), ("Last", "")]
    return (f"<h2 id=devices>Per device <span class=n>({len(groups):,})</span></h2>\n"
            + _table("device-list", head, rows))


def _per_technician(review: Review, times: Times) -> str:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for b in review.bundles:
        if b.get("readable"):
            groups[(b.get("technician") or "unknown", b.get("org") or "")].append(b)
    rows = []
    for (who, org), items in sorted(groups.items()):
        last = max((b.get("started") or "" for b in items), default="")
        rows.append(f"<tr><td>{esc(who, 128)}</td><td>{esc(org, 128)}</td><td class=n>{len(items)}</td>"
                    f"<td class=n>{len({b.get('device') for b in items})}</td>"
                    f"<td class=n>{sum(b.get('ways_back_in') or 0 for b in items)}</td>"
                    f"<td class=n>{sum(b.get('alarms') or 0 for b in items)}</td>"
                    f"<td class=t>{esc(times.short(last))}</td></tr>")
    head = [("Technician", ""), ("Organisation", ""), ("Sessions", "n"), ("Devices", "n"), ("Ways back in", "n"),
            ("Alarms", "n"), ("Last session", "")]
    return (f"<h2 id=technicians>Per technician <span class=n>({len(groups):,})</span></h2>\n"
            + _table("technician-list", head, rows))


def _ways_back(review: Review, times: Times) -> str:
    listed: list[tuple[bool, str, dict, dict]] = []
    total = 0
    for b in review.bundles:
        total += b.get("ways_back_in") or 0
        listed.extend((bool(w.get("package")), w.get("ts") or "", w, b) for w in b.get("ways") or [])
    listed.sort(key=lambda x: (x[0], x[1]))  # unexplained first, then by time
    rows = []
    for _, _, w, b in listed[:LIST_LIMIT]:
        pkg = f"came with {esc(w['package'], 200)}" if w.get("package") else "<b class=flag>unexplained</b>"
        rows.append(f"<tr><td class=t data-v='{esc(w.get('ts') or '')}'>{esc(times.short(w.get('ts')))}</td>"
                    f"<td>{esc(_device_name(review, b.get('device')))}</td>"
                    f"<td>{esc(b.get('technician') or '', 128)}"
                    f"</td><td>{esc(w.get('op'))} {esc(w.get('category'))}: <code>{esc(w.get('item'), 300)}</code>"
                    f"</td><td>{pkg}</td><td>{_link(b, esc(b.get('session') or b['file'], 200))}</td></tr>")
    out = f"<h2 id=ways>Ways back in across sessions <span class=n>({total:,})</span></h2>\n"
    if not rows:
        return out + "<p class=empty>None.</p>\n"
    head = [("Time", ""), ("Device", ""), ("Technician", ""), ("What", ""), ("Explained", ""), ("Session", "")]
    note = "" if len(rows) == total else (f"<p class=more>{len(rows):,} listed of {total:,} (unexplained first); "
                                          "each session's report lists all of its own.</p>\n")
    return out + _table("way-list", head, rows) + note


def _alarms(review: Review, times: Times) -> str:
    rows: list[str] = []
    total = 0
    for b in review.bundles:
        total += b.get("alarms") or 0
        for a in (b.get("alarm_items") or [])[: max(0, LIST_LIMIT - len(rows))]:
            rows.append(f"<tr><td class=t data-v='{esc(a.get('ts') or '')}'>{esc(times.short(a.get('ts')))}</td>"
                        f"<td>{esc(_device_name(review, b.get('device')))}</td><td>{esc(a.get('text'), 400)}</td>"
                        f"<td>{_link(b, esc(b.get('session') or b['file'], 200))}</td></tr>")
    out = f"<h2 id=alarms>Alarms across sessions <span class=n>({total:,})</span></h2>\n"
    if not rows:
        return out + "<p class=empty>None.</p>\n"
    note = "" if len(rows) == total else (f"<p class=more>{len(rows):,} listed of {total:,}; each session's report "
                                          "lists all of its own.</p>\n")
    return out + _table("alarm-list", [("Time", ""), ("Device", ""), ("Alarm", ""), ("Session", "")], rows) + note
