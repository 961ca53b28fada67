"""The top of the report: what this page is (a checked report, or the bundle's own copy), and the
summary a person reads in ten seconds: who, why, allowed by whom and how, how long, the counts, the notes."""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass

from agent.bundle.layout import mode_sentence
from agent.bundle.report.markup import esc, plural
from agent.bundle.report.model import Collected, _obj, _str
from agent.bundle.report.times import Times, length, seconds_between


@dataclass(frozen=True)
class ReportCheck:
    """A verdict that ``chaperone report`` or ``review`` computed, shown at the top of the page."""

    genuine: bool
    reason: str  # verify's sentence
    fingerprint: str | None = None
    pinned: bool = False
    witnesses: str | None = None  # what the ledger proof showed, when it was checked
    sealed: bool = True  # False: intact so far but not sealed (a session still running)


@dataclass(frozen=True)
class BundleCopy:
    """The report is the copy written into a bundle: it cannot vouch for the bundle it sits in."""

    bundle_name: str
    fingerprint: str


def banner(check: ReportCheck | None, copy: BundleCopy | None) -> str:
    if check is not None and check.genuine:
        key = ""
        if check.fingerprint:
            key = ("The key matches the pinned fingerprint." if check.pinned else
                   f"Signed by the key <code>{esc(check.fingerprint)}</code>, which was not pinned: compare it with "
                   "the device's fingerprint (<code>chaperone init</code> on that device prints it).")
        witnessed = f"<br>{esc(check.witnesses)}" if check.witnesses else ""
        reason = check.reason.removeprefix("Genuine: ")
        return (f"<div class='banner ok' id=verdict><b>Genuine: checked when this report was written</b>"
                f"{esc(reason[:1].upper() + reason[1:])} {key}{witnessed}</div>\n")
    if check is not None and not check.sealed:
        return f"<div class='banner unk' id=verdict><b>Not sealed yet</b>{esc(check.reason)}</div>\n"
    if check is not None:
        return ("<div class='banner bad' id=verdict><b>NOT GENUINE</b>"
                f"{esc(check.reason)} Nothing below can be trusted; it is shown to help find what was changed.</div>\n")
    if copy is not None:
        name = shlex.quote(copy.bundle_name)
        return ("<div class='banner info' id=verdict><b>This copy is not a verification</b>"
                "This page came inside the bundle, and anyone who changed the bundle could have changed it too. "
                f"To check the bundle, run <code>{esc(f'chaperone verify {name} --fingerprint {copy.fingerprint}')}"
                "</code>, or follow VERIFY.txt to check it with OpenSSH alone; "
                "<code>chaperone report</code> writes a report with the verdict it computed.</div>\n")
    return ("<div class='banner unk' id=verdict><b>Not checked</b>This report was written without checking the "
            "journal's signatures; run <code>chaperone verify</code> on the session's bundle.</div>\n")


def _pick(c: Collected, history: dict, key: str) -> str:
    value = c.request.get(key)
    return _str(value if value not in (None, "") else history.get(key))


def identity(c: Collected, history: dict) -> str:
    ident = _obj(c.request.get("verification"))
    if ident:
        if ident.get("verified") is True:
            signer = _str(ident.get("principal"))
            fp = _str(ident.get("fingerprint"))
            return f"verified ({esc(signer)}{', key ' + esc(fp) if fp else ''})"
        return f"<span class=flag>NOT verified</span>{': ' + esc(ident.get('detail')) if ident.get('detail') else ''}"
    verified = history.get("verified")
    if verified is True:
        return "verified"
    return "<span class=flag>NOT verified</span>" if verified is False else "unknown"


def decision_text(c: Collected, times: Times, ts: str, d: dict) -> str:
    by = _obj(d.get("by"))
    who = _str(by.get("user")) or (f"uid {by['uid']}" if by.get("uid") is not None else "the agent")
    how = {"click": "with a click", "terminal": "from a terminal", "timeout": "by timeout (no answer)",
           "policy": "by policy"}.get(_str(d.get("how")), _str(d.get("how")))
    verb = {"allow": "Allowed", "deny": "Refused"}.get(_str(d.get("decision")), _str(d.get("decision")) or "Decided")
    text = f"{verb} by {esc(who)} {esc(how)} at {esc(times.clock(ts))}"
    granted = _obj(d.get("granted"))
    if granted:
        caps = ", ".join(_str(x) for x in granted.get("capabilities") or []) if isinstance(
            granted.get("capabilities"), list) else _str(granted.get("capabilities"))
        text += f"; granted {esc(caps or 'nothing')} until {esc(times.clock(granted.get('until')))}"
    if d.get("reason"):
        text += f": {esc(d.get('reason'), 300)}"
    return text


