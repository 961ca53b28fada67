"""The local API's wire format: one UTF-8 JSON object per line, at most 1 MiB.

Pure functions: decoding a line either gives a request or raises
ApiError carrying the error code and one sentence for the response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.errors import ApiError
from agent.text import escape

MAX_MESSAGE = 1024 * 1024
VERSION = 1

CODES = ("bad-request", "forbidden", "not-found", "conflict", "too-large", "unavailable")

OPS = ("ping", "status", "request", "pending", "decide", "wait", "end", "note", "sessions", "subscribe", "device")
# What anyone may do (agent.service.authority decides the rest by who the caller is).
OPEN_OPS = frozenset({"ping", "status", "request", "wait"})

EVENTS = ("consent-needed", "consent-decided", "session-started", "session-ended", "session-sealed", "time-warning",
          "activity", "alarm", "agent-stopping")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Message:
    op: str
    id: int | str | None
    params: dict


def decode_request(line: bytes) -> Message:
    """A request from one line (without or with its ``\\n``)."""
    if len(line) > MAX_MESSAGE + 1:
        raise ApiError("too-large", f"The message is larger than {MAX_MESSAGE // 1024} KiB.")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("bad-request", "The message is not valid UTF-8.") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ApiError("bad-request", "The message is not valid JSON; send one JSON object per line.") from None
    if not isinstance(value, dict):
        raise ApiError("bad-request", "The message must be a JSON object with an \"op\".")
    msg_id = value.pop("id", None)
    if not (msg_id is None or isinstance(msg_id, str) and len(msg_id) <= 64 or type(msg_id) is int):
        msg_id = None
    op = value.pop("op", None)
    if not isinstance(op, str):
        raise ApiError("bad-request", "The message has no \"op\"; say which operation you want.")
    if op not in OPS:
        raise ApiError("bad-request", f"Unknown operation '{escape(op)[:40]}'; use one of {', '.join(OPS)}.")
    return Message(op, msg_id, value)


def request_id_of(line: bytes) -> int | str | None:
    """The ``id`` of a message that failed to decode, when it can be found (for the error response)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    msg_id = value.get("id") if isinstance(value, dict) else None
    return msg_id if type(msg_id) is int or isinstance(msg_id, str) and len(msg_id) <= 64 else None


def encode(value: dict) -> bytes:
    return _encoder.encode(value).encode("utf-8") + b"\n"


def ok(msg_id, result) -> bytes:
    return encode({"id": msg_id, "ok": True, "result": result})


def error(msg_id, code: str, message: str) -> bytes:
    return encode({"id": msg_id, "ok": False, "error": message, "code": code})


def event(name: str, data: dict) -> bytes:
    return encode({"event": name, "data": data})
