"""The session's Redactor where the session uses it: every record through the sink, and notes."""

from __future__ import annotations

import asyncio

from agent.redact import Redactor
from agent.session.model import Session
from agent.session.sink import SessionSink


class ListJournal:
    def __init__(self):
        self.records: list[tuple[str, dict]] = []

    def append(self, type, data, sync=None):
        self.records.append((type, data))
        return len(self.records)


def test_the_sink_hides_known_secrets_in_every_record(tmp_path):
    loop = asyncio.new_event_loop()
    try:
        journal, r = ListJournal(), Redactor()
        r.learn("password=Sup3r-Secret-Value\n", "/etc/app.conf")
        sink = SessionSink(journal, loop, lambda *a: None, tmp_path, redactor=r)
        sink.emit("file", {"op": "created", "path": "/tmp/Sup3r-Secret-Value.txt", "size": 1})
        sink.emit("alarm", {"tool": "x", "detail": "connected with Sup3r-Secret-Value"})
        sink.emit("file", {"op": "created", "path": "/tmp/plain.txt"})
    finally:
        loop.close()
    text = repr(journal.records)
    assert "Sup3r-Secret-Value" not in text and text.count("[redacted: sha256 ") == 2
    assert journal.records[2][1] == {"op": "created", "path": "/tmp/plain.txt"}


def test_a_sink_without_a_redactor_journals_as_given(tmp_path):
    loop = asyncio.new_event_loop()
    try:
        journal = ListJournal()
        SessionSink(journal, loop, lambda *a: None, tmp_path).emit("note", {"text": "password=x"})
    finally:
        loop.close()
    assert journal.records == [("note", {"text": "password=x"})]


def test_each_session_has_its_own_redactor():
    fields = {f: None for f in ("id", "request", "source", "verification", "flags", "journal", "state",
                                "requested", "expires_at")}
    a, b = Session(**fields), Session(**fields)
    assert isinstance(a.redactor, Redactor) and a.redactor is not b.redactor
    assert a.redactor.marker("x") != b.redactor.marker("x")
