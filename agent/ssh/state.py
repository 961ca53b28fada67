"""What ssh-authorize remembers between sshd's calls: ``HOME/ssh/logins.json``, under a lock.

sshd runs the AuthorizedKeysCommand several times per login (once to test
each key the client offers, once more to check the signature of the chosen
one), and two logins may run at once. So that the customer is asked once per
login, each consent request is remembered here with:

- ``id``: the agent's request (and session) id;
- ``user``, ``fingerprint``: the account and key it was asked for;
- ``state``: ``pending``, ``allowed`` or ``refused``;
- ``sshd``: the sshd processes (``[pid, start time]``) of the logins it
  answered. sshd runs the command from the connection's privileged monitor
  process, so our parent process *is* the login: it is what the session's
  attribution and "end the connections" act on.

A record is matched by (user, key) or by the login's sshd process, so a
second key offered on the same connection does not ask again. Every reader
and writer holds an ``flock`` on ``logins.lock``; writes are atomic renames.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from agent.atomic import replace_file
from agent.home import Home

KEEP_PENDING_S = 24 * 3600  # a forgotten pending record is dropped after this
KEEP_ALLOWED_S = 9 * 3600  # longer than the longest session (8 h)


def ssh_dir(home: Home) -> Path:
    return home.path / "ssh"


@dataclass(frozen=True)
class ProcessRef:
    """A process, identified by pid and start time so that a reused pid never matches."""

    pid: int
    started: float

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except (psutil.Error, OSError, ValueError):
            return None

    def process(self) -> psutil.Process | None:
        """The live process, or None if it has ended (or its pid was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except (psutil.Error, OSError, ValueError):
            pass
        return None

    def alive(self) -> bool:
        return self.process() is not None


@dataclass
class LoginRecord:
    id: str
    user: str
    fingerprint: str
    state: str  # pending | allowed | refused
    at: float  # when it was asked (Unix seconds)
    until: str | None = None  # RFC 3339 end of the session, once allowed
    sshd: list[ProcessRef] = field(default_factory=list)

    def matches(self, user: str, fingerprint: str, login: ProcessRef | None) -> bool:
        if self.user != user:
            return False
        return self.fingerprint == fingerprint or (login is not None and login in self.sshd)

    def add_login(self, login: ProcessRef | None) -> None:
        if login is not None and login not in self.sshd:
            self.sshd.append(login)

    def to_json(self) -> dict:
        data = asdict(self)
        data["sshd"] = [[p.pid, p.started] for p in self.sshd]
        return data

    @classmethod
    def from_json(cls, data: dict) -> LoginRecord:
        sshd = [ProcessRef(int(pid), float(started)) for pid, started in data.get("sshd", [])]
        return cls(id=str(data["id"]), user=str(data["user"]), fingerprint=str(data["fingerprint"]),
                   state=str(data["state"]), at=float(data["at"]), until=data.get("until"), sshd=sshd)


class LoginBook:
    """The records, loaded and saved under the lock by ``LoginState.open``."""

    def __init__(self, records: list[LoginRecord]) -> None:
        self.records = records

    def find(self, user: str, fingerprint: str, login: ProcessRef | None) -> LoginRecord | None:
        for record in self.records:
            if record.matches(user, fingerprint, login):
                return record
        return None

    def for_session(self, session_id: str) -> LoginRecord | None:
        return next((r for r in self.records if r.id == session_id), None)

    def remove(self, record: LoginRecord) -> None:
        self.records = [r for r in self.records if r is not record]

    def prune(self, now: float) -> None:
        """Forget refusals whose logins are over, and records far too old to matter."""
        def keep(r: LoginRecord) -> bool:
            if r.state == "refused":
                return any(p.alive() for p in r.sshd)
            limit = KEEP_PENDING_S if r.state == "pending" else KEEP_ALLOWED_S
            return now - r.at < limit

        self.records = [r for r in self.records if keep(r)]


class LoginState:
    def __init__(self, home: Home) -> None:
        self.folder = ssh_dir(home)
        self.path = self.folder / "logins.json"
        self.lock_path = self.folder / "logins.lock"

    @contextmanager
    def open(self, write: bool = True) -> Iterator[LoginBook]:
        """The records under an exclusive lock (shared when only reading).

        With ``write``, they are saved on the way out, also when the block
        raises (a refusal is raised from inside it, after noting it).
        """
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            book = LoginBook(self._load())
            try:
                yield book
            finally:
                if write:
                    self._save(book.records)
        finally:
            os.close(fd)  # releases the lock

    def _load(self) -> list[LoginRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [LoginRecord.from_json(r) for r in data["records"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            # A damaged state file only loses memory of pending logins: the next
            # login asks the customer again. It never grants anything by itself.
            return []

    def _save(self, records: list[LoginRecord]) -> None:
        replace_file(self.path, json.dumps({"records": [r.to_json() for r in records]}, indent=1).encode("utf-8"))
