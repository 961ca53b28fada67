"""Path text in records: lossless, one line, no lone surrogates, base64 for names that are not UTF-8."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from agent.canonical import check_canonical
from agent.capture.paths import escape_path, path_fields, unescape_path


@given(st.binary(min_size=1, max_size=64).filter(lambda b: b"\0" not in b))
def test_any_name_round_trips_and_stays_one_canonical_line(raw):
    fields = path_fields(raw)
    text = fields["path"]
    assert unescape_path(text) == raw
    assert "\n" not in text and "\r" not in text
    check_canonical(fields)  # no lone surrogate, valid UTF-8
    json.dumps(fields, ensure_ascii=False).encode("utf-8")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(fields["path_b64"]) == raw
    else:
        assert "path_b64" not in fields


def test_examples_match_the_architecture():
    assert escape_path(b"/home/a/caf\xc3\xa9") == "/home/a/café"
    assert escape_path(b"/tmp/bad\xff") == "/tmp/bad\\xff"
    assert escape_path(b"C:\\dir") == "C:\\\\dir"
    assert escape_path(b"two\nlines\ttab") == "two\\nlines\\ttab"
    assert path_fields(b"/x\xfe", "dest") == {"dest": "/x\\xfe", "dest_b64": "L3j+"}
