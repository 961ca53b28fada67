"""Times as the journal, the history and the local API write them: UTC, RFC 3339.

One format everywhere: ``2026-11-22T03:04:05.123456Z`` (microseconds, ``Z``).
Parsing also accepts any RFC 3339 time with an offset, and a time without
one is read as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agent.errors import UsageError
from agent.text import escape

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    """``when`` as ``2026-11-22T03:04:05.123456Z``."""
    return when.astimezone(UTC).strftime(_FORMAT)


def rfc3339_from_timestamp(seconds: float) -> str:
    """A Unix time (as ``time.time()`` or psutil's ``create_time`` give it) in the journal's format."""
    return datetime.fromtimestamp(seconds, UTC).strftime(_FORMAT)


def parse_rfc3339(text: str) -> datetime:
    """An aware datetime; ``UsageError`` (one sentence) for text that is not an RFC 3339 time."""
    try:
        return datetime.strptime(text, _FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        try:
            value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"'{escape(str(text))[:40]}' is not an RFC 3339 time.") from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)
