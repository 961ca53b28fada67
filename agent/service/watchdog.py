"""The agent's side of failing closed: heartbeats to the guard and to systemd, and watching the guard.

One task on the agent's event loop, every ``BEAT_S`` (0.5 s):

- writes ``H <live session>`` to the guard (``agent.service.guard``) and,
  under systemd, ``WATCHDOG=1`` to ``$NOTIFY_SOCKET`` (``READY=1`` once the
  agent serves, ``STOPPING=1`` when it stops; a plain datagram, as
  sd_notify(3) does it). Both come from the loop itself, so a hung loop or a
  stopped process stops them: the guard ends the technician's access, and
  systemd (``WatchdogSec=``) kills and restarts the agent;
- notices that the loop itself did not run for a while (the agent was
  stopped, or hung) and has the session record the gap
  (``FailClosed.note_gap``);
- lets the session check its journal and capture (``FailClosed.tick``);
- watches the guard: one that dies, or sends nothing for the timeout, is an
  alarm, the session fails closed, and a new guard is started.

The guard is started by :meth:`Watchdog.start`, before the agent recovers
or serves anything, and must say it runs (its first ``G``) within
``START_TIMEOUT_S``; otherwise the agent does not start.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from agent.errors import ChaperoneError
from agent.home import Home
from agent.service.access import read_proc
from agent.session.failclosed import FailClosed

log = logging.getLogger("chaperone.agent")

BEAT_S = 0.5
STALL_S = 2.0  # a loop that did not run for this long was stalled: a gap record
START_TIMEOUT_S = 15.0
STOP_WAIT_S = 5.0


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the guard could not be started again: %s", task.exception())


class SdNotify:
    """sd_notify(3) without libsystemd: a datagram to ``$NOTIFY_SOCKET``; nothing when not under systemd."""

    def __init__(self, environ: dict | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or ""
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s = int(usec) / 1e6 if usec and usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        self._sock: socket.socket | None = None

    @property
    def active(self) -> bool:
        return bool(self.address)

    def notify(self, text: str) -> None:
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode("ascii"), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", self.address, exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Owns the guard process and the heartbeat task of one running agent."""

    def __init__(self, home: Home, failclosed: FailClosed, timeout_s: float):
        self.home = home
        self.failclosed = failclosed
        self.timeout_s = timeout_s
        self.sd = SdNotify()
        # systemd wants a beat at least every WatchdogSec; we send one at least twice as often
        self.beat_s = min(BEAT_S, self.sd.watchdog_s / 2) if self.sd.watchdog_s else BEAT_S
        self.guard: subprocess.Popen | None = None
        self._beat_w = self._back_r = -1
        self._back_buf = b""
        self._guard_seen = 0.0
        self._guard_ready: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._restarting: asyncio.Future | None = None
        self._last_gap = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def guard_pid(self) -> int | None:
        return self.guard.pid if self.guard is not None else None

    # --- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._start_guard()
        self._task = asyncio.ensure_future(self._beat())
        atexit.register(self._last_word)

    def _last_word(self) -> None:
        """At an exit that is not a clean stop (an error), tell the guard: it was not killed."""
        if not self._stopping:
            self._write(b"X\n")

    def ready(self) -> None:
        self.sd.notify("READY=1\nSTATUS=serving")

    async def stop(self) -> None:
        """The agent stops cleanly (its sessions are ended): tell the guard, let it go."""
        self._stopping = True
        self.sd.notify("STOPPING=1")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write(b"S\n")
        atexit.unregister(self._last_word)
        self._forget_reader()
        await asyncio.to_thread(self._stop_guard)
        self.sd.close()

    # --- the guard ----------------------------------------------------------------------------------
    async def _start_guard(self) -> None:
        beat_r, beat_w = os.pipe()
        back_r, back_w = os.pipe()
        try:
            self.guard = subprocess.Popen(
                [sys.executable, "-m", "agent.service.guard", "--home", str(self.home.path),
                 "--agent-pid", str(os.getpid()), "--beat-fd", str(beat_r), "--back-fd", str(back_w),
                 "--timeout", f"{self.timeout_s:g}"],
                pass_fds=(beat_r, back_w), start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, cwd="/",
            )
        except OSError as exc:
            for fd in (beat_r, beat_w, back_r, back_w):
                os.close(fd)
            raise ChaperoneError(f"The agent's guard could not be started ({exc.strerror or exc}); without it the "
                                 "technician's access would not end if the agent stopped, so the agent does "
                                 "not start.") from None
        self._guard_seen = time.monotonic()  # a starting guard gets its full timeout to say it runs
        os.close(beat_r)
        os.close(back_w)
        os.set_blocking(beat_w, False)
        os.set_blocking(back_r, False)
        self._beat_w, self._back_r = beat_w, back_r
        self._guard_ready = asyncio.Event()
        assert self._loop is not None  # start() sets it first
        self._loop.add_reader(back_r, self._from_guard)
        try:
            await asyncio.wait_for(self._guard_ready.wait(), START_TIMEOUT_S)
        except TimeoutError:
            self._forget_reader()
            self._stop_guard(kill=True)
            raise ChaperoneError(f"The agent's guard did not start within {START_TIMEOUT_S:g} s; the agent does "
                                 "not start without it.") from None
        self._guard_seen = time.monotonic()
        log.info("guard running (pid %d)", self.guard.pid)

    def _forget_reader(self) -> None:
        """Stop listening to the guard (on the loop's thread)."""
        if self._loop is not None and self._back_r >= 0:
            with contextlib.suppress(Exception):  # the loop may be closing
                self._loop.remove_reader(self._back_r)

    def _stop_guard(self, kill: bool = False) -> None:
        """Close our ends of the pipes and wait for the guard to exit (killing it first with ``kill``)."""
        for fd in (self._beat_w, self._back_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._beat_w = self._back_r = -1
        guard, self.guard = self.guard, None
        if guard is None:
            return
        if kill:
            with contextlib.suppress(OSError):
                guard.kill()
        try:
            guard.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()

    def _from_guard(self) -> None:
        try:
            data = os.read(self._back_r, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._guard_gone("ended")
            return
        self._guard_seen = time.monotonic()
        self._back_buf += data
        *lines, self._back_buf = self._back_buf.split(b"\n")
        self._back_buf = self._back_buf[-4096:]
        for line in lines:
            if line == b"G" and self._guard_ready is not None:
                self._guard_ready.set()
            elif line.startswith(b"A "):
                self._gap(time.time() - self.timeout_s, time.time(), only_reports=True)
            elif line.startswith(b"T "):
                self._signalled(line.decode("ascii", "replace").split()[1:])

    def _signalled(self, words: list[str]) -> None:
        if self._stopping or len(words) != 3 or not all(w.isdigit() for w in words):
            return
        signo, pid, uid = (int(w) for w in words)
        if pid == 1 or pid == os.getpid():
            return  # systemd stopping the unit, or ourselves
        proc = read_proc(pid, 0.0)
        name = signal.Signals(signo).name if signo in signal.valid_signals() else str(signo)
        self.failclosed.guard_signalled(
            f"Process {pid} ({proc.name if proc else 'gone'}, uid {uid}) sent {name} to the agent's guard.")

    def _guard_gone(self, how: str) -> None:
        if self._stopping:
            return
        pid = self.guard_pid
        status = None
        if self.guard is not None:
            try:  # its pipe ends a moment before it can be collected: wait that moment for its status
                status = self.guard.wait(0.5 if how == "ended" else 0)
            except subprocess.TimeoutExpired:
                pass
        if status is not None and status < 0:
            how = f"was killed by {signal.Signals(-status).name}"
        elif status is not None:
            how = f"exited with status {status}"
        self._forget_reader()
        self._stop_guard(kill=True)
        detail = f"The agent's guard (pid {pid}) {how}; a new one is started."
        log.warning("%s", detail)
        self.failclosed.guard_lost(detail)
        self._restart_guard()

    def _restart_guard(self) -> None:
        if self._restarting is not None and not self._restarting.done():
            return
        self._restarting = asyncio.ensure_future(self._start_guard())
        self._restarting.add_done_callback(_log_failure)

    # --- the heartbeat ----------------------------------------------------------------------------
    def _write(self, line: bytes) -> None:
        if self._beat_w < 0:
            return
        try:
            os.write(self._beat_w, line)
        except BlockingIOError:
            pass  # the guard is not reading (stopped): it will act on its own silence, or we on its
        except OSError:
            pass  # gone: the back pipe says so

    def _gap(self, since: float, until: float, only_reports: bool = False) -> None:
        if time.monotonic() - self._last_gap < STALL_S:
            return  # this stall was recorded already (the guard's word and our own lag both tell of it)
        self._last_gap = time.monotonic()
        self.failclosed.note_gap(since, until, only_reports=only_reports)

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.beat_s)
            now = time.monotonic()
            if self._back_r >= 0:
                self._from_guard()  # what the guard said while we were not running, before judging it
            if now - last >= STALL_S:
                self._guard_seen = max(self._guard_seen, now)  # we were away, not the guard
                self._gap(time.time() - (now - last), time.time())
            last = now
            self._write(f"H {self.failclosed.live_id() or '-'}\n".encode("ascii"))
            self.sd.notify("WATCHDOG=1")
            try:
                self.failclosed.tick()
            except Exception:  # noqa: BLE001 - the heartbeat must go on; the session's own checks log
                log.exception("checking the live session failed")
            if self.guard is not None and now - self._guard_seen > self.timeout_s:
                proc = read_proc(self.guard.pid, 0.0)
                self._guard_gone("is stopped" if proc is not None and proc.state in ("T", "t")
                                 else f"sent nothing for {self.timeout_s:g} s")
            elif self.guard is None and not self._stopping:
                self._restart_guard()  # a restart that failed: try again
