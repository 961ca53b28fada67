"""The history of sessions: one SQLite row per session, in the home (``home.db_path``).

``History`` is thread-safe (one connection behind a lock) and uses WAL, so the
CLI can read while the agent writes. Lists and objects (``capabilities``,
``watch``, ``flags``, ``decided_by``) are stored as JSON; ``verified`` and
``sealed`` as booleans; times as RFC 3339 strings.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading

from agent.errors import HistoryError
from agent.home import Home

FIELDS = (
    "id", "state", "technician", "email", "org", "ticket", "reason", "duration_s", "capabilities", "watch",
    "verified", "signer", "key_fingerprint", "flags", "requested", "decided", "decided_by", "how", "started",
    "ended", "until", "end_reason", "sealed", "journal", "granted",
)
STATES = frozenset({"requested", "allowed", "refused", "expired", "active", "ended", "sealed"})
JSON_FIELDS = frozenset({"capabilities", "watch", "flags", "decided_by", "granted"})
BOOL_FIELDS = frozenset({"verified", "sealed"})
_INTEGER_FIELDS = BOOL_FIELDS | {"duration_s"}
_SCHEMA = "CREATE TABLE IF NOT EXISTS sessions ({})".format(
    ", ".join(
        "id TEXT PRIMARY KEY NOT NULL" if f == "id" else f"{f} {'INTEGER' if f in _INTEGER_FIELDS else 'TEXT'}"
        for f in FIELDS
    )
)
# Request files already used (a request file is single-use): their digest, the session they made, until when
# they could have been used at all (after that they are refused as expired anyway, and the row may go).
_USED_SCHEMA = ("CREATE TABLE IF NOT EXISTS used_request_files "
                "(digest TEXT PRIMARY KEY NOT NULL, session TEXT NOT NULL, used TEXT NOT NULL, expires TEXT)")


class History:
    """The sessions of a home. ``readonly=True`` never creates or writes anything
    (for listing commands); a missing database then reads as empty."""

    def __init__(self, home: Home, *, readonly: bool = False) -> None:
        self.path = home.db_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if readonly:
            home.require()
            if self.path.exists():
                self._conn = self._open_readonly()
        else:
            home.require_writable()
            self._create_private()
            self._conn = self._connect(str(self.path))
            with self._lock, self._conn:
                self._execute("PRAGMA journal_mode=WAL")
                # The journals are the record; the history is an index rebuilt from them after a
                # crash, so a power cut may lose its last rows but never corrupts it (WAL).
                self._execute("PRAGMA synchronous=NORMAL")
                self._execute(_SCHEMA)
                self._execute(_USED_SCHEMA)
                self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A history made by an older version gains the fields added since (as empty)."""
        have = {row[1] for row in self._execute("PRAGMA table_info(sessions)").fetchall()}
        for name in FIELDS:
            if name not in have:
                kind = "INTEGER" if name in _INTEGER_FIELDS else "TEXT"
                self._execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")

    def _create_private(self) -> None:
        """Make the database file 0600 before SQLite does (it would use the umask; its -wal and
        -shm files take the database's mode)."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise HistoryError(f"Cannot create the history {self.path}: {exc.strerror}.") from None

    def _open_readonly(self) -> sqlite3.Connection:
        conn = self._connect(f"{self.path.as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        # A WAL database on a read-only file system cannot make its shared-memory
        # file; nothing can write there either, so read it as immutable.
        if os.access(self.path.parent, os.W_OK):
            raise HistoryError(f"Cannot read the history {self.path}; check its permissions.")
        return self._connect(f"{self.path.as_uri()}?mode=ro&immutable=1", uri=True)

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, uri=uri, timeout=10, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        except sqlite3.Error as exc:
            raise HistoryError(f"Cannot open the history {self.path}: {exc}; check the home's permissions.") from None

    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        if self._conn is None:
            raise HistoryError(f"The history {self.path} is closed.")
        try:
            return self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise HistoryError(f"Cannot use the history {self.path}: {exc}.") from None
        except sqlite3.DatabaseError as exc:
            raise HistoryError(
                f"The history {self.path} is damaged ({exc}); move it aside to start a new one.") from None

    # --- writing -----------------------------------------------------------
    def upsert(self, session_id: str, **fields) -> None:
        """Insert the session, or update the given fields of it."""
        unknown = set(fields).difference(FIELDS[1:])  # the id is the key, not a field to set
        if unknown:
            raise ValueError(f"unknown history fields: {', '.join(sorted(unknown))}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown session state {fields['state']!r}")
        if self._conn is None:
            raise HistoryError("The history was opened read-only.")
        names = ["id", *fields]
        values = [session_id, *(_to_column(name, value) for name, value in fields.items())]
        updates = ", ".join(f"{n}=excluded.{n}" for n in fields) or "id=id"
        sql = (f"INSERT INTO sessions ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT(id) DO UPDATE SET {updates}")
        with self._lock:
            self._execute(sql, tuple(values))

    def claim_request_file(self, digest: str, session_id: str, used: str, expires: str | None) -> str | None:
        """Mark a request file used by ``session_id``; the session that used it before, if one did."""
        if self._conn is None:
            raise HistoryError("The history was opened read-only.")
        with self._lock:
            self._execute("BEGIN IMMEDIATE")
            try:
                row = self._execute("SELECT session FROM used_request_files WHERE digest = ?", (digest,)).fetchone()
                if row is None:
                    self._execute("INSERT INTO used_request_files VALUES (?, ?, ?, ?)",
                                  (digest, session_id, used, expires))
            finally:
                self._execute("COMMIT")
        return row[0] if row else None

    # --- reading -----------------------------------------------------------
    def get(self, session_id: str) -> dict | None:
        if self._conn is None:
            return None
        with self._lock:
            row = self._execute(f"SELECT {', '.join(FIELDS)} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _to_dict(row) if row else None

    def list(self) -> list[dict]:
        """Every session, newest first (by request time, then insertion)."""
        if self._conn is None:
            return []
        with self._lock:
            rows = self._execute(
                f"SELECT {', '.join(FIELDS)} FROM sessions "
                "ORDER BY COALESCE(requested, started, '') DESC, rowid DESC"
            ).fetchall()
        return [_to_dict(row) for row in rows]

    def delete(self, session_id: str) -> bool:
        """Remove a session's row (retention); True when there was one."""
        if self._conn is None:
            return False
        with self._lock:
            return self._execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_column(name: str, value):
    if value is None:
        return None
    if name in JSON_FIELDS:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if name in BOOL_FIELDS:
        return int(bool(value))
    if name == "duration_s":
        return int(value)
    return str(value)


def _to_dict(row: tuple) -> dict:
    out = {}
    for name, value in zip(FIELDS, row):
        if value is not None and name in JSON_FIELDS:
            value = json.loads(value)
        elif value is not None and name in BOOL_FIELDS:
            value = bool(value)
        out[name] = value
    return out


__all__ = ["History", "HistoryError", "FIELDS", "STATES"]
