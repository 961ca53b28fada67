"""The report's sections after the summary, each bounded (``model.Limits``) and saying what it left out."""

from __future__ import annotations

import html
from collections import Counter

from agent.bundle.report.header import decision_text
from agent.bundle.report.markup import esc, more, plural, section
from agent.bundle.report.model import Collected, Event, Process, WayBack, _obj, _str
from agent.bundle.report.times import Times


def ways_back(c: Collected, times: Times) -> str:
    total = sum(c.ways_back_total.values())
    out = section("back", "Ways back in", total)
    if not total:
        return out + "<p class=empty>None: no new account, key, scheduled job, service or other way back in.</p>\n"
    unexplained = [w for w in c.ways_back if not w.package]
    packaged = [w for w in c.ways_back if w.package]
    if unexplained:
        out += (f"<h3>Not explained by a package ({c.ways_back_total['unexplained']:,})</h3>\n"
                "<p class=muted>Check each of these with the technician: it lets someone come back later.</p>\n")
        out += "".join(_way(w, times) for w in unexplained)
    if packaged:
        out += (f"<h3>Came with a package ({c.ways_back_total['package']:,})</h3>\n<p class=muted>Installed by a "
                "package's own files; expected if the package was meant to be installed.</p>\n")
        out += "".join(_way(w, times) for w in packaged)
    return out + more(len(c.ways_back), total, "ways back in")


def _way(w: WayBack, times: Times) -> str:
    cls = "way pkg" if w.package else "way"
    pkg = f" — came with package <b>{esc(w.package, 200)}</b>" if w.package else ""
    why = f"<div class=why>{esc(w.why, 400)}</div>" if w.why else ""
    return (f"<div class='{cls}'><div class=what>{esc(w.op)} {esc(w.category)}: <code>{esc(w.item, 400)}</code>"
            f"</div><div class=muted>{esc(times.clock(w.ts))}{pkg}</div>{why}</div>\n")


def config(c: Collected, times: Times) -> str:
    out = section("config", "Configuration changes", c.config_total)
    if not c.config:
        return out + "<p class=empty>No configuration file changed.</p>\n"
    for ch in c.config:
        target = f"{ch.path} → {ch.dest}" if ch.dest else ch.path
        by = f"<span class=muted>by {esc(ch.by)}</span>" if ch.by else ""
        head = (f"<div class=head><span class=path>{esc(ch.op)} <code>{esc(target, 600)}</code></span>"
                f"<span class=muted>{esc(times.clock(ch.ts))}</span>{by}</div>")
        if ch.diff is not None and ch.diff:
            body = f"<pre class=diff>{_diff(ch.diff)}</pre>"
            if ch.diff_clipped:
                body += (f"<p class=more>{plural(ch.diff_clipped, 'more line')} of this diff in session.jsonl "
                         f"(record {ch.seq}).</p>")
        elif ch.diff == "":
            body = "<p class=muted>The text is unchanged (only its metadata changed).</p>"
        else:
            why = ch.note or "no diff was recorded"
            if ch.diff_clipped:
                why = f"the diff ({plural(ch.diff_clipped, 'line')}) is left out: the report's size limit was reached"
            body = f"<p class=muted>No diff: {esc(why, 300)}.</p>"
        out += f"<div class=change>{head}{body}</div>\n"
    return out + more(len(c.config), c.config_total, "configuration changes")


def _diff(diff: str) -> str:
    lines = []
    for line in diff.split("\n"):
        shown = esc(line)
        if line.startswith(("+++", "---", "@@")):
            lines.append(f"<span class=h>{shown}</span>")
        elif line.startswith("+"):
            lines.append(f"<span class=a>{shown}</span>")
        elif line.startswith("-"):
            lines.append(f"<span class=d>{shown}</span>")
        else:
            lines.append(shown + "\n")
    return "".join(lines)


def commands(c: Collected, times: Times) -> str:
    out = section("commands", "The technician's commands", c.technician_total)
    if not c.processes:
        if c.customer_total:
            return out + ("<p class=empty>No program was known to be the technician's, so their commands cannot be "
                          "told apart from the customer's: every program is counted under the customer's activity "
                          "below.</p>\n")
        return out + "<p class=empty>No program was recorded.</p>\n"
    nodes = list(c.processes.values())
    by_pid: dict[int, Process] = {}
    for node in nodes:
        node.children = []
        if node.pid is not None:
            by_pid[node.pid] = node
    roots = []
    for node in nodes:
        parent = by_pid.get(node.ppid) if node.ppid is not None else None
        if parent is not None and parent is not node and not _descends(parent, node, by_pid):
            parent.children.append(node)
        else:
            roots.append(node)
    out += ("<p class=muted>Each program the technician started, under the program that started it "
            "(by process id and parent).</p>\n<ul class=tree>\n")
    out += _tree(roots, times, c.limits.command_depth)
    out += "</ul>\n"
    return out + more(len(nodes), c.technician_total, "of the technician's programs")


