"""Bad input through the real socket: the agent answers plainly, stays up and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent.devicekey import DeviceKey
from agent.home import Home
from agent.service.server import MAX_CONNECTIONS_PER_STRANGER
from tests.e2e.agent_helpers import TECHNICIAN, assert_sealed_and_genuine, records
from tests.fixtures.agent import AgentProcess

MIB = 1024 * 1024


def _connect(home) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(home.socket_path))
    return sock


def _reply(sock: socket.socket) -> dict | None:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf)


def _exchange(sock: socket.socket, line: bytes) -> dict | None:
    sock.sendall(line)
    return _reply(sock)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One agent for this module, with an active session: every test also checks that the
    agent stays up and that nothing recorded is lost (checked again at the end)."""
    base = tmp_path_factory.mktemp("bad-input")
    home = Home(base / "home")
    DeviceKey.init(home)
    agent = AgentProcess(home).start()
    sid = agent.cli("request", *TECHNICIAN, "--watch", str(base)).stdout.strip()
    assert agent.cli("approve", sid).returncode == 0
    assert agent.cli("note", "recorded before the bad input").returncode == 0
    yield agent
    try:
        assert agent.call("status")["session"] == sid  # still recording
        assert agent.cli("end").returncode == 0
        assert "recorded before the bad input" in [r["data"].get("text") for r in records(home, sid)]
        assert_sealed_and_genuine(home, sid)
    finally:
        agent.close()


@pytest.fixture(autouse=True)
def still_up(request):
    yield
    if "running" in request.fixturenames:
        running = request.getfixturevalue("running")
        assert running.call("ping")["pid"] == running.pid
        assert running.call("status")["state"] == "active"


@pytest.mark.parametrize("line, code, message", [
    (b"{this is not json\n", "bad-request", "not valid JSON"),
    (b'{"op": "ping", "x": "\xff\xfe"}\n', "bad-request", "not valid UTF-8"),
    (b'{"op": "self-destruct", "id": 9}\n', "bad-request", "Unknown operation 'self-destruct'"),
    (b"[" * 500_000 + b"\n", "bad-request", "not valid JSON"),
    (b'"just a string"\n', "bad-request", "must be a JSON object"),
    (b'{"op": "decide", "id": 3, "session": ["not", "an", "id"], "decision": "allow"}\n', "bad-request",
     "Give the session's id"),
    (b'{"op": "request", "request": {"technician": "A", "org": "O", "ticket": "1", "reason": "r", '
     b'"duration_s": 0}}\n', "bad-request", "out of range"),
    (b'{"op": "request", "request": {"technician": "A", "org": "O", "ticket": "1", "reason": "r", '
     b'"duration_s": 28801}}\n', "bad-request", "out of range"),
    (b'{"op": "request", "request": {"technician": "A", "org": "O", "ticket": "1", "reason": "r", '
     b'"watch": ["etc"]}}\n', "bad-request", "relative"),
    (b'{"op": "request", "request_file": "{}"}\n', "bad-request", "not a Chaperone request file"),
    (b'{"op": "wait", "session": "s-1", "timeout": -1}\n', "bad-request", "between 0 and 86400"),
])
def test_bad_messages_get_an_error_and_the_connection_goes_on(running, line, code, message):
    sock = _connect(running.home)
    reply = _exchange(sock, line)
    assert reply["ok"] is False and reply["code"] == code
    assert message in reply["error"]
    assert _exchange(sock, b'{"op": "ping", "id": 2}\n')["result"]["pid"] == running.pid
    sock.close()


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["oversized", "endless"])
def test_oversized_and_endless_messages_are_cut_off(running, ending):
    sock = _connect(running.home)
    try:
        sock.sendall(b'{"op": "ping", "pad": "' + b"x" * (MIB + 10) + b'"}' + ending)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent may close before we finish writing
    reply = _reply(sock)
    assert reply == {"id": None, "ok": False, "code": "too-large", "error": "The message is larger than 1024 KiB."}
    assert sock.recv(10) == b""  # and the connection is closed
    sock.close()


def test_a_client_hanging_up_mid_message(running):
    for partial in (b'{"op": "pi', b'{"op": "note", "text": "half a no', b"\xff"):
        sock = _connect(running.home)
        sock.sendall(partial)
        sock.close()
    sock = _connect(running.home)
    sock.sendall(b'{"op": "end", "id": 1')  # never finished: nothing happens
    sock.close()
    assert running.call("status")["state"] == "active"


