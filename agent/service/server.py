"""The agent service: one asyncio loop serving the local API on ``home/agent.sock``.

Each connection sends JSON lines and gets one response per line, in order.
``subscribe`` turns a connection into an event stream. Every connection's
peer credentials are read once (SO_PEERCRED) and checked on every operation.

Bad input never stops the agent: a line that is not UTF-8 or not JSON, or an
unknown operation, gets an error response and the connection goes on; a line
longer than 1 MiB gets ``too-large`` and the connection is closed (its end
cannot be found safely); a client that hangs up mid-line is simply dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys

from agent import __version__
from agent.api import protocol
from agent.api.peercred import Peer, home_owner, peer_of
from agent.api.protocol import MAX_MESSAGE, OPEN_OPS
from agent.capture import Capture, default_watch_paths
from agent.devicekey import DeviceKey
from agent.errors import ApiError, ChaperoneError, HomeError
from agent.home import Home
from agent.service.access import end_access
from agent.service.lock import AgentLock
from agent.service.unattended import UnattendedSink, start_monitor
from agent.service.watchdog import Watchdog
from agent.session.caller import Caller
from agent.session.hooks import CaptureFactory, TechnicianPids
from agent.session.manager import SessionManager
from agent.ssh import lifecycle as ssh_lifecycle

log = logging.getLogger("chaperone.agent")

MAX_CONNECTIONS = 2048
MAX_CONNECTIONS_PER_STRANGER = 64  # per uid other than the owner and root
IDLE_TIMEOUT = 300.0  # a connection that sends no complete message for this long is closed
SUBSCRIBER_QUEUE = 1000
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, with the terminating NUL
WRITE_TIMEOUT = 10.0


# Test-only: CHAPERONE_CAPTURE=off runs sessions without capture (journaled as a capture-error).
CAPTURE_ENV = "CHAPERONE_CAPTURE"


def capture_factory(sink, watch_paths: list[str], technician_pids: TechnicianPids | None) -> Capture:
    """The real capture of a session (agent.capture.Capture)."""
    if os.environ.get(CAPTURE_ENV) == "off":
        raise RuntimeError(f"capture is turned off by {CAPTURE_ENV}=off (a test setting)")
    return Capture(sink, watch_paths, state_dir=getattr(sink, "state_dir", None), technician_pids=technician_pids)


def may(op: str, peer: Peer, owner_uid: int) -> bool:
    """The home's owner and root may do everything; others only the open operations."""
    return peer.uid in (0, owner_uid) or op in OPEN_OPS


def caller_of(peer: Peer) -> Caller:
    """Who the session layer records as having asked."""
    return Caller(uid=peer.uid, user=peer.user, pid=peer.pid)


def check_socket_path(home: Home) -> None:
    size = len(os.fsencode(home.socket_path))
    if size > SOCKET_PATH_MAX:
        raise HomeError(
            f"The home path {home.path} is too long for the agent's socket ({size} bytes; "
            f"the limit is {SOCKET_PATH_MAX}); pass a shorter --home."
        )


