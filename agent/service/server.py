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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agent import __version__
from agent.api import protocol
from agent.api.peercred import Peer, home_owner, peer_of, user_name
from agent.api.protocol import MAX_MESSAGE
from agent.capture import Capture, default_watch_paths
from agent.capture.lineage import Lineage
from agent.capture.procfs import CLK_TCK
from agent.devicekey import DeviceKey
from agent.errors import ApiError, ChaperoneError, HomeError
from agent.home import Home
from agent.ledger import Ledger
from agent.publish.retention import Retention, RetentionWorker
from agent.publish.status import device_status
from agent.records import RecordType
from agent.redact import Redactor
from agent.service.access import boot_time, end_access
from agent.service.authority import Authority, Verdict, ancestry
from agent.service.ledger_link import UNATTENDED, LedgerLink
from agent.service.lock import AgentLock
from agent.service.unattended import UnattendedSink, start_monitor
from agent.service.watchdog import Watchdog
from agent.session.hooks import CaptureFactory, TechnicianPids
from agent.session.manager import SessionManager
from agent.ssh import lifecycle as ssh_lifecycle
from agent.ssh import sudo as ssh_sudo

log = logging.getLogger("chaperone.agent")

MAX_CONNECTIONS = 2048
MAX_CONNECTIONS_PER_STRANGER = 64  # per uid other than the owner and root
IDLE_TIMEOUT = 300.0  # a connection that sends no complete message for this long is closed
SUBSCRIBER_QUEUE = 1000
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, with the terminating NUL
WRITE_TIMEOUT = 10.0


# Test-only: CHAPERONE_CAPTURE=off runs sessions without capture (journaled as a capture-error).
CAPTURE_ENV = "CHAPERONE_CAPTURE"


def capture_factory(sink, watch_paths: list[str], technician_pids: TechnicianPids | None, *,
                    lineage: Lineage | None = None, redactor: Redactor | None = None) -> Capture:
    """The real capture of a session (agent.capture.Capture), on the agent's process lineage, redacting
    with the session's Redactor."""
    if os.environ.get(CAPTURE_ENV) == "off":
        raise RuntimeError(f"capture is turned off by {CAPTURE_ENV}=off (a test setting)")
    return Capture(sink, watch_paths, state_dir=getattr(sink, "state_dir", None), technician_pids=technician_pids,
                   lineage=lineage, redactor=redactor)


class PublishWorkerLike(Protocol):
    """agent.publish.publisher.PublishWorker, loaded only when this device publishes."""

    def nudge(self) -> None: ...


class RefusalLog:
    """At most ``per_minute`` alarms a minute per process for refused attempts; the rest are counted and
    the count rides on the next alarm, so a loop of attempts cannot flood the journal or hide."""

    def __init__(self, per_minute: int = 6):
        self.per_minute = per_minute
        self._seen: dict[int, list] = {}

    def admit(self, pid: int, now: float) -> tuple[bool, int]:
        times, skipped = self._seen.get(pid, ([], 0))
        times = [t for t in times if now - t < 60.0]
        if len(times) >= self.per_minute:
            self._seen[pid] = [times, skipped + 1]
            return False, 0
        times.append(now)
        self._seen[pid] = [times, 0]
        if len(self._seen) > 4096:
            self._seen.pop(next(iter(self._seen)))
        return True, skipped


