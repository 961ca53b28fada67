"""A witness's key and its state: the logs it trusts and the newest head it cosigned for each.

All in ``HOME/witness/``: ``key`` (Ed25519, PKCS#8 PEM, 0600), ``name`` (the
key's name) and ``state.sqlite3``:

``logs(origin, vkey, added)``
    the trusted logs: an origin and a verifier key it signs with (several keys
    per origin are allowed, for rotation).
``heads(origin, size, root, note, updated)``
    the newest checkpoint cosigned for each origin.
``refusals(id, origin, at, status, reason, body)``
    requests with a valid log signature that were refused (409, 422): evidence
    that a log forked or rewrote its history. The newest 10,000 are kept.

``WitnessState.advance`` checks the request against the stored head and moves
the head in one ``BEGIN IMMEDIATE`` transaction, committed (``synchronous =
FULL``) before it returns, so two requests can never roll a head back and no
cosignature leaves before the state that justifies it is on disk.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.clock import rfc3339, utc_now
from agent.errors import WitnessError
from agent.home import Home
from agent.ledger.checkpoint import Checkpoint
from agent.ledger.cosignature import CosignatureSigner, vkey_verifier
from agent.ledger.keyfile import load_key, load_or_make_key
from agent.ledger.merkle import ProofError, verify_consistency
from agent.ledger.note import ALG_ED25519, NoteError, Verifier, split_vkey, valid_name

MAX_REFUSALS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (origin TEXT NOT NULL, vkey TEXT NOT NULL, added TEXT NOT NULL,
                                 PRIMARY KEY (origin, vkey));
CREATE TABLE IF NOT EXISTS heads (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                                  note BLOB NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refusals (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, at TEXT NOT NULL,
                                     status INTEGER NOT NULL, reason TEXT NOT NULL, body BLOB NOT NULL);
"""


def witness_dir(home: Home) -> Path:
    return home.path / "witness"


def default_name() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"
    return f"chaperone.local/witness/{host}"


def init_witness(home: Home, name: str | None = None) -> tuple[CosignatureSigner, bool]:
    """The home's witness key, made (under ``name``, default ``chaperone.local/witness/<host>``) if
    missing: ``(signer, created)``. An existing key keeps its name."""
    folder = witness_dir(home)
    name_path = folder / "name"
    if name is not None and not valid_name(name):
        raise WitnessError(f"{name!r} cannot name a witness: no spaces, no '+', not empty.")
    home.create()
    if name_path.exists():
        stored = _read_name(name_path)
        if name is not None and name != stored:
            raise WitnessError(f"This home's witness is already named {stored}; a witness keeps its name "
                               "(its verifier key depends on it).")
        return CosignatureSigner(stored, load_key(folder / "key", "witness key", WitnessError)), False
    key, created = load_or_make_key(folder / "key", "witness key", WitnessError)
    chosen = name or default_name()
    tmp = name_path.with_name(".name.tmp")
    tmp.write_text(chosen + "\n", encoding="utf-8")
    os.replace(tmp, name_path)
    return CosignatureSigner(chosen, key), created


def load_witness(home: Home) -> CosignatureSigner:
    folder = witness_dir(home)
    if not (folder / "name").exists():
        raise WitnessError(f"There is no witness in {home.path}; "
                           f"run 'chaperone witness init --home {home.path}' first.")
    return CosignatureSigner(_read_name(folder / "name"), load_key(folder / "key", "witness key", WitnessError))


def _read_name(path: Path) -> str:
    try:
        name = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise WitnessError(f"Cannot read the witness's name in {path}; restore it or move the folder aside.") from None
    if not valid_name(name):
        raise WitnessError(f"The witness's name in {path} is not a key name; restore it.")
    return name


@dataclass(frozen=True)
class Head:
    origin: str
    size: int
    root: bytes
    note: bytes
    updated: str


@dataclass(frozen=True)
class Outcome:
    """What ``advance`` decided: ``status`` 200 (cosign), 409 (with ``size``, the witness's) or 422."""

    status: int
    size: int = 0
    reason: str = ""


