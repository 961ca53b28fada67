"""The line engine: every rule's spans for one line, and what a line leaves open for the next ones.

``scan_line`` gathers the spans of one line; ``continue_line`` handles a line
inside a construct that spans lines (PEM and PuTTY keys, YAML block scalars,
multi-line quoted strings, XML elements, OpenVPN inline blocks, a password
reader's here-document). ``scan_text`` walks a whole text. Nothing here
makes markers: the Redactor turns spans into markers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from agent.redact.assignments import auth_header_spans, kv_spans, random_value_spans
from agent.redact.commands import heredoc_opens, shell_spans
from agent.redact.keys import harmless, is_secret_key
from agent.redact.markup import NEXT_ELEMENT, xml_spans
from agent.redact.spans import (
    MAX_LINE,
    MAX_OPEN_LINES,
    Open,
    Span,
    close_quote,
    indent_of,
    shift,
    split_lines,
    whole,
)
from agent.redact.tokens import high_entropy_spans, token_spans

_PEM_BEGIN = re.compile(r"-----BEGIN [A-Za-z0-9 ]+?-----|---- BEGIN [A-Za-z0-9 ]+? ----")
_PEM_END = re.compile(r"-----END [A-Za-z0-9 ]+?-----|---- END [A-Za-z0-9 ]+? ----")
_PEM_BODY = re.compile(r"\S*|[A-Za-z][\w-]*: .*")  # base64 or hex (perhaps quoted), "Proc-Type: …" headers
_PUBLIC_PEM = re.compile(r"CERTIFICATE|PUBLIC KEY|X509 CRL|PKCS7|PARAMETERS")
_PUTTY_HEADERS = re.compile(
    r"(?:PuTTY-User-Key-File-\d+|Encryption|Comment|Public-Lines|Private-Lines|Key-Derivation|Argon2-Memory|Argon2-Passes|Argon2-Parallelism):"
)
_YAML_BLOCK = re.compile(r"([ \t]*)(?:-[ \t]+)?([\w.\"'-]+)[ \t]*:[ \t]*[|>][-+0-9]*[ \t]*(?:#.*)?$")


def scan_line(line: str) -> tuple[list[Span], Open | None]:
    """The spans of one line that hold secrets, and what it leaves open for the next lines."""
    if len(line) > MAX_LINE:
        return [(0, len(line))], None
    kv, kv_open = kv_spans(line)
    xml, xml_open = xml_spans(line)
    spans = kv + xml + auth_header_spans(line) + token_spans(line) + high_entropy_spans(line)
    spans += random_value_spans(line) + shell_spans(line)
    opened = kv_open or xml_open or heredoc_opens(line)
    if opened is None:
        bare = line.strip(" \t\"'")
        begin = _PEM_BEGIN.match(bare)
        if begin and not bare[begin.end() :].strip():
            # certificates too are hidden (a body is not read to tell which is which), but a public
            # block's lines are not secrets to remember
            opened = Open("pem", until="public" if _PUBLIC_PEM.search(begin.group(0)) else "")
        elif line.startswith("PuTTY-User-Key-File-"):
            opened = Open("putty")
        else:
            block = _YAML_BLOCK.match(line)
            if block and is_secret_key(block.group(2).strip("\"'")):
                opened = Open("yaml", indent=len(block.group(1)))
    return spans, opened


def continue_line(line: str, opened: Open) -> tuple[list[Span], Open | None, bool]:
    """A line inside an open construct: (spans, still open, scan the line normally too)."""
    kind = opened.kind
    if kind in ("quote", "triple", "xml", "block", "heredoc") and opened.lines >= MAX_OPEN_LINES:
        return [], None, True
    more = replace(opened, lines=opened.lines + 1)
    if kind in ("quote", "triple"):
        end = line.find(opened.until) if kind == "triple" else close_quote(line, 0, opened.until)
        if end < 0:
            return whole(line), more, False
        rest, _ = scan_line(line[end:])
        return [(0, end)] + shift(rest, end), None, False
    if kind == "xml":
        end = line.find(f"</{opened.until}")
        if end < 0:
            return whole(line), more, False
        return whole(line[:end]) + shift(scan_line(line[end:])[0], end), None, False
    if kind == "block":  # OpenVPN <auth-user-pass> … </auth-user-pass>
        if line.strip() == opened.until:
            return [], None, False
        return whole(line), more, False
    if kind == "heredoc":
        word = line.lstrip("\t") if opened.indent else line
        if word.rstrip() == opened.until:
            return [], None, False
        return whole(line), more, False
    if kind == "yaml":
        if not line.strip() or indent_of(line) > opened.indent:
            return whole(line), opened, False
        return [], None, True
    if kind == "pem":
        if _PEM_END.search(line) or not _PEM_BODY.fullmatch(line.strip()):
            return [], None, True  # the end, or not a key after all
        return whole(line), opened, False
    if kind == "putty":
        if line.startswith(("Private-MAC:", "Private-Hash:")):
            colon = line.index(":") + 1
            start = colon + (len(line[colon:]) - len(line[colon:].lstrip()))
            return [(start, len(line.rstrip()))], None, False
        if _PUTTY_HEADERS.match(line):
            return [], opened, True
        return whole(line), opened, False
    # next-element: the value that follows <name>password</name>
    if not line.strip():
        return [], opened, False
    m = NEXT_ELEMENT.search(line)
    if m and m.group(2) and not harmless(m.group(2)):
        return [(m.start(2), m.end(2))], None, False
    return [], None, True


def scan_text(text: str) -> Iterator[tuple[str, str, list[Span], bool]]:
    """Each line of ``text`` as ``(content, ending, spans, public)``; the endings (``\\n``, ``\\r\\n``,
    none) are kept; ``public`` marks the body of a certificate or public key (hidden, not a secret)."""
    opened: Open | None = None
    for raw in split_lines(text):
        content = raw.removesuffix("\n").removesuffix("\r")
        ending = raw[len(content) :]
        public = opened is not None and opened.kind == "pem" and opened.until == "public"
        if opened is None:
            spans, opened = scan_line(content)
        else:
            spans, still_open, rescan = continue_line(content, opened)
            if rescan:
                more, found = scan_line(content)
                spans += more
                still_open = still_open or found
            opened = still_open
        yield content, ending, spans, public
