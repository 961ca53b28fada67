"""The guard: a process apart from the agent that ends the technician's access when recording stops.

``chaperone agent`` starts it before it serves (``agent.service.watchdog``),
as ``python -m agent.service.guard``, in a session and process group of its
own: ``kill -9 <agent pid>``, or a signal to the agent's process group,
does not reach it. Two pipes join them, one line per message:

- agent -> guard: ``H <session>`` (or ``H -``) every 0.5 s from the agent's
  event loop, naming the live session; ``S`` when the agent stops cleanly
  (it has ended its sessions itself); ``X`` when it exits otherwise (an error);
- guard -> agent: ``G`` every 0.5 s (the guard runs); ``T <signal> <pid>
  <uid>`` when someone sent the guard a signal; ``A <session>`` when it ended
  the technician's access.

During a live session the guard ends the technician's access
(``agent.service.access.end_access``) and leaves a report in the session's
folder (``agent.session.access``) when

- the beat pipe ends without ``S``: the agent was killed or crashed (cause
  ``killed``; ``exited`` when it said ``X`` first); the guard then exits;
- the agent is stopped (SIGSTOP, a debugger: state T in /proc) for
  ``STOPPED_S``, cause ``stopped``; or sends no beat for ``timeout`` seconds
  (a hung loop), cause ``hung``. It goes on watching: if the agent runs
  again, it journals the gap.

It blocks the signals that would end or stop it quietly (TERM, INT, HUP,
QUIT, USR1, USR2, ALRM, TSTP, TTIN, TTOU) and tells the agent who sent them;
while the agent is silent such a signal makes it act at once, then exit. As
root it is not dumpable (no ptrace, /proc/<pid>/mem by its own uid) and the
OOM killer's last choice. In turn the agent watches the guard, and a guard
that dies or stops answering is an alarm and the session fails closed.

What it cannot stop: SIGKILL and SIGSTOP cannot be blocked, so someone who
can signal both processes (root, or the agent's own account in personal
mode) can kill or stop both at once, e.g. ``kill -9 <agent> <guard>``;
nothing in the same machine under the same root can prevent that. Under
systemd, its watchdog (``WatchdogSec``) still restarts a stopped or killed
agent, whose recovery records the gap; the guard narrows what a technician
can do unrecorded, it does not make it impossible for root.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import re
import select
import signal
import sys
import time
from pathlib import Path

from agent.clock import rfc3339_from_timestamp
from agent.home import Home
from agent.service.access import ancestors, end_access, process_table, read_proc
from agent.session.access import write_report

POLL_S = 0.1
BEAT_S = 0.5
STOPPED_S = 1.0
ZOMBIE_WAIT_S = 0.3  # after the agent's end: how long to look for its exit status
BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PR_SET_DUMPABLE = 4


def say(text: str) -> None:
    print(f"chaperone guard: {text}", file=sys.stderr, flush=True)


def harden() -> None:
    """Keep ourselves out of reach of what would end us quietly."""
    os.chdir("/")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    if sys.platform.startswith("linux"):
        try:  # not dumpable: no ptrace and no /proc/<pid>/mem for our own (non-root) uid
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        try:  # the out-of-memory killer's last choice (root only)
            Path("/proc/self/oom_score_adj").write_text("-1000")
        except OSError:
            pass


def how_it_ended(pid: int) -> tuple[str, str]:
    """(cause, detail) of the agent's end, from its exit status while it is a zombie, when we can see it."""
    deadline = time.monotonic() + ZOMBIE_WAIT_S
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            break  # already collected by its parent
        if fields[0] == b"Z" and len(fields) >= 50:
            status = int(fields[49])
            if status & 0x7F:
                number = status & 0x7F
                return "killed", f"killed by {signal.Signals(number).name if number < 65 else number}"
            return "exited", f"exited with status {status >> 8} without ending the session"
        time.sleep(0.01)
    return "killed", ("ended without a word (a signal such as SIGKILL, or the out-of-memory killer; its exit "
                      "status was collected before it could be read)")