def _raise_fd_limit(wanted: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)

    def offer(self, message: bytes | None) -> bool:
        """Queue a message; False if this subscriber fell too far behind."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True


class AgentService:
    """The service around a SessionManager: socket, permissions, events, stop."""

    def __init__(self, home: Home, device_key, *, consent_timeout: float = 120.0,
                 capture: CaptureFactory = capture_factory):
        self.home = home
        self.owner_uid = home_owner(home.path)
        self.manager = SessionManager(home, device_key, publish=self.publish, consent_timeout=consent_timeout,
                                      capture_factory=capture, login_hooks={"ssh": ssh_lifecycle},
                                      default_watch_paths=default_watch_paths, end_access=self._end_access)
        self.watchdog = Watchdog(home, self.manager.failclosed, home.settings().guard.timeout_s)
        self._subscribers: set[_Subscriber] = set()
        self._connections = 0
        self._stranger_connections: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._handlers = {
            "ping": self._ping, "status": self._status, "request": self._request, "pending": self._pending,
            "decide": self._decide, "wait": self._wait, "end": self._end, "note": self._note,
            "sessions": self._sessions,
        }

    # --- events -------------------------------------------------------------------------------
    def publish(self, name: str, data: dict) -> None:
        message = protocol.event(name, data)
        for sub in list(self._subscribers):
            if not sub.offer(message):
                log.warning("a subscriber fell %d events behind; disconnecting it", SUBSCRIBER_QUEUE)
                self._subscribers.discard(sub)
                sub.queue.get_nowait()  # make room for the close sentinel
                sub.offer(None)

    # --- life -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        check_socket_path(self.home)
        for sig in (signal.SIGTERM, signal.SIGINT):  # from now on a stop is clean, even during recovery
            loop.add_signal_handler(sig, self.request_stop)
        await self.watchdog.start()  # the guard runs before any session is resumed or requested
        await self.manager.start()
        monitor = start_monitor(
            UnattendedSink(self.home, self.manager.device_key,
                           lambda name, data: loop.call_soon_threadsafe(self.publish, name, data)),
            self.home.settings().remote_access_interval_s, self.manager.session_live,
        )
        path = self.home.socket_path
        path.unlink(missing_ok=True)  # left by a crashed agent; the lock says none is running
        server = await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_MESSAGE + 1, backlog=1024)
        # 0600 at once (the home itself is 0700); not by umask, which would race other threads' files.
        os.chmod(path, 0o600)
        print(f"chaperone agent: listening on {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
        self.watchdog.ready()
        try:
            await self._stop.wait()
        finally:
            self.publish("agent-stopping", {})
            server.close()
            if monitor is not None:
                await asyncio.to_thread(monitor.stop)
            await self.manager.stop()
            for sub in list(self._subscribers):
                sub.offer(None)
            self._subscribers.clear()
            try:
                await asyncio.wait_for(server.wait_closed(), 5.0)
            except TimeoutError:
                pass
            path.unlink(missing_ok=True)
            await self.watchdog.stop()  # sessions are ended: the guard may go
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _end_access(self, session_id: str) -> dict:
        """The technician's access ended by the agent itself (agent.service.access; the guard is spared)."""
        return end_access(self.home, session_id, protect={self.watchdog.guard_pid or 0})

    # --- connections ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
        except OSError:
            await self._close(writer)
            return
        trusted = peer.uid in (0, self.owner_uid)
        if self._connections >= MAX_CONNECTIONS or (
                not trusted and self._stranger_connections.get(peer.uid, 0) >= MAX_CONNECTIONS_PER_STRANGER):
            writer.write(protocol.error(None, "unavailable", "The agent has too many connections; try again."))
            await self._close(writer)
            return
        self._connections += 1
        if not trusted:
            self._stranger_connections[peer.uid] = self._stranger_connections.get(peer.uid, 0) + 1
        try:
            while not self._stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
                except asyncio.IncompleteReadError:
                    break  # the client hung up (perhaps mid-message): nothing to answer
                except asyncio.LimitOverrunError:
                    writer.write(protocol.error(None, "too-large",
                                                f"The message is larger than {MAX_MESSAGE // 1024} KiB."))
                    break
                if line.strip() == b"":
                    continue
                subscribed, reply = await self._dispatch(line, peer)
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
                if subscribed:
                    await self._stream_events(reader, writer)
                    break
        except (TimeoutError, ConnectionError, OSError):
            pass  # gone, idle too long, or too slow to read its answers
        finally:
            self._connections -= 1
            if not trusted:
                self._stranger_connections[peer.uid] -= 1
            await self._close(writer)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            if not writer.is_closing():
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (TimeoutError, ConnectionError, OSError):
            pass

    async def _stream_events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sub = _Subscriber()
        self._subscribers.add(sub)

        async def pump() -> None:
            while (message := await sub.queue.get()) is not None:
                writer.write(message)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

        async def hang_up() -> None:
            while await reader.read(65536):
                pass  # a subscriber has nothing more to say; we only watch for it leaving

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(hang_up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._subscribers.discard(sub)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self, line: bytes, peer: Peer) -> tuple[bool, bytes]:
        """(whether this starts a subscription, the response line)."""
        try:
            msg = protocol.decode_request(line)
        except ApiError as exc:
            return False, protocol.error(protocol.request_id_of(line), exc.code, str(exc))
        if not may(msg.op, peer, self.owner_uid):
            return False, protocol.error(
                msg.id, "forbidden",
                f"Only the owner of {self.home.path} or root may use '{msg.op}'; you are {peer.user}.",
            )
        if msg.op == "subscribe":
            if self._stop.is_set():
                return False, protocol.error(msg.id, "unavailable", "The agent is stopping.")
            return True, protocol.ok(msg.id, {"subscribed": True})
        try:
            result = await self._handlers[msg.op](msg.params, peer)
        except ApiError as exc:
            return False, protocol.error(msg.id, exc.code, str(exc))
        except ChaperoneError as exc:  # e.g. a journal that cannot be written
            return False, protocol.error(msg.id, "unavailable", str(exc))
        except Exception:  # noqa: BLE001 - a bug must not stop the agent
            log.exception("internal error in %s", msg.op)
            return False, protocol.error(msg.id, "unavailable",
                                        "The agent failed on this request (an internal error; see its log).")
        return False, protocol.ok(msg.id, result)

    # --- operations -------------------------------------------------------------------------------
    async def _ping(self, params, peer):
        return {"version": __version__, "pid": os.getpid()}

    async def _status(self, params, peer):
        return self.manager.status()

    async def _request(self, params, peer):
        if "request_file" in params:
            return await self.manager.submit(request_file=params["request_file"], source="file",
                                             caller=caller_of(peer))
        source = params.get("source", "cli")
        if source not in ("cli", "ssh"):
            raise ApiError("bad-request", "The source must be \"cli\" or \"ssh\".")
        if source == "ssh" and peer.uid not in (0, self.owner_uid):
            # Only ssh-authorize (run by sshd as root) speaks for an SSH login.
            raise ApiError("forbidden", "Only root or the home's owner may submit SSH login requests.")
        return await self.manager.submit(fields=params.get("request"), source=source, caller=caller_of(peer))

    async def _pending(self, params, peer):
        return self.manager.pending()

    async def _decide(self, params, peer):
        return await self.manager.decide(_session_id(params, required=True), params.get("decision"),
                                         params.get("how", "terminal"), caller_of(peer))

    async def _wait(self, params, peer):
        return await self.manager.wait(_session_id(params, required=True), params.get("timeout", 30))

    async def _end(self, params, peer):
        return await self.manager.end(_session_id(params), params.get("reason", "customer"), caller_of(peer))

    async def _note(self, params, peer):
        return self.manager.note(_session_id(params), params.get("text"), caller_of(peer))

    async def _sessions(self, params, peer):
        return self.manager.sessions()


def _session_id(params: dict, required: bool = False) -> str | None:
    sid = params.get("session")
    if sid is None and not required:
        return None
    if not isinstance(sid, str) or not sid or len(sid) > 64:
        raise ApiError("bad-request", "Give the session's id (as 'chaperone pending' or 'status' shows it).")
    return sid


def run_agent(home: Home, consent_timeout: float = 120.0) -> int:
    """``chaperone agent``: run in the foreground until SIGTERM or SIGINT; 0 on a clean stop."""
    check_socket_path(home)
    device_key, _ = DeviceKey.init(home)
    home.settings()  # a broken settings file stops the agent now, not at the first request
    logging.basicConfig(level=logging.INFO, format="chaperone agent: %(levelname)s %(message)s", stream=sys.stderr)
    _raise_fd_limit()
    with AgentLock(home):
        async def main() -> None:
            await AgentService(home, device_key, consent_timeout=consent_timeout).run()

        asyncio.run(main())
    print("chaperone agent: stopped.", file=sys.stderr, flush=True)
    return 0