def run_by_sshd(pid: int) -> bool:
    """Whether ``pid``'s parent is an sshd (the login ssh-authorize answers for), as /proc says now."""
    chain = ancestry(pid)
    return len(chain) >= 2 and os.path.basename(chain[1].exe or chain[1].name) in ("sshd", "sshd-session")


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
                 capture: CaptureFactory | None = None, system_socket: Path | None = None,
                 lineage: Lineage | None = None):
        self.home = home
        self.owner_uid = home_owner(home.path)
        self.system_socket = system_socket
        self.device_key = device_key
        self.ledger_link = LedgerLink(home, home.settings().witness, self.publish)
        # One process lineage for the whole agent (kernel events as root, else sampling): capture
        # records from it, the authority asks it whose a peer is. Started in run(), stopped at the end.
        self.lineage = lineage if lineage is not None else Lineage()
        if capture is None:
            def capture(sink, watch_paths, technician_pids, *, redactor=None):
                return capture_factory(sink, watch_paths, technician_pids, lineage=self.lineage, redactor=redactor)
        self.manager = SessionManager(home, device_key, publish=self.publish, consent_timeout=consent_timeout,
                                      capture_factory=capture, login_hooks={"ssh": ssh_lifecycle},
                                      default_watch_paths=default_watch_paths,
                                      end_technician=self.lineage.end_lineage, ledger_hook=self.ledger_link.hook,
                                      end_access=self._end_access, journal_facts={
                                          "mode": "system" if system_socket is not None else "personal",
                                          "key_account": user_name(os.geteuid())})
        self.watchdog = Watchdog(home, self.manager.failclosed, home.settings().guard.timeout_s)
        self.manager.failclosed.technician_processes = self._technician_processes
        self.authority = Authority(owner_uid=self.owner_uid, system=system_socket is not None,
                                   settings=home.settings, lineage=self.lineage)
        self._refusals = RefusalLog()
        self._publishing: PublishWorkerLike | None = None
        self._unattended: UnattendedSink | None = None
        self._subscribers: set[_Subscriber] = set()
        self._connections = 0
        self._stranger_connections: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._handlers = {
            "ping": self._ping, "status": self._status, "request": self._request, "pending": self._pending,
            "decide": self._decide, "wait": self._wait, "end": self._end, "note": self._note,
            "sessions": self._sessions, "device": self._device,
        }

    # --- events -------------------------------------------------------------------------------
    def publish(self, name: str, data: dict) -> None:
        if name == "session-sealed" and self._publishing is not None:
            self._publishing.nudge()  # a sealed bundle leaves the machine now, not at the next round
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
        await asyncio.to_thread(self.lineage.start)
        unattended = UnattendedSink(self.home, self.manager.device_key,
                                    lambda name, data: self._publish_threadsafe(loop, name, data),
                                    on_line=self.ledger_link.hook)
        await self._start_ledger(unattended)  # before any journal is reopened: the restart checks
        await self.manager.start()
        self._unattended = unattended
        await asyncio.to_thread(self._take_back_stale_rights)
        link = asyncio.ensure_future(self.ledger_link.run(
            self.manager.session_live, self.manager.record_live, self.manager.end_live,
            lambda data: unattended.emit(RecordType.ALARM, data)))
        monitor = start_monitor(unattended, self.home.settings().remote_access_interval_s, self.manager.session_live)
        publishing = self._publishing = None
        if self.home.settings().publish.url:
            # imported here: boto3 (~30 MB) is loaded only when this device publishes
            from agent.publish.publisher import Publisher, PublishWorker

            publishing = self._publishing = PublishWorker(lambda: Publisher(self.home),
                                                          ledger_export=_ledger_exporter(self.home))
            publishing.start()  # its own thread: the store never holds up this loop
        retention = RetentionWorker(lambda: Retention(self.home, ledger_hook=self.ledger_link.hook))
        retention.start()
        path = self.home.socket_path
        path.unlink(missing_ok=True)  # left by a crashed agent; the lock says none is running
        servers: list[asyncio.AbstractServer] = [
            await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_MESSAGE + 1, backlog=1024)]
        # 0600 at once (the home itself is 0700); not by umask, which would race other threads' files.
        os.chmod(path, 0o600)
        if self.system_socket is not None:
            servers.append(await self._serve_customers(self.system_socket))
        print(f"chaperone agent: listening on {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
        self.watchdog.ready()
        try:
            await self._stop.wait()
        finally:
            self.publish("agent-stopping", {})
            for server in servers:
                server.close()
            if monitor is not None:
                await asyncio.to_thread(monitor.stop)
            if publishing is not None:
                await asyncio.to_thread(publishing.stop)
            await asyncio.to_thread(retention.stop)
            await self.manager.stop()
            await asyncio.to_thread(self.lineage.stop)
            self.ledger_link.stop()
            await asyncio.gather(link, return_exceptions=True)
            await self.ledger_link.close()  # a last push: the seals just written
            for sub in list(self._subscribers):
                sub.offer(None)
            self._subscribers.clear()
            for server in servers:
                try:
                    await asyncio.wait_for(server.wait_closed(), 5.0)
                except TimeoutError:
                    pass
            path.unlink(missing_ok=True)
            if self.system_socket is not None:
                self.system_socket.unlink(missing_ok=True)
            await self.watchdog.stop()  # sessions are ended: the guard may go
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _end_access(self, session_id: str) -> dict:
        """The technician's access ended by the agent itself: their lineage first (it knows every process,
        detached ones too), then what the guard would end (agent.service.access; the guard is spared)."""
        lineage = self.lineage.end_lineage(session_id)
        result = end_access(self.home, session_id, protect={self.watchdog.guard_pid or 0})
        result["ended"] = lineage.ended + result["ended"]
        result["survivors"] = lineage.survivors + result["survivors"]
        return result

    def _technician_processes(self, session_id: str) -> list[tuple[int, float]]:
        """The session's lineage for the guard's access.json (start times as psutil gives them)."""
        return [(ref.pid, boot_time() + ref.start_ticks / CLK_TCK) for ref in self.lineage.living(session_id)]

    async def _start_ledger(self, unattended: UnattendedSink) -> None:
        """Open the device ledger and check the journals a previous run left open against it."""
        link = self.ledger_link
        await asyncio.to_thread(link.open)
        damaged = link.ledger_problem_alarm()
        if damaged is not None:
            await asyncio.to_thread(unattended.emit, RecordType.ALARM, damaged)
            return
        open_rows = [row["id"] for row in self.manager.history.list()
                     if row.get("state") in ("requested", "allowed", "active", "ended") and not row.get("sealed")]
        journals = [(sid, self.home.journal_path(sid)) for sid in open_rows]
        journals.append((UNATTENDED, self.home.unattended_journal_path))
        findings = await asyncio.to_thread(link.check_journals, journals)
        await asyncio.to_thread(link.record_findings, findings, self.device_key)

    def _publish_threadsafe(self, loop: asyncio.AbstractEventLoop, name: str, data: dict) -> None:
        loop.call_soon_threadsafe(self.publish, name, data)

    def _take_back_stale_rights(self) -> None:
        """sudo given for a session that is not live any more (the agent was killed or crashed) goes now."""
        if os.geteuid() != 0:
            return
        live = {s["id"] for s in [self.manager.status().get("active") or {}] if s.get("id")}
        for sid in ssh_sudo.revoke_all_but(live, str(self.home.path)):
            assert self._unattended is not None
            self._unattended.emit(RecordType.ACCESS, {"what": "sudo", "action": "revoked", "session": sid,
                                                      "detail": f"sudo left by session {sid} was taken back when "
                                                                "the agent started."})

    async def _serve_customers(self, path: Path) -> asyncio.AbstractServer:
        """The customer socket of the system agent: anyone may connect; each operation is checked against
        who the peer is (Authority), not against the socket's permissions."""
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise HomeError(f"Cannot make the customer socket {path}: {exc.strerror}; pass --system-socket "
                            "with a folder the agent may write.") from None
        server = await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_MESSAGE + 1, backlog=1024)
        os.chmod(path, 0o666)
        print(f"chaperone agent: customers connect on {path}", file=sys.stderr, flush=True)
        return server

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
        caller = None
        if msg.op != "ping":
            verdict = await asyncio.to_thread(self.authority.judge, peer)
            if not self.authority.allows(msg.op, verdict.role):
                await self._refused(msg.op, msg.params, peer, verdict)
                return False, protocol.error(msg.id, "forbidden", self.authority.refusal(msg.op, verdict))
            caller = self.authority.caller(peer, verdict)
        if msg.op == "subscribe":
            if self._stop.is_set():
                return False, protocol.error(msg.id, "unavailable", "The agent is stopping.")
            return True, protocol.ok(msg.id, {"subscribed": True})
        try:
            result = await self._handlers[msg.op](msg.params, peer, caller)
        except ApiError as exc:
            return False, protocol.error(msg.id, exc.code, str(exc))
        except ChaperoneError as exc:  # e.g. a journal that cannot be written
            return False, protocol.error(msg.id, "unavailable", str(exc))
        except Exception:  # noqa: BLE001 - a bug must not stop the agent
            log.exception("internal error in %s", msg.op)
            return False, protocol.error(msg.id, "unavailable",
                                        "The agent failed on this request (an internal error; see its log).")
        return False, protocol.ok(msg.id, result)

    async def _refused(self, op: str, params: dict, peer: Peer, verdict: Verdict) -> None:
        """A refused attempt is an alarm: in the live session's journal, else the unattended one."""
        target = params.get("session") if isinstance(params.get("session"), str) else None
        data = self.authority.alarm(op, peer, verdict, target)
        admitted, repeated = self._refusals.admit(peer.pid, time.monotonic())
        if not admitted:
            return
        if repeated:
            data["repeated"] = repeated  # attempts by this process since its last alarm, only counted
        if not self.manager.record_alarm(data) and self._unattended is not None:
            try:
                await asyncio.to_thread(self._unattended.emit, RecordType.ALARM, data)
            except ChaperoneError as exc:
                log.error("could not journal a refused attempt: %s", exc)

    # --- operations -------------------------------------------------------------------------------
    async def _ping(self, params, peer, caller):
        return {"version": __version__, "pid": os.getpid(), "device": self.manager.device_key.fingerprint,
                "mode": "system" if self.system_socket is not None else "personal"}

    async def _status(self, params, peer, caller):
        return {**self.manager.status(), "ledger": self.ledger_link.status()}

    async def _request(self, params, peer, caller):
        if "request_file" in params:
            return await self.manager.submit(request_file=params["request_file"], source="file", caller=caller)
        source = params.get("source", "cli")
        if source not in ("cli", "ssh"):
            raise ApiError("bad-request", "The source must be \"cli\" or \"ssh\".")
        if source == "ssh" and peer.uid not in (0, self.owner_uid):
            # Only ssh-authorize (run by sshd as root) speaks for an SSH login.
            raise ApiError("forbidden", "Only root or the home's owner may submit SSH login requests.")
        return await self.manager.submit(fields=params.get("request"), source=source, caller=caller)

    async def _pending(self, params, peer, caller):
        return self.manager.pending()

    async def _decide(self, params, peer, caller):
        return await self.manager.decide(_session_id(params, required=True), params.get("decision"),
                                         params.get("how", "terminal"), caller,
                                         only=params.get("only"), for_s=params.get("for_s"))

    async def _wait(self, params, peer, caller):
        sid = _session_id(params, required=True)
        result = await self.manager.wait(sid, params.get("timeout", 30), params.get("until", "decided"))
        if (result["state"] == "active" and peer.uid == 0 and self.manager.source_of(sid) == "ssh"
                and await asyncio.to_thread(run_by_sshd, peer.pid)):
            # ssh-authorize (run by sshd as root, from the login's own process) is letting a login in:
            # that login is the technician's from now on, before its shell exists.
            marked = await asyncio.to_thread(self.lineage.mark_parent, peer.pid, sid, peer.start_ticks)
            if marked is not None:
                log.info("session %s: the SSH login %d is the technician's", sid, marked.pid)
        return result

    async def _end(self, params, peer, caller):
        return await self.manager.end(_session_id(params), caller)

    async def _note(self, params, peer, caller):
        return self.manager.note(_session_id(params), params.get("text"), caller)

    async def _device(self, params, peer, caller):
        """What the customer's "This device" view shows (public facts only)."""
        mode = "system" if self.system_socket is not None else "personal"  # as ping says
        ledger = self.ledger_link.ledger
        facts = None
        if ledger is not None:
            status = self.ledger_link.status()
            cosigned = status.get("cosigned") or {}
            facts = {"origin": ledger.origin, "vkey": ledger.vkey, "size": status.get("size"),
                     "cosigned": cosigned.get("at"), "warning": status.get("warning")}
        return await asyncio.to_thread(device_status, self.home, mode, facts)

    async def _sessions(self, params, peer, caller):
        return self.manager.sessions()


