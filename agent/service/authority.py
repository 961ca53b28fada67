"""Who is on the other end of a connection, and what they may do: consent only the customer can give.

Every connection's peer is established once, from the kernel: its uid and
pid (SO_PEERCRED), then its process: the lineage (a technician's login and
everything forked from it since, detached or not, as
``agent.capture.lineage`` knows it from the kernel's process events), and its
ancestry now (a remote-login daemon such as sshd, a scheduler such as cron).
From that, one role:

- ``technician``: a process of a technician's lineage, or of any remote login
  (over SSH, RDP, telnet…): it may ask (``request``), wait, add a note and end
  its own session (recorded as the technician's), never decide;
- ``customer``: a local process of a person who may decide for this computer
  (settings ``consent.customers``; by default the users with a local session,
  and in personal mode the agent's own user and root), not started by a
  scheduler: it may do everything;
- ``other``: anyone else: ``ping``, ``status``, ``request``, ``wait``.

A refused operation is answered ``forbidden`` and is an alarm, naming the
process, its lineage and what it tried (``Authority.refusal``).

What this cannot promise, said plainly: someone controlling the customer's
screen (GUI remote control) clicks as the customer; a process started while
no agent watched, and detached before it started, is known only by its
ancestry then; without root (personal mode) lineage is sampled, so a
fork-and-detach between two samples can escape it.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.api.peercred import Peer
from agent.api.protocol import OPEN_OPS, OPS
from agent.session.caller import Caller
from agent.settings import Settings
from agent.text import escape

TECHNICIAN_OPS = frozenset(OPEN_OPS | {"note", "end"})
CUSTOMER_OPS = frozenset(OPS)
# Programs whose children are remote logins: a process below one of these is not at the machine.
REMOTE_DAEMONS = frozenset({
    "sshd", "sshd-session", "sshd-auth", "dropbear", "xrdp", "xrdp-sesman", "in.telnetd", "telnetd", "in.rlogind",
    "rlogind", "in.rshd", "rshd", "teleport", "x2goagent", "x2goruncommand", "guacd",
})
# Programs that run jobs someone set up earlier: a job is never the customer deciding now.
SCHEDULERS = frozenset({"cron", "crond", "atd", "anacron", "systemd-run"})
_MAX_ANCESTRY = 64


class LineageView(Protocol):
    """What the authority asks the process lineage (agent.capture.lineage.Lineage)."""

    how: str

    def owner(self, pid: int, start_ticks: int | None = None) -> str | None: ...

    def describe(self, pid: int, start_ticks: int | None = None) -> dict | None: ...


@dataclass(frozen=True)
class Ancestor:
    pid: int
    name: str
    exe: str | None
    uid: int | None


def ancestry(pid: int, proc: Path = Path("/proc"), start_ticks: int | None = None) -> list[Ancestor]:
    """``pid`` and its parents now, nearest first (what /proc says at this moment); empty when ``pid`` is not
    the process that started at ``start_ticks`` any more (it exited and the pid was reused)."""
    chain: list[Ancestor] = []
    while pid > 0 and len(chain) < _MAX_ANCESTRY:
        try:
            stat = (proc / str(pid) / "stat").read_text()
            status = (proc / str(pid) / "status").read_text()
        except OSError:
            break
        # stat: "pid (comm) state ppid ..." where comm may hold spaces and parentheses
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ppid = int(fields[1])
        if not chain and start_ticks is not None and int(fields[19]) != start_ticks:
            return []
        uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), None)
        try:
            exe: str | None = os.readlink(proc / str(pid) / "exe")
        except OSError:
            exe = None
        chain.append(Ancestor(pid, name, exe, uid))
        pid = ppid
    return chain


def _program(a: Ancestor) -> str:
    base = os.path.basename(a.exe) if a.exe else a.name
    return base.removesuffix(" (deleted)")


def controlling_tty(pid: int, proc: Path = Path("/proc")) -> str | None:
    """``pts/3``, ``tty1``… for the process's controlling terminal, or None."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        tty_nr = int(fields[4])
    except (OSError, IndexError, ValueError):
        return None
    if tty_nr == 0:
        return None
    major, minor = os.major(tty_nr), os.minor(tty_nr)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4 and minor < 64:
        return f"tty{minor}"
    return f"tty {major}:{minor}"


UNSET_SESSION = 4294967295  # the audit session of a process no login gave one


