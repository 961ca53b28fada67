"""Making journal text safe to put in HTML: display-escaped (``agent.text``), clipped, then HTML-escaped."""

from __future__ import annotations

import html
import re

from agent import text as display

# Printable ASCII with nothing to escape for display (a backslash is doubled) or for HTML: shown as it is.
_AS_IS = re.compile(r"[ !#-%(-;=?-\[\]-~]*")


def esc(value: object, limit: int | None = None) -> str:
    """Display-safe, HTML-escaped text of ``value``, clipped to ``limit`` characters (saying how many more)."""
    if value is None:
        return ""
    if type(value) is str and (limit is None or len(value) <= limit) and _AS_IS.fullmatch(value):
        return value
    shown = display.escape(value if isinstance(value, str) else str(value))
    if limit is not None and len(shown) > limit:
        more = len(shown) - limit
        return html.escape(shown[:limit]) + f"<span class=muted>… ({more:,} more characters)</span>"
    return html.escape(shown)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 change``, ``3 changes``, ``1,204 processes``."""
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"


def section(anchor: str, title: str, count: int | None = None) -> str:
    shown = f" <span class=n>({count:,})</span>" if count is not None else ""
    return f"<h2 id={anchor}>{html.escape(title)}{shown}</h2>\n"


def more(shown: int, total: int, what: str) -> str:
    """The line saying how many were left out, or nothing."""
    if total <= shown:
        return ""
    return (f"<p class=more>{total - shown:,} more {html.escape(what)} not shown here "
            f"({shown:,} of {total:,}); every record is in session.jsonl.</p>\n")