class Guard:
    def __init__(self, home: Home, agent_pid: int, beat_fd: int, back_fd: int, timeout: float):
        self.home = home
        self.agent_pid = agent_pid
        self.beat_fd = beat_fd
        self.back_fd = back_fd
        self.timeout = timeout
        self.session: str | None = None
        self.last_beat = time.monotonic()
        self.last_beat_wall = time.time()
        self.stopping = False
        self.exited = False  # the agent said it exits (without ending its sessions)
        self.acted = False  # for the current stall
        self.stopped_since: float | None = None
        self._buf = b""
        self._next_back = 0.0
        # the agent's parents (a service manager, a terminal, a tray) are never the technician's, even if
        # access.json names them: known now, while the agent runs, for when it is gone
        self.spare = ancestors({agent_pid}, process_table())

    def run(self) -> int:
        self.tell("G")
        while True:
            ready, _, _ = select.select([self.beat_fd], [], [], POLL_S)
            if ready and not self._read():
                if not self.stopping and self.session:
                    cause, detail = how_it_ended(self.agent_pid)
                    if self.exited:
                        cause = "exited"
                    self.act(cause, f"The agent (pid {self.agent_pid}) {detail}.")
                return 0
            self._signals()
            self._watch()
            now = time.monotonic()
            if now >= self._next_back:
                self._next_back = now + BEAT_S
                self.tell("G")

    # --- input ---------------------------------------------------------------------------------------
    def _read(self) -> bool:
        """Read what the agent sent; False at end of file."""
        try:
            data = os.read(self.beat_fd, 65536)
        except InterruptedError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.startswith(b"H"):
                word = line[1:].strip().decode("ascii", "replace")
                self.session = word if _SESSION.fullmatch(word) else None
                self.last_beat, self.last_beat_wall = time.monotonic(), time.time()
                self.acted = False
                self.stopped_since = None
            elif line == b"S":
                self.stopping = True
            elif line == b"X":
                self.exited = True
        self._buf = self._buf[-4096:]
        return True

    def _signals(self) -> None:
        while True:
            try:
                info = signal.sigtimedwait(BLOCKED, 0)
            except InterruptedError:
                continue
            if info is None:
                return
            name = signal.Signals(info.si_signo).name
            say(f"{name} from pid {info.si_pid} (uid {info.si_uid}); the guard stays while the agent runs.")
            self.tell(f"T {info.si_signo} {info.si_pid} {info.si_uid}")
            if time.monotonic() - self.last_beat > 2 * BEAT_S + POLL_S and info.si_signo in (
                    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
                # asked to go while the agent is silent: do our job first (systemd's stop of a dead unit)
                if self.session and not self.stopping and not self.acted:
                    self.act("hung", f"The guard was told to stop ({name}) while the agent (pid {self.agent_pid}) "
                                     "was not answering.")
                raise SystemExit(0)

    def _watch(self) -> None:
        if not self.session or self.stopping or self.acted:
            return
        now = time.monotonic()
        proc = read_proc(self.agent_pid, 0.0)
        if proc is not None and proc.state in ("T", "t"):
            self.stopped_since = self.stopped_since or now
            if now - self.stopped_since >= STOPPED_S:
                self.act("stopped", f"The agent (pid {self.agent_pid}) was stopped "
                                    f"({'traced by a debugger' if proc.state == 't' else 'SIGSTOP'}).")
                return
        else:
            self.stopped_since = None
        if now - self.last_beat >= self.timeout:
            self.act("hung", f"The agent (pid {self.agent_pid}) sent no heartbeat for {self.timeout:g} s.")

    # --- output ---------------------------------------------------------------------------------------
    def tell(self, line: str) -> None:
        try:
            os.write(self.back_fd, line.encode("ascii") + b"\n")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE):
                raise

    def act(self, cause: str, detail: str) -> None:
        """End the technician's access to the live session, and leave a report for the agent."""
        self.acted = True
        session = self.session or ""
        started = time.time()
        try:
            access = end_access(self.home, session, protect={self.agent_pid}, spare=self.spare)
        except Exception as exc:  # noqa: BLE001 - whatever failed, say it and keep guarding
            access = {"error": f"{type(exc).__name__}: {exc}", "ended": [], "survivors": []}
        report = {"cause": cause, "detail": detail, "session": session, "agent_pid": self.agent_pid,
                  "last_beat": rfc3339_from_timestamp(self.last_beat_wall), "acted": rfc3339_from_timestamp(started),
                  "access": access}
        say(f"{detail} Ended the technician's access to session {session}: {len(access.get('ended', []))} "
            f"process(es) ended, {len(access.get('survivors', []))} still running "
            f"({(time.time() - started) * 1000:.0f} ms).")
        try:
            write_report(self.home.session_dir(session), report)
        except OSError as exc:
            say(f"cannot leave the report for the agent ({exc.strerror or exc}).")
        self.tell(f"A {session}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaperone-guard", description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--agent-pid", type=int, required=True)
    parser.add_argument("--beat-fd", type=int, required=True)
    parser.add_argument("--back-fd", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    harden()
    os.set_blocking(args.back_fd, False)
    guard = Guard(Home.at(args.home), args.agent_pid, args.beat_fd, args.back_fd, args.timeout)
    try:
        return guard.run()
    except SystemExit as done:
        return int(done.code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
