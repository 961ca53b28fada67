"""Times as a person reads them: local time with its zone, to the second, and lengths in words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from agent.clock import parse_rfc3339
from agent.errors import UsageError


def parse(value: object) -> datetime | None:
    """An aware datetime from a journal's time, or None for anything else (a tampered journal may hold anything)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)  # the journal's own format, in C (strptime was most of a page's cost)
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        return parse_rfc3339(value)
    except (UsageError, OverflowError):
        return None


def zone_label(when: datetime) -> str:
    """``CET (UTC+01:00)``, or ``UTC`` for UTC."""
    offset = when.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    utc = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    name = when.tzname() or ""
    if minutes == 0 and name in ("UTC", "GMT", "Z", ""):
        return "UTC"
    return f"{name} ({utc})" if name and not name.startswith(("+", "-", "UTC")) else utc


class Times:
    """Formats the journal's UTC times in one zone (``tz``; None: this computer's)."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        self.tz = tz
        self.day: datetime | None = None  # the session's first day: later days are shown with their date

    def local(self, when: datetime) -> datetime:
        return when.astimezone(self.tz) if self.tz is not None else when.astimezone()

    def zone(self, reference: object = None) -> str:
        when = parse(reference) or datetime.now(UTC)
        return zone_label(self.local(when))

    def full(self, value: object) -> str:
        """``Sun 22 Nov 2026, 10:02:13 CET``; the raw text when it is not a time."""
        when = parse(value)
        if when is None:
            return "" if value is None else str(value)
        local = self.local(when)
        return f"{local:%a %d %b %Y, %H:%M:%S} {zone_label(local).split(' ')[0]}"

    def short(self, value: object) -> str:
        """``2026-11-22 10:02`` (for tables of many sessions; the zone is said once on the page)."""
        when = parse(value)
        if when is None:
            return "" if value is None else str(value)
        return f"{self.local(when):%Y-%m-%d %H:%M}"

    def clock(self, value: object) -> str:
        """``10:02:13``, with the date before it when it is not the session's first day."""
        when = parse(value)
        if when is None:
            return "" if value is None else str(value)
        local = self.local(when)
        if self.day is None:
            self.day = local
        clock = f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"  # a report has hundreds: no strftime
        if local.date() != self.day.date():
            return f"{local:%d %b} {clock}"
        return clock

    def span(self, start: object, end: object) -> str:
        """``10:02:13 – 10:03:24 CET`` (dates when the days differ)."""
        first, last = parse(start), parse(end)
        if first is None:
            return "not started"
        a = self.local(first)
        if last is None:
            return f"{a:%a %d %b %Y, %H:%M:%S} {zone_label(a).split(' ')[0]}, not ended"
        b = self.local(last)
        right = f"{b:%H:%M:%S}" if a.date() == b.date() else f"{b:%a %d %b %Y, %H:%M:%S}"
        return f"{a:%a %d %b %Y, %H:%M:%S} – {right} {zone_label(b).split(' ')[0]}"


def seconds_between(start: object, end: object) -> float | None:
    first, last = parse(start), parse(end)
    if first is None or last is None:
        return None
    return (last - first).total_seconds()


def length(seconds: float | None) -> str:
    """``45 s``, ``1 min 11 s``, ``2 h 05 min``, ``3 days 4 h``."""
    if seconds is None:
        return "unknown"
    whole = round(abs(seconds))
    sign = "-" if seconds < 0 else ""
    if whole < 60:
        return f"{sign}{whole} s"
    if whole < 3600:
        return f"{sign}{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{sign}{whole // 3600} h {whole % 3600 // 60:02d} min"
    days = whole // 86400
    return f"{sign}{days} day{'s' if days != 1 else ''} {whole % 86400 // 3600} h"
