"""Lossless, journal-safe path text.

A file name is a byte string. The journal holds text, so each path becomes:

- ``path``: the name decoded as UTF-8 with ``surrogateescape``, then escaped:
  a backslash is doubled, each undecodable byte becomes ``\\xNN``, and control
  characters (newline, tab, DEL, ...) become ``\\n``, ``\\t``, ``\\xNN``. The
  result never contains a lone surrogate or a line break, and
  :func:`unescape_path` turns it back into the exact bytes.
- ``path_b64``: the raw bytes in base64, only when the name is not valid UTF-8,
  so a reader without our escaping rules still gets the exact name.
"""

from __future__ import annotations

import base64
import os

_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNNAMED = {v: k for k, v in _NAMED_CONTROLS.items()}


def escape_path(raw: bytes | str) -> str:
    """The escaped text of a file name (see the module docstring)."""
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _NAMED_CONTROLS:
            out.append(_NAMED_CONTROLS[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate from a str path: keep it visible, never raw
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_path(text: str) -> bytes:
    """The raw bytes of a name escaped by :func:`escape_path` (names from bytes round-trip exactly)."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "\\":
            out.append(0x5C)
            i += 2
        elif nxt == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif nxt == "u":
            out += chr(int(text[i + 2 : i + 6], 16)).encode("utf-8", "surrogatepass")
            i += 6
        else:
            out += _UNNAMED["\\" + nxt].encode()
            i += 2
    return bytes(out)


def path_fields(raw: bytes | str, key: str = "path") -> dict[str, str]:
    """``{key: escaped}`` plus ``{key + "_b64": base64}`` when the name is not valid UTF-8."""
    data = os.fsencode(raw) if isinstance(raw, str) else raw
    fields = {key: escape_path(data)}
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        fields[key + "_b64"] = base64.b64encode(data).decode("ascii")
    return fields
