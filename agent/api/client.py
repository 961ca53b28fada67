"""``AgentClient``: the blocking client of the local API (CLI, tray, ssh-authorize).

Use it off the GUI thread. Each ``call`` opens its own connection, so one
client may be shared between threads; ``subscribe`` holds a connection of its
own until ``close``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from agent.api.protocol import encode
from agent.errors import API_CODES, AgentUnavailable, ApiError
from agent.home import Home

MAX_RESPONSE = 64 * 1024 * 1024
# The system agent's customer socket (DESIGN.md "Finding the system agent"); $CHAPERONE_SYSTEM_SOCKET overrides.
SYSTEM_SOCKET = Path("/run/chaperone/customer.sock")
SYSTEM_SOCKET_ENV = "CHAPERONE_SYSTEM_SOCKET"


def system_socket_path() -> Path:
    """Where the system agent's customer socket is: ``$CHAPERONE_SYSTEM_SOCKET``, else the default."""
    env = os.environ.get(SYSTEM_SOCKET_ENV)
    return Path(env) if env else SYSTEM_SOCKET


class AgentClient:
    """A client of the agent of ``home`` (its socket in the home), or of the system agent when ``socket``
    is its customer socket (``AgentClient.system()``)."""

    def __init__(self, home: Home | None, timeout: float = 5.0, *, socket_path: Path | None = None):
        if socket_path is None:
            if home is None:
                raise ValueError("give the home or the socket")
            socket_path = home.socket_path
        self.home = home
        self.socket_path = socket_path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._subscriptions: list[socket.socket] = []

    @classmethod
    def system(cls, timeout: float = 5.0) -> AgentClient:
        """A client of the system agent, through its customer socket."""
        return cls(None, timeout, socket_path=system_socket_path())

    def _connect(self, timeout: float | None) -> socket.socket:
        path = self.socket_path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if self.home is None:
                raise AgentUnavailable(
                    f"No system agent answers on {path}; is the chaperone-agent service running?") from None
            raise AgentUnavailable(
                f"No agent is running for {self.home.path}; start one with 'chaperone agent --home {self.home.path}'."
            ) from None
        except PermissionError:
            sock.close()
            raise AgentUnavailable(f"You may not connect to the agent's socket {path}; ask its owner.") from None
        except OSError as exc:
            sock.close()
            raise AgentUnavailable(f"Cannot reach the agent at {path}: {exc.strerror or exc}.") from None
        return sock

    def call(self, op: str, **params):
        """Send one request and return its result; raise ApiError on an error response.

        A ``timeout`` parameter (as ``wait`` takes) lengthens the socket timeout to match.
        The session's ``id`` parameter travels as ``session`` on the wire, where ``id``
        is the message's own id that the response echoes.
        """
        if "id" in params:
            params["session"] = params.pop("id")
        io_timeout = self.timeout
        if isinstance(params.get("timeout"), (int, float)):
            io_timeout = max(io_timeout, params["timeout"] + 5.0)
        msg_id = next(self._ids)
        sock = self._connect(io_timeout)
        try:
            sock.sendall(encode({"op": op, "id": msg_id, **params}))
            reader = _LineReader(sock)
            while True:
                reply = reader.next()
                if reply is None:
                    raise AgentUnavailable("The agent closed the connection without answering; is it stopping?")
                if reply.get("id") == msg_id:
                    break
        except TimeoutError:
            raise AgentUnavailable(f"The agent did not answer within {io_timeout:g} s.") from None
        except (ConnectionResetError, BrokenPipeError):
            raise AgentUnavailable("The agent closed the connection without answering; is it stopping?") from None
        finally:
            sock.close()
        if reply.get("ok"):
            return reply.get("result")
        raise _api_error(reply, "The agent refused the request.")

    def subscribe(self) -> Iterator[dict]:
        """Events ``{"event", "data"}`` as they come, until ``close()`` or the agent stops.

        The subscription is made before this returns (errors are raised here),
        so no event published after the call is missed.
        """
        sock = self._connect(self.timeout)
        reader = _LineReader(sock)
        try:
            sock.sendall(encode({"op": "subscribe", "id": 0}))
            reply = reader.next()
        except (TimeoutError, OSError):
            sock.close()
            raise AgentUnavailable("The agent did not accept the subscription; is it stopping?") from None
        if reply is None or not reply.get("ok"):
            sock.close()
            raise _api_error(reply or {}, "The agent refused the subscription.")
        sock.settimeout(None)
        with self._lock:
            self._subscriptions.append(sock)
        return self._events(sock, reader)

    def _events(self, sock: socket.socket, reader: _LineReader) -> Iterator[dict]:
        try:
            while True:
                try:
                    message = reader.next()
                except OSError:  # shut down by close() from another thread
                    return
                if message is None:
                    return
                if "event" in message:
                    yield message
        finally:
            with self._lock:
                if sock in self._subscriptions:
                    self._subscriptions.remove(sock)
            sock.close()

    def close(self) -> None:
        """Stop every subscription of this client (safe from any thread)."""
        with self._lock:
            subs = list(self._subscriptions)
        for sock in subs:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _api_error(reply: dict, fallback: str) -> ApiError:
    """The agent's error response as the same ApiError it raised (an unknown code reads as unavailable)."""
    code = reply.get("code")
    return ApiError(code if code in API_CODES else "unavailable", str(reply.get("error") or fallback))


class _LineReader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def next(self) -> dict | None:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                try:
                    value = json.loads(line)
                except ValueError:
                    raise AgentUnavailable(
                        "The agent sent a message that is not JSON; is this a Chaperone agent?") from None
                if isinstance(value, dict):
                    return value
                continue
            if len(self.buf) > MAX_RESPONSE:
                raise AgentUnavailable("The agent sent an oversized message.")
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
