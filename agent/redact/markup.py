"""XML and plist: secret elements, ``<add key="Password" value="…"/>``, ``<name>password</name><value>…``."""

from __future__ import annotations

import re

from agent.redact.keys import harmless, is_secret_key
from agent.redact.spans import Open, Span

ELEMENT = re.compile(
    r"<([A-Za-z_][\w.:-]*)((?:\s[^<>]*?)?)(/?)>((?:<!\[CDATA\[.*?\]\]>|[^<])*)(</\1\s*>)?"
)
_ATTR = re.compile(r"""([\w.:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
NAMING_ATTRS = frozenset({"key", "name", "id", "property", "param", "parameter", "setting"})
NEXT_ELEMENT = re.compile(r"<([A-Za-z_][\w.:-]*)(?:\s[^<>]*)?>((?:<!\[CDATA\[.*?\]\]>|[^<])*)")
# OpenVPN's inline blocks hold keys and credentials: <auth-user-pass>, <tls-auth>, <secret>…
INLINE_SECRET_BLOCK = re.compile(
    r"[ \t]*<(auth-user-pass|tls-auth|tls-crypt|tls-crypt-v2|secret|key|pkcs12|http-proxy-user-pass)>[ \t]*$"
)


_NAME = re.compile(r"[A-Za-z][\w. -]{0,63}")
_DIGIT_INSIDE_A_WORD = re.compile(r"\d[a-z]")  # "2h" in hunter2hunter2; not "2P" in Db2Password


def is_identifier(text: str) -> bool:
    """Whether ``text`` reads as a name (``CFBundleIdentifier``, ``DbPassword``, ``IPv4``, ``Item 2``):
    what a plist's ``<key>`` or a ``key="…"`` attribute holds. A name's digits are few and end its words;
    ``hunter2hunter2`` or ``A0000000`` is not a name, so it stays a value to judge (and hide)."""
    if _NAME.fullmatch(text) is None:
        return False
    digits = sum(c.isdigit() for c in text)
    return not digits or (len(text) <= 20 and digits * 4 <= len(text) and not _DIGIT_INSIDE_A_WORD.search(text))


def _value_attr_spans(element: re.Match[str]) -> list[Span]:
    """The ``value="…"`` (or ``content``, ``val``) attribute of an element."""
    spans = []
    for a in _ATTR.finditer(element.group(2)):
        if a.group(1).lower() in ("value", "content", "val"):
            g = 2 if a.group(2) is not None else 3
            if a.group(g) and not harmless(a.group(g)):
                spans.append((element.start(2) + a.start(g), element.start(2) + a.end(g)))
    return spans


def xml_spans(line: str) -> tuple[list[Span], Open | None]:
    """Secret elements and attributes of one line, and an element left open for the next lines."""
    spans: list[Span] = []
    opened: Open | None = None
    if "<" not in line:
        return spans, None
    block = INLINE_SECRET_BLOCK.match(line)
    if block:
        return spans, Open("block", f"</{block.group(1)}>")
    for m in ELEMENT.finditer(line):
        tag, attrs, selfclosing, text, close = m.groups()
        local = tag.rsplit(":", 1)[-1]
        text_span = (m.start(4), m.end(4))
        if local.lower() in ("key", "name") and not selfclosing:
            inner = text.strip()
            if inner and is_secret_key(inner) and close:
                nxt = NEXT_ELEMENT.search(line, m.end())
                if nxt:
                    if not harmless(nxt.group(2)):
                        spans.append((nxt.start(2), nxt.end(2)))
                else:
                    opened = opened or Open("next-element")
            if local.lower() == "key" and is_identifier(inner):
                continue  # a plist key names a value; it is not one
        if is_secret_key(local) and not (local.lower() == "key" and not close and text.strip()):
            # (an unclosed <Key>q: Quit() is an X resources key binding)
            spans.extend(_value_attr_spans(m))  # <Password value="…"/>
            if selfclosing:
                continue
            if text.strip() and not harmless(text):
                spans.append(text_span)
            if not close and m.end(4) == len(line) and line.lstrip().startswith("<"):
                opened = opened or Open("xml", tag)
            continue
        names_secret = any(
            a.group(1).lower() in NAMING_ATTRS and is_secret_key(a.group(2) or a.group(3) or "")
            for a in _ATTR.finditer(attrs)
        )
        if names_secret:
            spans.extend(_value_attr_spans(m))
            if text.strip() and not selfclosing:
                spans.append(text_span)
    return spans, opened