def _descends(parent: Process, node: Process, by_pid: dict[int, Process]) -> bool:
    """True when ``parent`` is below ``node`` already (a loop made of reused process ids)."""
    seen = 0
    cursor: Process | None = parent
    while cursor is not None and seen < 10_000:
        if cursor is node:
            return True
        cursor = by_pid.get(cursor.ppid) if cursor.ppid is not None else None
        if cursor is parent:
            return True
        seen += 1
    return False


def _tree(roots: list[Process], times: Times, max_depth: int) -> str:
    """Nested lists, written without recursion (a deep chain of programs cannot exhaust the stack)."""
    parts: list[str] = []
    stack: list[tuple[Process | None, int]] = [(node, 0) for node in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        if node is None:
            parts.append("</ul></li>\n")
            continue
        meta = [times.clock(node.started)]
        if node.user:
            meta.append(node.user)
        if node.pid is not None:
            meta.append(f"pid {node.pid}")
        if node.ended:
            meta.append(f"ended {times.clock(node.ended)}")
        line = (f"<li><span class=cmd>{esc(node.command or '?')}</span> "
                f"<span class=meta>{esc(' · '.join(meta))}</span>")
        if node.children and depth + 1 >= max_depth:
            parts.append(line + f" <span class=more>(and {plural(len(node.children), 'program')} "
                                f"below, nested too deep to show)</span></li>\n")
        elif node.children:
            parts.append(line + "<ul>\n")
            stack.append((None, depth))
            stack.extend((child, depth + 1) for child in reversed(node.children))
        else:
            parts.append(line + "</li>\n")
    return "".join(parts)


_OPS = ("created", "modified", "deleted", "moved")


def _counts(counts: Counter[str]) -> str:
    ordered = [op for op in _OPS if counts.get(op)] + sorted(op for op in counts if op not in _OPS and counts[op])
    return ", ".join(f"{counts[op]:,} {op}" for op in ordered)


def other_files(c: Collected, times: Times) -> str:
    out = section("files", "Other file changes", c.other_files_total)
    if not c.other_files_total:
        return out + "<p class=empty>No other file changed.</p>\n"
    out += "<p class=muted>Grouped by folder; open a folder to see its files.</p>\n"
    for folder in sorted(c.folders.values(), key=lambda f: f.path):
        rows = "".join(
            f"<tr><td class=t>{esc(times.clock(ts))}</td><td class=op>{esc(op)}</td><td>{esc(name, 300)}</td>"
            f"<td class=n>{esc(size)}</td><td>{esc(by)}</td></tr>" for ts, op, name, size, by in folder.files)
        table = ("<table><tr><th class=t>Time</th><th class=op>Change</th><th>Name</th><th class=n>Bytes</th>"
                 f"<th>By</th></tr>{rows}</table>" if rows else "")
        shown = len(folder.files)
        total = sum(folder.counts.values())
        left = (f"<p class=more>{plural(total - shown, 'more change')} here (in bursts or beyond the "
                "report's limit); every record is in session.jsonl.</p>" if total > shown else "")
        out += (f"<details><summary><code>{esc(folder.path, 300)}</code> — {esc(_counts(folder.counts))}</summary>"
                f"{table}{left}</details>\n")
    if c.folders_left_out:
        out += (f"<p class=more>{sum(c.folders_left_out.values()):,} more changes in other folders "
                f"({esc(_counts(c.folders_left_out))}); every record is in session.jsonl.</p>\n")
    return out


def system_changes(c: Collected, times: Times) -> str:
    total = sum(c.system_total.values())
    out = section("software", "Software and system changes", total)
    if not total:
        return out + "<p class=empty>No package, service or account changed (other than the ways back in).</p>\n"
    out += f"<p class=muted>{esc('; '.join(f'{cat}: {n:,}' for cat, n in sorted(c.system_total.items())))}.</p>\n"
    rows = "".join(f"<tr><td class=t>{esc(times.clock(ts))}</td><td>{esc(cat)}</td><td class=op>{esc(op)}</td>"
                   f"<td>{esc(item, 300)}{' <span class=muted>(package ' + esc(pkg) + ')</span>' if pkg else ''}"
                   "</td></tr>" for ts, cat, op, item, pkg, _ in c.system_changes)
    out += ("<table><tr><th class=t>Time</th><th style='width:9em'>What</th><th class=op>Change</th><th>Item</th>"
            f"</tr>{rows}</table>\n")
    return out + more(len(c.system_changes), total, "changes")


def customer(c: Collected) -> str:
    out = section("customer", "The customer's own activity", c.customer_total)
    if not c.customer_total:
        return out + "<p class=empty>No other program was recorded.</p>\n"
    top = c.programs.most_common(c.limits.programs)
    out += (f"<p class=muted>{plural(c.customer_total, 'program start')} not by the technician, summarised by "
            "name (what they did is the customer's own business).</p>\n<ul class=programs>")
    out += "".join(f"<li><code>{esc(name, 80)}</code> × {count:,}</li>" for name, count in top)
    out += "</ul>\n"
    if len(c.programs) > len(top):
        rest = sum(n for _, n in c.programs.most_common()[len(top):])
        out += f"<p class=more>{plural(len(c.programs) - len(top), 'other program')}, {rest:,} starts.</p>\n"
    return out


def timeline(c: Collected, times: Times) -> str:
    out = section("timeline", "Consent timeline", c.timeline_total)
    if not c.timeline:
        return out + "<p class=empty>No consent record.</p>\n"
    rows = "".join(_event_row(c, times, e) for e in c.timeline)
    return (out + f"<table class=timeline><tr><th class=t>Time</th><th class=k>Event</th><th>What</th></tr>"
                  f"{rows}</table>\n" + more(len(c.timeline), c.timeline_total, "events"))


def _event_row(c: Collected, times: Times, e: Event) -> str:
    d = e.data
    kind, text, level = e.kind, "", ""
    if kind == "request":
        wanted = d.get("capabilities")
        caps = ", ".join(_str(x) for x in wanted) if isinstance(wanted, list) else ""
        duration = d.get("duration_s")
        minutes = duration // 60 if isinstance(duration, int) else None
        by = _obj(d.get("requested_by"))
        text = (f"{esc(d.get('technician'), 128)} asked for {esc(caps or 'a session')}"
                + (f" for {minutes} min" if minutes else "")
                + (f", watching {esc(_str(d.get('watch')), 400)}" if d.get("watch") else "")
                + (f" (via {esc(d.get('source'))}" + (f", as {esc(by.get('user'))}" if by.get("user") else "") + ")"
                   if d.get("source") else ""))
        label = "Request"
    elif kind == "decision":
        text, label = decision_text(c, times, e.ts, d), "Decision"
        level = "" if d.get("decision") == "allow" else "warn"
    elif kind == "session-start":
        text, label = f"until {esc(times.clock(d.get('until')))}", "Session started"
    elif kind == "time-warning":
        left = d.get("remaining_s")
        text, label = f"{left // 60 if isinstance(left, int) else '?'} min left", "Time warning"
    elif kind == "note":
        text, label = f"{esc(d.get('text'), 1000)} <span class=muted>— {esc(d.get('author'), 128)}</span>", "Note"
    elif kind == "session-end":
        text = esc(_str(d.get("reason")) + (f" ({_str(d.get('by'))})" if d.get("by") else ""))
        label = "Session ended"
    elif kind == "seal":
        text, label = "the journal was signed and closed", "Sealed"
    elif kind == "recovery":
        label, level = "Agent restarted", "warn"
        text = esc("gap of " + str(d.get("gap_s")) + " s" if d.get("gap_s") is not None else "after seq "
                   + _str(d.get("last_seq")))
    elif kind == "ssh-connections":
        label = "SSH connections"
        conns = d.get("connections")
        text = esc(f"{_str(d.get('action'))}: {len(conns) if isinstance(conns, list) else 0} connection(s)"
                   + (f"; {_str(d.get('detail'))}" if d.get("detail") else ""), 400)
    else:
        label, text = kind, esc(_str(d), 400)
    cls = f" class={level}" if level else ""
    return (f"<tr{cls}><td class=t>{esc(times.clock(e.ts))}</td><td class=k>{html.escape(label)}</td>"
            f"<td>{text}</td></tr>")


def alarms_and_gaps(c: Collected, times: Times) -> str:
    out = section("alarms", "Alarms", c.alarm_total)
    if c.alarms:
        out += "<table><tr><th class=t>Time</th><th>Alarm</th></tr>" + "".join(
            f"<tr class=bad><td class=t>{esc(times.clock(e.ts))}</td><td>{esc(e.text, 600)}</td></tr>"
            for e in c.alarms) + "</table>\n" + more(len(c.alarms), c.alarm_total, "alarms")
    else:
        out += "<p class=empty>No alarm.</p>\n"
    gaps = c.gap_total + c.bad_line_count + (1 if c.unsealed > 0 else 0)
    out += section("gaps", "Gaps in recording", gaps)
    rows = [f"<tr class=warn><td class=t>{esc(times.clock(e.ts))}</td><td>{esc(e.kind)}</td>"
            f"<td>{esc(e.text, 600)}</td></tr>" for e in c.gaps]
    rows += [f"<tr class=bad><td class=t>line {n}</td><td>not a record</td><td>{esc(why, 300)}</td></tr>"
             for n, why in c.bad_lines]
    if c.unsealed > 0:
        rows.append(f"<tr class=bad><td class=t></td><td>unsealed</td><td>{plural(c.unsealed, 'record')} after the "
                    "last seal: nothing vouches for them.</td></tr>")
    if not rows:
        return out + "<p class=empty>None: recording ran without a gap, an overflow or an error.</p>\n"
    out += ("<table><tr><th class=t>Time</th><th style='width:9em'>What</th><th>Detail</th></tr>"
            + "".join(rows) + "</table>\n")
    return out + more(len(c.gaps) + len(c.bad_lines), c.gap_total + c.bad_line_count, "gaps")


def others(c: Collected) -> str:
    if not c.others:
        return ""
    items = ", ".join(f"{n:,} {esc(kind, 64)}" for kind, n in c.others.most_common(c.limits.others))
    return (section("other", "Other records", sum(c.others.values()))
            + f"<p class=muted>Records of kinds this report does not show: {items}. They are in session.jsonl.</p>\n")