_END_BY = {"customer": "ended by the customer", "technician": "ended by the technician",
           "time-limit": "ended at the time limit", "agent-stopped": "ended because the agent stopped",
           "recovery": "ended after a restart of the agent"}


def summary(c: Collected, history: dict, times: Times) -> str:
    req = c.request
    technician = _pick(c, history, "technician")
    email = _pick(c, history, "email")
    org = _pick(c, history, "org")
    who = esc(technician or "unknown", 200) + (f" &lt;{esc(email, 254)}&gt;" if email else "")
    who += f", {esc(org, 200)}" if org else ""
    ticket, reason = _pick(c, history, "ticket"), _pick(c, history, "reason")
    why = (f"Ticket <b>{esc(ticket, 80)}</b>: " if ticket else "") + esc(reason or "no reason given", 1000)
    rows = [("Technician", f"{who}<br><span class=muted>identity {identity(c, history)}</span>"), ("Why", why)]
    if c.decisions:
        rows.append(("Consent",
                     "<br>".join(decision_text(c, times, ts, d) for ts, d in c.decisions[:3])))
    elif history.get("state"):
        rows.append(("Decision", esc(f"{history.get('state')} ({history.get('how') or 'no record'})")))
    started = c.started or _str(history.get("started"))
    ended = c.ended or _str(history.get("ended"))
    if started:
        end_reason = _END_BY.get(_str(c.end.get("reason")), _str(c.end.get("reason") or history.get("end_reason")))
        took = length(seconds_between(started, ended)) if ended else "still running when this was written"
        when = f"{esc(times.span(started, ended))} ({esc(took)}{', ' + esc(end_reason) if end_reason else ''})"
        rows.append(("When", when))
    else:
        rows.append(("When", "The session never started."))
    flags = req.get("flags") if isinstance(req.get("flags"), list) else []
    if flags:
        rows.append(("Warnings", "<br>".join(f"<span class=flag>{esc(f, 300)}</span>" for f in flags[:10])))
    device = c.device or _str(history.get("key_fingerprint"))
    rows.append(("Device", f"{esc(c.principal or '?')}, key <code>{esc(device or 'unknown')}</code>"
                           + ("" if c.sealed else " — <span class=flag>NOT SEALED</span>")))
    mode = esc(mode_sentence(c.mode, c.key_account), 400)
    rows.append(("Agent", f"<span class=flag>{mode}</span>" if c.mode == "personal" else mode))
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<dl class=facts>{facts}</dl>\n{tiles(c)}{notes(c, times)}"


def _tile(anchor: str, count: int, label: str, level: str) -> str:
    cls = "zero" if count == 0 else level
    return (f"<a class='tile {cls}' href='#{anchor}'><span class=n>{count:,}</span>"
            f"<span class=l>{html.escape(label)}</span></a>")


def gap_count(c: Collected) -> int:
    return c.gap_total + c.bad_line_count + (1 if c.unsealed > 0 else 0)


def tiles(c: Collected) -> str:
    unexplained, packaged = c.ways_back_total["unexplained"], c.ways_back_total["package"]
    back_label = "ways back in" + (f" ({packaged:,} came with packages)" if packaged else "")
    return ("<div class=tiles>"
            + _tile("back", unexplained + packaged, back_label, "bad" if unexplained else "warn")
            + _tile("config", c.config_total, "configuration changes", "info")
            + _tile("files", c.other_files_total, "other file changes", "info")
            + _tile("commands", c.technician_total, "technician's commands", "info")
            + _tile("alarms", c.alarm_total, "alarms", "bad")
            + _tile("gaps", gap_count(c), "gaps in recording", "warn")
            + "</div>\n")


def notes(c: Collected, times: Times) -> str:
    if not c.notes:
        return "<p class=muted>The technician left no note.</p>\n"
    shown = c.notes[:5]
    out = "".join(f"<blockquote>{esc(text, 1200)}<cite>{esc(author or 'technician', 128)}, "
                  f"{esc(times.clock(ts))}</cite></blockquote>\n" for ts, author, text in shown)
    if c.notes_total > len(shown):
        out += f"<p class=more>{plural(c.notes_total - len(shown), 'more note')} in the timeline below.</p>\n"
    return "<h3>The technician's notes</h3>\n" + out
