"""What the agent's session manager calls for sessions whose request came from SSH.

``session`` is the manager's view of the session: its summary (``id``,
``until``, …), ``source``, ``ssh`` (``user``, ``key_fingerprint``,
``key_type``) and ``home`` (the home folder's path; without it the
``CHAPERONE_HOME`` / default home is used).

- ``technician_pids(session)``: the sshd processes of the logins that
  ssh-authorize let in for this session (as recorded in ``HOME/ssh``), and
  all their descendants: the technician's shells and commands.
- ``on_session_ended(session, settings, emit)``: by default ends those
  connections (SIGTERM to each login's sshd process tree, SIGKILL to what is
  left after a few seconds); with ``"ssh": {"on_session_end": "warn"}`` it
  leaves them and raises an ``alarm`` for the customer instead. Either way an
  ``ssh-connections`` record says what was found and done, and the login's
  memory is dropped so that the key needs a new consent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import psutil

from agent.home import Home
from agent.records import RecordType
from agent.settings import Settings
from agent.ssh import sudo
from agent.ssh.state import LoginState, ProcessRef

TERMINATE_WAIT_S = 3.0
POLL_S = 0.05


def _home(session: dict) -> Home:
    return Home.at(session.get("home"))


def _logins(session: dict) -> list[psutil.Process]:
    """The live sshd processes of this session's logins."""
    session_id = session.get("id")
    if not session_id:
        return []
    try:
        with LoginState(_home(session)).open(write=False) as book:
            record = book.for_session(session_id)
            refs: list[ProcessRef] = list(record.sshd) if record else []
    except OSError:
        return []
    return [proc for proc in (ref.process() for ref in refs) if proc is not None]


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def technician_pids(session: dict) -> set[int]:
    """Pids of the technician's sshd login processes and everything they started."""
    return {p.pid for login in _logins(session) for p in _tree(login)}


def _describe(proc: psutil.Process) -> dict:
    """A connection for the journal (which takes no floats: the start time is RFC 3339)."""
    try:
        started = datetime.fromtimestamp(proc.create_time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"pid": proc.pid, "started": started, "user": proc.username(), "process": proc.name()}
    except psutil.Error:
        return {"pid": proc.pid}


def on_session_started(session: dict, settings: Settings, emit: Callable[[str, dict], object]) -> None:
    """Give the granted ``admin`` to a non-root account: sudo for the session (agent.ssh.sudo)."""
    ssh = session.get("ssh") or {}
    user = ssh.get("user")
    if "admin" not in (session.get("capabilities") or []) or not user or user == "root":
        return
    try:
        path = sudo.grant(user, session["id"], session.get("until") or "the session's end", str(_home(session).path))
    except (sudo.SudoError, OSError) as exc:
        emit(RecordType.ACCESS, {"what": "sudo", "action": "failed", "user": user,
                                 "detail": f"admin was granted, but sudo could not be given to {user}: {exc}."})
        return
    emit(RecordType.ACCESS, {"what": "sudo", "action": "granted", "user": user, "path": str(path),
                             "detail": f"{user} may use sudo until the session ends."})


def on_session_ended(session: dict, settings: Settings, emit: Callable[[str, dict], object]) -> None:
    """End (or, if so configured, warn about) the technician's live SSH connections; take sudo back."""
    _take_sudo_back(session, emit)
    action = settings.ssh.on_session_end
    logins = _logins(session)
    connections = [_describe(p) for p in logins]
    user = (session.get("ssh") or {}).get("user")
    if not logins:
        emit(RecordType.SSH_CONNECTIONS, {"action": "none", "user": user, "connections": [],
                                 "detail": "No SSH connection of the technician was open."})
    elif action == "warn":
        detail = (f"{len(logins)} SSH connection(s) of the technician as {user} are still open "
                  "after the session ended; end them from the system if you did not expect this.")
        emit(RecordType.SSH_CONNECTIONS,
             {"action": "warned", "user": user, "connections": connections, "detail": detail})
        emit(RecordType.ALARM, {"tool": "ssh", "pid": logins[0].pid, "process": "sshd", "connections": connections,
                       "detail": detail})
    else:
        survivors = _terminate([p for login in logins for p in _tree(login)])
        emit(RecordType.SSH_CONNECTIONS, {
            "action": "ended", "user": user, "connections": connections,
            "survivors": sorted(p.pid for p in survivors),
            "detail": (f"Ended {len(logins)} SSH connection(s) of the technician as {user}."
                       if not survivors else
                       f"Could not end every SSH process of the technician: {len(survivors)} still run."),
        })
    _forget(session)


def _take_sudo_back(session: dict, emit: Callable[[str, dict], object]) -> None:
    try:
        removed = sudo.revoke(session["id"])
    except (sudo.SudoError, OSError) as exc:
        emit(RecordType.ACCESS, {"what": "sudo", "action": "failed", "user": (session.get("ssh") or {}).get("user"),
                                 "detail": f"sudo could not be taken back: {exc}; remove "
                                           f"{sudo.drop_in_path(session['id'])} by hand."})
        return
    if removed:
        emit(RecordType.ACCESS, {"what": "sudo", "action": "revoked", "user": (session.get("ssh") or {}).get("user"),
                                 "detail": "sudo for the session was taken back."})


def _terminate(procs: list[psutil.Process]) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after a grace period; the processes still alive after that."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    alive = _wait_gone(procs, TERMINATE_WAIT_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return _wait_gone(alive, TERMINATE_WAIT_S)


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an ended process whose parent has not collected it yet)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [p for p in alive if _running(p)]
    return alive


def _forget(session: dict) -> None:
    session_id = session.get("id")
    if not session_id:
        return
    try:
        with LoginState(_home(session)).open() as book:
            record = book.for_session(session_id)
            if record is not None:
                book.remove(record)
    except OSError:
        pass