def test_a_burst_of_1000_connections(running):
    socks = [_connect(running.home) for _ in range(1000)]
    for i, sock in enumerate(socks):
        sock.sendall(json.dumps({"op": "ping", "id": i}).encode() + b"\n")
    replies = [_reply(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert [r["id"] for r in replies] == list(range(1000))
    assert all(r["ok"] and r["result"]["pid"] == running.pid for r in replies)


def test_hostile_names_are_shown_escaped_and_flagged(running, tmp_path):
    done = running.cli("request", "--technician", "Alice\u202e\u2066 <alice@example.com>", "--org", "\u0410cme IT",
                       "--ticket", "1\x1b]0;pwned\x07", "--reason", "zero\u200bwidth", "--watch", str(tmp_path))
    assert done.returncode == 0, done.stderr
    sid = done.stdout.strip()
    item = next(p for p in running.call("pending") if p["id"] == sid)
    assert item["technician"] == "Alice\u202e\u2066"  # kept raw as evidence
    assert any(f.startswith("technician contains unusual characters (bidirectional controls") for f in item["flags"])
    assert any(f.startswith("org contains unusual characters (lookalike letters") for f in item["flags"])
    assert any(f.startswith("ticket contains unusual characters (control characters") for f in item["flags"])
    assert any(f.startswith("reason contains unusual characters (invisible characters") for f in item["flags"])
    shown = next(block for block in running.cli("pending").stdout.split("\ns-") if sid[2:] in block)
    assert "Alice\\u202e\\u2066 <alice@example.com>, \\u0410cme IT" in shown
    assert "1\\x1b]0;pwned\\x07" in shown
    assert not any(ch in shown for ch in "\u202e\u2066\x1b\x07\u200b\u0410")
    request = next(r["data"] for r in records(running.home, item["id"]) if r["type"] == "request")
    assert request["technician"] == "Alice\u202e\u2066" and request["flags"] == item["flags"]


def test_duration_out_of_range_from_the_cli(running):
    done = running.cli("request", *TECHNICIAN, "--duration", "9h")
    assert done.returncode == 2
    assert "The duration 9 h is out of range; ask for between 1 s and 8 h." in done.stderr


def test_missing_and_unreadable_watch_paths_are_flagged(running, tmp_path):
    missing = tmp_path / "not-there"
    done = running.cli("request", *TECHNICIAN, "--watch", str(missing), "--json")
    assert done.returncode == 0, done.stderr
    assert f"watch path {missing} does not exist" in json.loads(done.stdout)["flags"]


@pytest.mark.parametrize("command, message", [
    (("approve", "s-20000101-NOPE00"), "There is no request s-20000101-NOPE00; see 'chaperone pending'."),
    (("deny", "s-20000101-NOPE00"), "There is no request s-20000101-NOPE00; see 'chaperone pending'."),
    (("end", "s-20000101-NOPE00"), "There is no session s-20000101-NOPE00; see 'chaperone status'."),
])
def test_unknown_ids(running, command, message):
    done = running.cli(*command)
    assert done.returncode == 2 and done.stderr.strip() == f"chaperone: {message}"


def test_approve_an_already_decided_request(running, tmp_path):
    sid = running.cli("request", *TECHNICIAN, "--watch", str(tmp_path)).stdout.strip()
    assert running.cli("deny", sid).returncode == 0
    for verb in ("approve", "deny"):
        done = running.cli(verb, sid)
        assert done.returncode == 2
        assert f"Request {sid} was already decided (it is refused)." in done.stderr


def test_end_and_note_with_no_active_session(agent):
    done = agent.cli("end")
    assert done.returncode == 2 and "No session is running, so there is nothing to end." in done.stderr
    done = agent.cli("note", "hello")
    assert done.returncode == 2 and "No session is running, so there is nothing to add a note to." in done.stderr


def test_no_agent_is_a_plain_sentence(home, chaperone_cmd):
    done = subprocess.run([*chaperone_cmd, "status", "--home", str(home.path)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"chaperone: No agent is running for {home.path}; "
                                   f"start one with 'chaperone agent --home {home.path}'.")


# --- peer credentials --------------------------------------------------------------------------

def _as_stranger(work, uid: int = 65534):
    """``work()``'s JSON-able result, computed in a forked child running as ``uid``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the stranger, work, report through the pipe
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _outcomes(socket_path: Path) -> dict:
    """Each operation's outcome: "ok" or the error code."""
    messages = {op: {"op": op, "session": "s-x", "decision": "allow", "text": "hi"}
                for op in ("ping", "status", "pending", "decide", "end", "sessions", "subscribe", "note")}
    messages["ssh-request"] = {"op": "request", "source": "ssh", "request": {
        "technician": "Alice", "org": "Acme", "ticket": "1", "reason": "r",
        "ssh": {"user": "root", "key_fingerprint": "SHA256:x", "key_type": "ssh-ed25519"}}}
    results = {}
    for name, message in messages.items():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(socket_path))
            reply = _exchange(s, json.dumps({**message, "id": 1}).encode() + b"\n")
        results[name] = "ok" if reply["ok"] else reply["code"]
    return results


def _flood(socket_path: Path) -> list:
    """Hold as many connections as the agent allows one stranger, then one more."""
    held = []
    for _ in range(MAX_CONNECTIONS_PER_STRANGER):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(socket_path))
        held.append(s)
    assert _exchange(held[-1], b'{"op": "ping", "id": 1}\n')["ok"]
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.settimeout(10)
    extra.connect(str(socket_path))
    return [_reply(extra)["code"], _exchange(held[0], b'{"op": "ping", "id": 2}\n')["ok"]]


@pytest.fixture
def shared_home():
    """A home that another uid can reach (pytest's tmp folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="chp-", dir="/tmp"))
    path.chmod(0o711)
    home = Home(path / "h")
    DeviceKey.init(home)
    home.path.chmod(0o711)
    yield home
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second uid")
def test_another_user_may_only_ping_status_request_and_wait(agent_factory, shared_home):
    agent = agent_factory(shared_home)
    assert (shared_home.socket_path.stat().st_mode & 0o777) == 0o600
    shared_home.socket_path.chmod(0o666)  # let the stranger reach the socket; the agent must still refuse
    assert _as_stranger(lambda: _outcomes(shared_home.socket_path)) == {
        "ping": "ok", "status": "ok", "note": "forbidden",  # a note is the customer's or the technician's
        "pending": "forbidden", "decide": "forbidden", "end": "forbidden", "sessions": "forbidden",
        "subscribe": "forbidden", "ssh-request": "forbidden",  # only root speaks for an SSH login
    }
    assert agent.call("ping")["pid"] == agent.pid
    # One stranger cannot hold more than its share of the connections (the 65th is turned away).
    assert _as_stranger(lambda: _flood(shared_home.socket_path)) == ["unavailable", True]
    assert agent.call("ping")["pid"] == agent.pid