def _ledger_exporter(home: Home) -> Callable[[Path], object]:
    """Writes the ledger's export for the publish worker, from a read-only view (the agent's own stays put)."""
    def export(out: Path) -> object:
        with Ledger.open(home, readonly=True) as ledger:
            return ledger.export(out)
    return export


def _session_id(params: dict, required: bool = False) -> str | None:
    sid = params.get("session")
    if sid is None and not required:
        return None
    if not isinstance(sid, str) or not sid or len(sid) > 64:
        raise ApiError("bad-request", "Give the session's id (as 'chaperone pending' or 'status' shows it).")
    return sid


def run_agent(home: Home, consent_timeout: float = 120.0, system_socket: Path | None = None) -> int:
    """``chaperone agent``: run in the foreground until SIGTERM or SIGINT; 0 on a clean stop."""
    check_socket_path(home)
    device_key, _ = DeviceKey.init(home)
    home.settings()  # a broken settings file stops the agent now, not at the first request
    logging.basicConfig(level=logging.INFO, format="chaperone agent: %(levelname)s %(message)s", stream=sys.stderr)
    _raise_fd_limit()
    with AgentLock(home):
        async def main() -> None:
            await AgentService(home, device_key, consent_timeout=consent_timeout, system_socket=system_socket).run()

        asyncio.run(main())
    print("chaperone agent: stopped.", file=sys.stderr, flush=True)
    return 0