class WitnessState:
    """The witness's SQLite state. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not path.exists()
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            if fresh:
                os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise WitnessError(f"Cannot open the witness's state {path}: {exc}; "
                               "check the disk and its permissions.") from None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, home: Home) -> WitnessState:
        return cls(witness_dir(home) / "state.sqlite3")

    # --- trusted logs ----------------------------------------------------------------------------
    def trust(self, origin: str, vkey: str) -> None:
        """Trust ``vkey`` (a log's Ed25519 verifier key) to sign heads of ``origin``."""
        if not origin or not origin.isprintable() or "\n" in origin:
            raise WitnessError("An origin is one line of printable text.")
        try:
            _, _, alg, public = split_vkey(vkey)
        except NoteError as exc:
            raise WitnessError(f"{vkey.strip()[:80]!r} is not a verifier key ({exc}); give it as "
                               "'chaperone ledger' prints it.") from None
        if alg != ALG_ED25519 or len(public) != 32:
            raise WitnessError("A log's verifier key is an Ed25519 key (type 0x01), as 'chaperone ledger' prints it.")
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO logs (origin, vkey, added) VALUES (?, ?, ?)",
                             (origin, vkey.strip(), rfc3339(utc_now())))

    def verifiers(self, origin: str) -> list[Verifier]:
        with self._lock:
            rows = self._db.execute("SELECT vkey FROM logs WHERE origin = ?", (origin,)).fetchall()
        return [vkey_verifier(vkey) for (vkey,) in rows]

    def trusted(self) -> list[tuple[str, str]]:
        with self._lock:
            return self._db.execute("SELECT origin, vkey FROM logs ORDER BY origin, vkey").fetchall()

    # --- heads -----------------------------------------------------------------------------------
    def head(self, origin: str) -> Head | None:
        with self._lock:
            row = self._db.execute("SELECT origin, size, root, note, updated FROM heads WHERE origin = ?",
                                   (origin,)).fetchone()
        return Head(*row) if row else None

    def advance(self, checkpoint: Checkpoint, note: bytes, old_size: int, proof: tuple[bytes, ...],
                body: bytes) -> Outcome:
        """Check ``old_size`` and the consistency proof against the stored head and, if they hold,
        store ``checkpoint`` as the new head, committed before this returns (see the docstring)."""
        origin = checkpoint.origin
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    outcome = self._decide(checkpoint, note, old_size, proof)
                    if outcome.status == 200:
                        self._db.execute(
                            "INSERT INTO heads (origin, size, root, note, updated) VALUES (?, ?, ?, ?, ?) "
                            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
                            "note = excluded.note, updated = excluded.updated",
                            (origin, checkpoint.size, checkpoint.root, note, rfc3339(utc_now())))
                    else:
                        self._db.execute(
                            "INSERT INTO refusals (origin, at, status, reason, body) VALUES (?, ?, ?, ?, ?)",
                            (origin, rfc3339(utc_now()), outcome.status, outcome.reason, body))
                        self._db.execute("DELETE FROM refusals WHERE id <= (SELECT MAX(id) FROM refusals) - ?",
                                         (MAX_REFUSALS,))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise WitnessError(f"Cannot update the witness's state {self.path}: {exc}.") from None
        return outcome

    def _decide(self, checkpoint: Checkpoint, note: bytes, old_size: int, proof: tuple[bytes, ...]) -> Outcome:
        row = self._db.execute("SELECT size, root FROM heads WHERE origin = ?", (checkpoint.origin,)).fetchone()
        size, root = (row[0], row[1]) if row else (0, None)
        if old_size != size:
            return Outcome(409, size, f"old size {old_size} is not the witness's size {size}")
        if old_size == checkpoint.size and root is not None and root != checkpoint.root:
            return Outcome(409, size, f"a different root hash for the same size {size}")
        if old_size == 0 or root is None:
            if proof:
                return Outcome(422, size, "the proof must be empty when the old size is 0")
            return Outcome(200, size)
        try:
            verify_consistency(proof, size, root, checkpoint.size, checkpoint.root)
        except ProofError as exc:
            return Outcome(422, size, str(exc))
        return Outcome(200, size)

    def refusals(self, origin: str | None = None) -> list[tuple[str, str, int, str]]:
        query = "SELECT origin, at, status, reason FROM refusals"
        args: tuple = ()
        if origin is not None:
            query += " WHERE origin = ?"
            args = (origin,)
        with self._lock:
            return self._db.execute(query + " ORDER BY id", args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