def audit_session(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The audit login session (``/proc/PID/sessionid``, set by pam_loginuid at each login and inherited
    through setsid, nohup and double forks), or None when unset or unreadable."""
    try:
        value = int((proc / str(pid) / "sessionid").read_text())
    except (OSError, ValueError):
        return None
    return None if value == UNSET_SESSION else value


def remote_sessions(proc: Path = Path("/proc")) -> set[int]:
    """The audit sessions of the remote logins alive now: those of sshd's (and other remote daemons')
    per-connection processes."""
    found: set[int] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            comm = (proc / pid / "comm").read_text().strip()
        except OSError:
            continue
        if comm in REMOTE_DAEMONS:
            session = audit_session(int(pid), proc)
            if session is not None:
                found.add(session)
    return found


def local_session_users(run: Path = Path("/run/systemd/sessions")) -> set[str]:
    """The users with a local graphical or console session, as logind records them (none without logind)."""
    users: set[str] = set()
    try:
        entries = list(run.iterdir())
    except OSError:
        return users
    for entry in entries:
        try:
            fields = dict(line.split("=", 1) for line in entry.read_text().splitlines() if "=" in line)
        except (OSError, ValueError):
            continue
        if fields.get("REMOTE") == "0" and fields.get("TYPE") in ("x11", "wayland", "tty", "mir") \
                and fields.get("CLASS", "user") == "user" and fields.get("USER"):
            users.add(fields["USER"])
    return users


def _uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@dataclass(frozen=True)
class Verdict:
    """The role of a peer and why (for the decision's provenance and for a refusal's alarm)."""

    role: str
    why: str
    how: str
    lineage: dict | None
    chain: list[Ancestor]


class Authority:
    """Establishes each peer's role and checks each operation against it."""

    def __init__(self, *, owner_uid: int, system: bool, settings: Callable[[], Settings],
                 lineage: LineageView | None = None, proc: Path = Path("/proc"),
                 local_users: Callable[[], set[str]] = local_session_users):
        self.owner_uid = owner_uid
        self.system = system
        self._settings = settings
        self._lineage = lineage
        self._proc = proc
        self._local_users = local_users
        # Remote logins' audit sessions seen so far: a process detached from an SSH login keeps its session
        # after the login itself is gone. Bounded; the newest are kept.
        self._remote_sessions: dict[int, None] = {}

    def customers(self) -> set[int]:
        """The uids that may decide: ``consent.customers``; else the users with a local session (system
        mode) or the agent's own user and root (personal mode)."""
        try:
            named: Iterable[str] | None = self._settings().consent.customers
        except Exception:  # noqa: BLE001 - a broken settings file must not widen who may decide
            named = ()
        if named is None:
            if not self.system:
                return {self.owner_uid, 0}
            named = self._local_users()
        return {uid for name in named if (uid := _uid_of(name)) is not None}

    def judge(self, peer: Peer) -> Verdict:
        """The peer's role, from the kernel's facts about its process (runs /proc reads: call off the loop)."""
        chain = ancestry(peer.pid, self._proc, peer.start_ticks) if peer.pid > 0 else []
        if not chain:
            return Verdict("other", "its process is gone, so who it was cannot be known", "ancestry", None, chain)
        lineage = None
        how = "ancestry"
        if self._lineage is not None:
            how = self._lineage.how
            label = self._lineage.owner(peer.pid, peer.start_ticks)
            if label is not None:
                lineage = self._lineage.describe(peer.pid, peer.start_ticks)
                return Verdict("technician", f"it belongs to a technician's login ({label})", how, lineage, chain)
        remote = next((a for a in chain[1:] if _program(a) in REMOTE_DAEMONS), None)
        if remote is not None:
            return Verdict("technician", f"it was started by a remote login ({_program(remote)}, pid {remote.pid})",
                           "ancestry", lineage, chain)
        session = audit_session(peer.pid, self._proc)
        if session is not None:
            for seen in remote_sessions(self._proc):
                self._remote_sessions[seen] = None
            while len(self._remote_sessions) > 4096:
                self._remote_sessions.pop(next(iter(self._remote_sessions)))
            if session in self._remote_sessions:
                return Verdict("technician", f"it belongs to a remote login's session (audit session {session})",
                               "audit-session", lineage, chain)
        if peer.uid not in self.customers():
            return Verdict("other", f"{peer.user} is not one of the people who decide for this computer",
                           how, lineage, chain)
        scheduler = next((a for a in chain[1:] if _program(a) in SCHEDULERS), None)
        if scheduler is not None:
            return Verdict("other", f"it was started by a scheduler ({_program(scheduler)}), not at the machine",
                           "ancestry", lineage, chain)
        if len(chain) >= 2 and chain[1].pid == 1 and _program(chain[1]) == "systemd":
            return Verdict("other", "it was started by the service manager (a system unit), not at the machine",
                           "ancestry", lineage, chain)
        return Verdict("customer", "a local process of the customer", how, lineage, chain)

    def caller(self, peer: Peer, verdict: Verdict) -> Caller:
        me = verdict.chain[0] if verdict.chain else None
        where: dict = {"how": verdict.how}
        tty = controlling_tty(peer.pid, self._proc)
        if tty:
            where["tty"] = tty
        where["remote"] = verdict.role == "technician"
        return Caller(uid=peer.uid, user=peer.user, pid=peer.pid, role=verdict.role,
                      exe=me.exe if me else None, where=where)

    @staticmethod
    def allows(op: str, role: str) -> bool:
        if role == "customer":
            return op in CUSTOMER_OPS
        if role == "technician":
            return op in TECHNICIAN_OPS
        return op in OPEN_OPS

    @staticmethod
    def refusal(op: str, verdict: Verdict) -> str:
        """The sentence a refused caller reads."""
        if verdict.role == "technician":
            return (f"Refused: only the customer at this computer may use '{op}', and this process is not "
                    f"theirs ({verdict.why}). The attempt is recorded.")
        return f"Refused: '{op}' is for the customer at this computer ({verdict.why}). The attempt is recorded."

    @staticmethod
    def alarm(op: str, peer: Peer, verdict: Verdict, target: str | None) -> dict:
        """The alarm record of a refused attempt: the process, its lineage, what it tried."""
        me = verdict.chain[0] if verdict.chain else None
        what = f"{op} {escape(target)}" if target else op
        return {
            "tool": "chaperone",
            "kind": "refused-attempt",
            "op": op,
            "target": target,
            "pid": peer.pid,
            "uid": peer.uid,
            "user": peer.user,
            "process": me.exe if me and me.exe else (me.name if me else None),
            "role": verdict.role,
            "connections": [],
            "lineage": verdict.lineage or {"how": verdict.how,
                                           "chain": [{"pid": a.pid, "exe": a.exe or a.name} for a in verdict.chain]},
            "detail": f"A process of {peer.user} (pid {peer.pid}) tried '{what}' and was refused: {verdict.why}.",
        }
