"""Times as the agent sends them (RFC 3339, UTC) and as the customer reads them. No Qt."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


def parse_ts(value: object) -> float | None:
    """Seconds since the epoch for an RFC 3339 string, or None when it is missing or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@lru_cache(maxsize=4096)
def _clock(value: str) -> str:
    seconds = parse_ts(value)
    if seconds is None:
        return value
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S")


def clock(value: object) -> str:
    """Local wall-clock time ``HH:MM:SS`` for an RFC 3339 string; the raw value when it does not parse."""
    if value is None:
        return ""
    return _clock(value if isinstance(value, str) else str(value))


def date_time(value: object) -> str:
    """Local ``YYYY-MM-DD HH:MM`` for an RFC 3339 string; empty when missing."""
    seconds = parse_ts(value)
    if seconds is None:
        return "" if value is None else str(value)
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def countdown(seconds: float) -> str:
    """``M:SS`` or ``H:MM:SS``, never negative."""
    total = max(0, int(seconds + 0.999))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def spoken_duration(seconds: object) -> str:
    """``"30 minutes"``, ``"1 hour 15 minutes"``; ``"not stated"`` when unknown."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        return "not stated"
    minutes = max(1, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour" + ("s" if hours != 1 else ""))
    if minutes:
        parts.append(f"{minutes} minute" + ("s" if minutes != 1 else ""))
    return " ".join(parts)


def counted(n: object, noun: str) -> str:
    """``"1 item"``, ``"3 items"``; a value that is not a count is shown as it is."""
    if isinstance(n, bool) or not isinstance(n, int):
        return f"{'' if n is None else n} {noun}s".strip()
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
