"""Canonical JSON: sorted keys, no spaces, UTF-8, no floats.

Kept within the subset that RFC 8785 (JCS) encodes identically: keys are
ASCII, numbers are integers within +-2**53, strings are valid Unicode.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from agent.errors import NotCanonical

MAX_SAFE_INT = 2**53 - 1

_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def check_canonical(value: Any) -> None:
    """Raise NotCanonical if ``value`` holds a float, a huge int, a non-str key
    or a lone surrogate (which is not valid UTF-8)."""
    t = type(value)
    if t is str or value is None or t is bool:
        return
    if t is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return
        raise NotCanonical(f"integer {value} is outside +-2**53")
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                raise NotCanonical(f"key {k!r} is not an ASCII string")
            check_canonical(v)
        return
    if t is list or t is tuple:
        for v in value:
            check_canonical(v)
        return
    raise NotCanonical(f"{t.__name__} values are not allowed in the journal")


def canonical_bytes(value: Any) -> bytes:
    """The canonical encoding of ``value`` (validated).

    Written by orjson with sorted keys, which gives exactly ``reference_bytes`` for every value
    ``check_canonical`` lets through (a hypothesis test holds it to that), several times faster: a
    verifier re-encodes every signed line of every journal it checks."""
    check_canonical(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # a lone surrogate, or nesting deeper than a journal's writer writes
        if "surrogate" in str(exc):
            raise NotCanonical("text is not valid Unicode (lone surrogate)") from exc
        raise NotCanonical(f"it cannot be written as canonical JSON ({exc})") from exc


def reference_bytes(value: Any) -> bytes:
    """The definition of the canonical encoding: the standard library's encoder with sorted keys and no
    spaces (what RFC 8785 gives for the values ``check_canonical`` lets through)."""
    check_canonical(value)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise NotCanonical("text is not valid Unicode (lone surrogate)") from exc


def canonical_unchecked(value: Any) -> bytes:
    """Encode a value already known to be canonical (the hot path)."""
    return _encoder.encode(value).encode("utf-8")
