"""Ending a technician's access to a session at once: the one routine the guard and the agent share.

``end_access(home, session_id)`` finds the session's technician processes
without asking anyone:

- the sshd processes of the logins ssh-authorize let in for the session
  (``HOME/ssh/logins.json``, read without its lock: ssh-authorize may hold
  the lock while it waits for a stalled agent, and the file is only ever
  replaced whole);
- the processes the agent last wrote in the session's ``access.json``;

and everything that descends from them now, and takes back the sudo rights
the session's ``admin`` grant gave (``agent.ssh.sudo``: its drop-in in
``/etc/sudoers.d``, as root). It stops the processes first
(SIGSTOP, repeated until no new child appears, so nothing can fork away
while they are ended), then kills them (SIGKILL) and waits a moment. Ending
an sshd login process closes that SSH connection. A process is only touched
if its start time is the one recorded (a reused pid is left alone), and
never pid 1, the caller, the pids in ``protect``, nor an ancestor of any of
them (the agent's parent, the service manager, a test runner): a list in
``access.json`` that names too much (a lineage that took in more than the
technician's) must not take the machine down with the technician. Only an
sshd login that ssh-authorize recorded for the session is ended even when
it is an ancestor (a technician who started the agent from their own shell).

New logins need no action here: ssh-authorize refuses every login when the
agent does not answer (every call it makes has a time-out), and a session
that failed closed is no longer active.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from agent.clock import rfc3339_from_timestamp
from agent.home import Home
from agent.session.access import read_access
from agent.ssh import sudo
from agent.ssh.state import LoginRecord, LoginState

FREEZE_ROUNDS = 8
GONE_WAIT_S = 2.0
POLL_S = 0.02
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    start: float  # Unix time, as psutil's create_time
    name: str


def boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0


def read_proc(pid: int, boot: float) -> Proc | None:
    """One process from ``/proc/<pid>/stat`` (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    left, right = raw.find(b"("), raw.rfind(b")")
    fields = raw[right + 2:].split()
    try:
        return Proc(pid, int(fields[1]), fields[0].decode(), boot + int(fields[19]) / _TICKS,
                    raw[left + 1:right].decode("utf-8", "replace"))
    except (IndexError, ValueError):
        return None


def process_table() -> dict[int, Proc]:
    boot = boot_time()
    table: dict[int, Proc] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit():
            proc = read_proc(int(name), boot)
            if proc is not None:
                table[proc.pid] = proc
    return table


def _same(proc: Proc | None, start: float) -> bool:
    return proc is not None and abs(proc.start - start) < 0.05 and proc.state not in ("Z", "X")


def ssh_logins(home: Home, session_id: str) -> list[tuple[int, float]]:
    """The sshd login processes ssh-authorize recorded for the session (read without the lock)."""
    try:
        data = json.loads(LoginState(home).path.read_text(encoding="utf-8"))
        records = [LoginRecord.from_json(r) for r in data["records"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [(ref.pid, ref.started) for record in records if record.id == session_id for ref in record.sshd]


def ancestors(pids: set[int], table: dict[int, Proc]) -> set[int]:
    """Every ancestor of ``pids`` that is in ``table``."""
    found: set[int] = set()
    for pid in pids:
        proc = table.get(pid)
        while proc is not None and proc.ppid not in found and proc.ppid > 0:
            found.add(proc.ppid)
            proc = table.get(proc.ppid)
    return found


def _tree(roots: list[tuple[int, float]], table: dict[int, Proc], protect: set[int]) -> set[int]:
    found = {pid for pid, start in roots if pid not in protect and _same(table.get(pid), start)}
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found and child not in protect and table[child].state not in ("Z", "X"):
                found.add(child)
                stack.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def end_access(home: Home, session_id: str, protect: set[int] | frozenset[int] = frozenset(),
               sudoers: Path = sudo.SUDOERS_D, spare: set[int] | frozenset[int] = frozenset()) -> dict:
    """Stop and kill the session's technician processes, take back its sudo; what was ended and what survived.
    ``spare``: more processes never to touch, with their ancestors (the guard passes the agent's, known
    from its start, when the agent itself is gone)."""
    table = process_table()
    never = {0, 1, os.getpid(), *protect}
    keep = never | set(spare) | ancestors(never | set(spare), table)
    logins = ssh_logins(home, session_id)
    listed = read_access(home.session_dir(session_id), session_id)
    frozen: dict[int, Proc] = {}
    for _ in range(FREEZE_ROUNDS):
        new = (_tree(logins, table, never) | _tree(listed + [(p.pid, p.start) for p in frozen.values()], table, keep))
        new -= set(frozen) | never
        new = {pid for pid in new if pid not in keep or any(pid == login for login, _ in logins)}
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
            frozen[pid] = table[pid]
        table = process_table()
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    boot = boot_time()
    deadline = time.monotonic() + GONE_WAIT_S
    alive = dict(frozen)
    while alive and time.monotonic() < deadline:
        alive = {pid: p for pid, p in alive.items() if _same(read_proc(pid, boot), p.start)}
        if alive:
            time.sleep(POLL_S)
    return {
        "logins": len(logins),
        "ended": [_describe(p) for pid, p in sorted(frozen.items()) if pid not in alive],
        "survivors": [_describe(p) for _, p in sorted(alive.items())],
        "sudo_revoked": _revoke_sudo(session_id, sudoers),
    }


def _revoke_sudo(session_id: str, folder: Path) -> bool:
    """Whether a sudoers drop-in of the session was there, and is gone now."""
    try:
        return sudo.revoke(session_id, folder)
    except (sudo.SudoError, OSError):
        return False


def _describe(p: Proc) -> dict:
    return {"pid": p.pid, "process": p.name, "started": rfc3339_from_timestamp(p.start)}
