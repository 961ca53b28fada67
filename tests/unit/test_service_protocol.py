"""The local API's wire format, permissions and the one-agent lock."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.api import protocol
from agent.api.protocol import MAX_MESSAGE, OPEN_OPS, OPS, decode_request
from agent.errors import AlreadyRunning, ApiError
from agent.service.authority import Authority
from agent.service.lock import AgentLock


def test_a_request_decodes():
    msg = decode_request(b'{"op":"decide","id":7,"session":"s-1","decision":"allow"}\n')
    assert (msg.op, msg.id, msg.params) == ("decide", 7, {"session": "s-1", "decision": "allow"})


@pytest.mark.parametrize("line, code, message", [
    (b"{not json}\n", "bad-request", "not valid JSON"),
    (b"\xff\xfe{}\n", "bad-request", "not valid UTF-8"),
    (b"[1,2]\n", "bad-request", "must be a JSON object"),
    (b'{"id": 1}\n', "bad-request", "has no \"op\""),
    (b'{"op": "format-disk"}\n', "bad-request", "Unknown operation 'format-disk'"),
    (b'{"op": "\\u202eevil"}\n', "bad-request", r"Unknown operation '\\u202eevil'"),
    (b"[" * 200000 + b"\n", "bad-request", "not valid JSON"),
    (b'{"op":"ping","pad":"' + b"x" * MAX_MESSAGE + b'"}\n', "too-large", "larger than 1024 KiB"),
])
def test_bad_messages_get_a_code_and_a_sentence(line, code, message):
    with pytest.raises(ApiError, match=message) as info:
        decode_request(line)
    assert info.value.code == code


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_or_raise_protocol_error(data):
    try:
        msg = decode_request(data)
    except ApiError as exc:
        assert exc.code in protocol.CODES
    else:
        assert msg.op in OPS


@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8), max_size=5),
       st.sampled_from(OPS), st.none() | st.integers(-2**53, 2**53) | st.text(max_size=64))
@settings(deadline=None)
def test_responses_echo_the_id(params, op, msg_id):
    line = json.dumps({**params, "op": op, "id": msg_id}).encode()
    assert decode_request(line).id == msg_id
    reply = json.loads(protocol.ok(msg_id, {"x": 1}))
    assert reply == {"id": msg_id, "ok": True, "result": {"x": 1}}


def test_error_response_shape():
    assert json.loads(protocol.error(3, "conflict", "No.")) == {"id": 3, "ok": False, "error": "No.", "code": "conflict"}


def test_each_role_may_use_only_its_operations():
    for op in OPS:
        assert Authority.allows(op, "customer")
        assert Authority.allows(op, "technician") == (op in OPEN_OPS or op in ("note", "end"))
        assert Authority.allows(op, "other") == (op in OPEN_OPS)
    assert OPEN_OPS == {"ping", "status", "request", "wait"}
    assert not Authority.allows("decide", "technician") and not Authority.allows("pending", "technician")
    assert not Authority.allows("subscribe", "technician") and not Authority.allows("sessions", "other")


def test_a_second_agent_is_told_the_pid_of_the_first(home):
    with AgentLock(home):
        with pytest.raises(AlreadyRunning, match=f"already running for {home.path} \\(pid {os.getpid()}\\)"):
            AgentLock(home).acquire()
    with AgentLock(home):  # released: can be taken again
        pass
