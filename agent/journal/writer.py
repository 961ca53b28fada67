"""Writing a session's journal: hash-chained lines, group commit, signed checkpoints.

Each record is built as one canonical line and written with a single
``os.write`` on an ``O_APPEND`` descriptor, under a lock, so concurrent
appends never interleave. Records are synced in groups by a background
thread (every ~200 ms); the types in ``SYNC_TYPES`` are synced before
``append`` returns. While records flow, the same thread writes a signed
checkpoint every ``checkpoint_interval`` seconds.

If a write fails (disk full, read-only, I/O error) the file is cut back to the
last good record, so it stays a valid journal. A consent or session record
(``SYNC_TYPES``) that cannot be written raises ``JournalError`` (one
sentence) and changes nothing. Any other record is kept in memory instead
(``agent.journal.backlog``): from then on every record is held, in order,
until the background thread can write them, then a ``gap`` record (and a
``loss`` record, for those past the memory bound) says what happened;
``journal.failing`` tells the session what is going on meanwhile, and
``checkpoint()``/``seal()`` raise until the held records are on disk.

Two options serve the device ledger (the service connects them; the journal
knows nothing of the ledger): ``on_line`` is called, under the journal's lock
and right after the write, with the bytes (without the newline) of every line
whose type is in ``ledger_types`` (default: checkpoints and seals; a held
line, when it is written); and ``heartbeat`` makes the background thread
write a checkpoint at least that often even when no record came, so that a
witnessed journal has no silent stretch (``agent.bundle.witnessing``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from hashlib import sha256
from pathlib import Path
from typing import Protocol

import orjson

from agent import __version__
from agent.canonical import MAX_SAFE_INT, canonical_unchecked, check_canonical
from agent.errors import JournalError
from agent.journal.backlog import HOLD_BYTES, Backlog
from agent.journal.format import MAX_LINE, SIGNED_TYPES, UNSIGNED_FIELDS, ZERO_HASH, UtcClock, checkpoint_message
from agent.journal.reader import scan_journal
from agent.records import SYNCED_AT_ONCE

SYNC_INTERVAL = 0.2
CHECKPOINT_INTERVAL = 5.0
#: The lines that go to the device ledger when an ``on_line`` hook is given.
LEDGER_TYPES = frozenset({"checkpoint", "seal"})
LineHook = Callable[[bytes], object]
# fdatasync flushes the data and the size, skipping timestamps: enough to read
# the records back after a crash, and cheaper than fsync (not on macOS/Windows).
_datasync = getattr(os, "fdatasync", os.fsync)
_RESERVED_SEAL_FIELDS = frozenset({"count", "head", "session", "seq", "ts", "type"}) | UNSIGNED_FIELDS
log = logging.getLogger("chaperone.journal")


class Signer(Protocol):
    """What the journal needs of the device key (agent.devicekey.DeviceKey)."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def principal(self) -> str: ...

    def sign(self, message: bytes) -> str: ...


def _encode_data(data: dict) -> bytes:
    """Canonical JSON of a record's data, after a cheap check of its top level
    (nested values get the full check): no floats, huge ints, non-ASCII keys.

    orjson with sorted keys writes exactly agent.canonical's bytes for the
    values the check lets through (a hypothesis test holds it to that), about
    eight times faster than the standard library's encoder."""
    if type(data) is not dict:
        raise TypeError("a record's data must be a dict")
    for key, value in data.items():
        if type(key) is not str or not key.isascii():
            check_canonical(data)  # raises with the reason
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if kind is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            continue
        check_canonical(value)
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        if "surrogate" in str(exc):
            raise ValueError("a record's text is not valid Unicode (it holds a lone surrogate)") from None
        raise ValueError(f"a record's data cannot be written as canonical JSON ({exc})") from None


def _why(exc: OSError) -> str:
    return {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EFBIG: "the file is too large for this system",
        errno.EROFS: "the file system is read-only",
        errno.EIO: "an input/output error occurred",
        errno.EACCES: "permission was denied",
        errno.EPERM: "permission was denied",
    }.get(exc.errno or 0, (exc.strerror or str(exc)).lower())


def _private(name: str | os.PathLike[str], flags: int) -> int:
    """An opener for files only the owner may read."""
    return os.open(name, flags, 0o600)


def _start_data(device_key: Signer, facts: Mapping[str, object] | None = None) -> dict:
    return {"device": device_key.fingerprint, "principal": device_key.principal, "software": f"chaperone {__version__}",
            **(facts or {})}


def _write_error(path: Path, exc: OSError | str) -> str:
    why = exc if isinstance(exc, str) else _why(exc)
    return (f"Cannot write the journal {path}: {why}; it is kept valid up to its last good record, "
            "so free space or fix the disk and try again.")


class Journal:
    """An open session journal. Thread-safe; see docs/ARCHITECTURE.md ("The journal")."""

    SYNC_TYPES = SYNCED_AT_ONCE

    def __init__(self, path: Path, session_id: str, device_key: Signer, fd: int, *, seq: int, head: str, size: int,
                 sync_interval: float, checkpoint_interval: float, on_line: LineHook | None = None,
                 ledger_types: frozenset[str] = LEDGER_TYPES, heartbeat: float | None = None,
                 hold_bytes: int = HOLD_BYTES) -> None:
        self.path = Path(path)
        self.session = session_id
        self.recovered: dict | None = None
        self._key = device_key
        self._fd = fd
        self._seq = seq
        self._head = head
        self._size = size
        self._sealed = False
        self._closed = False
        self._blocked = False  # closed, sealed or failed: appends must say why
        self._lock = threading.Lock()
        self._clock = UtcClock()
        self._session_json = json.dumps(session_id, ensure_ascii=False).encode("utf-8")
        self._type_json: dict[str, bytes] = {}
        self._unsynced = False
        self._since_checkpoint = 0
        self._failure: JournalError | None = None
        self._backlog = Backlog(max_bytes=hold_bytes)
        self._sync_interval = sync_interval
        self._checkpoint_interval = checkpoint_interval
        self._on_line = on_line
        self._ledger_types = ledger_types
        self._heartbeat = heartbeat
        self._last_signed = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._background, name=f"journal-{session_id}", daemon=True)
        self._thread.start()

    # --- opening ------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], session_id: str, device_key: Signer, *,
               sync_interval: float = SYNC_INTERVAL, checkpoint_interval: float = CHECKPOINT_INTERVAL,
               on_line: LineHook | None = None, ledger_types: frozenset[str] = LEDGER_TYPES,
               heartbeat: float | None = None, hold_bytes: int = HOLD_BYTES,
               facts: Mapping[str, object] | None = None) -> Journal:
        """Start a new journal: seq 0 ``journal-start`` (the device key, plus ``facts`` such as the agent's
        mode), then a checkpoint. See the module's docstring for ``on_line``, ``ledger_types``, ``heartbeat``
        and ``hold_bytes``."""
        path = Path(path)
        fd = cls._open_fd(path, os.O_CREAT | os.O_EXCL)
        journal = cls(path, session_id, device_key, fd, seq=0, head=ZERO_HASH, size=0,
                      sync_interval=sync_interval, checkpoint_interval=checkpoint_interval, on_line=on_line,
                      ledger_types=ledger_types, heartbeat=heartbeat, hold_bytes=hold_bytes)
        try:
            journal.append("journal-start", _start_data(device_key, facts))
            journal.checkpoint()
        except BaseException:
            journal.close()
            raise
        return journal

    @classmethod
    def open(cls, path: str | os.PathLike[str], session_id: str, device_key: Signer, *,
             recovery: dict | None = None, mark_restart: bool = True,
             sync_interval: float = SYNC_INTERVAL, checkpoint_interval: float = CHECKPOINT_INTERVAL,
             on_line: LineHook | None = None, ledger_types: frozenset[str] = LEDGER_TYPES,
             heartbeat: float | None = None, hold_bytes: int = HOLD_BYTES,
             facts: Mapping[str, object] | None = None) -> Journal:
        """Reopen a journal after a stop or a crash (``facts``: as ``create``'s, if the chain must start again).

        A torn or unchained tail is moved aside to ``session.jsonl.torn-<n>``
        (kept), the file is cut to its last good record, and a ``recovery``
        record followed by a checkpoint is appended. ``recovery`` adds fields
        to that record (e.g. ``resumed``). ``journal.recovered`` holds the
        recovery record's data. With ``mark_restart=False`` (for a long-lived
        journal opened per event, such as the unattended one) a clean reopen
        writes nothing; the recovery record is written only when something was
        set aside.
        """
        path = Path(path)
        fd = cls._open_fd(path, 0)
        try:
            scan = scan_journal(path, session_id)
            if scan.sealed:
                raise JournalError(f"The journal {path} is sealed; a sealed session cannot be reopened.")
            set_aside = cls._set_aside(path, fd, scan.good_size) if scan.bad_reason else None
        except BaseException:
            os.close(fd)
            raise
        journal = cls(path, session_id, device_key, fd, seq=scan.next_seq, head=scan.head, size=scan.good_size,
                      sync_interval=sync_interval, checkpoint_interval=checkpoint_interval, on_line=on_line,
                      ledger_types=ledger_types, heartbeat=heartbeat, hold_bytes=hold_bytes)
        try:
            if scan.next_seq == 0:  # nothing good was left: start the chain again
                journal.append("journal-start", _start_data(device_key, facts))
            if mark_restart or set_aside is not None or scan.next_seq == 0:
                recovered = {**(recovery or {}), "set_aside": set_aside, "last_seq": scan.last_seq,
                             "last_ts": scan.last_ts}
                journal.append("recovery", recovered)
                journal.checkpoint()
                journal.recovered = recovered
        except BaseException:
            journal.close()
            raise
        return journal

    @staticmethod
    def _open_fd(path: Path, flags: int) -> int:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | flags, 0o600)
        except FileExistsError:
            raise JournalError(f"The journal {path} already exists; open it instead of creating it.") from None
        except FileNotFoundError:
            raise JournalError(f"There is no journal at {path}.") from None
        except OSError as exc:
            raise JournalError(f"Cannot write the journal {path}: {_why(exc)}.") from None

    @staticmethod
    def _set_aside(path: Path, fd: int, good_size: int) -> dict:
        """Copy the bad tail to the first free ``<name>.torn-<n>``, then cut the journal."""
        n = 1
        while path.with_name(f"{path.name}.torn-{n}").exists():
            n += 1
        torn = path.with_name(f"{path.name}.torn-{n}")
        try:
            with open(path, "rb") as src, open(torn, "xb", opener=_private) as dst:
                src.seek(good_size)
                digest = sha256()
                size = 0
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.ftruncate(fd, good_size)
            os.fsync(fd)
        except OSError as exc:
            raise JournalError(f"Cannot set aside the torn end of the journal {path}: {_why(exc)}.") from None
        return {"file": torn.name, "bytes": size, "sha256": digest.hexdigest()}

    # --- state ----------------------------------------------------------------
    @property
    def seq(self) -> int:
        """The seq the next record will get."""
        return self._seq

    @property
    def head(self) -> str:
        """The hash of the last line written (the next record's ``prev``)."""
        return self._head

    @property
    def sealed(self) -> bool:
        return self._sealed

    @property
    def failing(self) -> dict | None:
        """``{"since", "error", "held", "lost"}`` while records cannot be written (held in memory, or a
        failed sync), else None. Safe from any thread."""
        backlog = self._backlog
        if backlog.holding:
            return {"since": backlog.since, "error": backlog.error, "held": len(backlog.lines),
                    "lost": sum(backlog.lost.values())}
        if self._failure is not None:
            return {"since": None, "error": str(self._failure), "held": 0, "lost": 0}
        return None

    # --- writing --------------------------------------------------------------
    def append(self, type: str, data: dict, sync: bool | None = None) -> int:
        """Write one record; return its seq. Thread-safe.

        While the journal holds records (see the module's doc) the record is held too, and the
        seq returned is the one it will have on disk; -1 when it could not even be held (it is
        counted in the ``loss`` record written once the disk takes records again)."""
        if type in SIGNED_TYPES:
            raise ValueError(f"use checkpoint() or seal() to write a {type!r} record")
        body = _encode_data(data)
        with self._lock:
            if self._blocked:
                self._check_writable()
            seq = self._append_locked(type, body, self._clock.now())
            if self._backlog.holding:
                return seq
        if sync or (sync is None and type in self.SYNC_TYPES):
            self._sync()
        return seq

    def _append_locked(self, type: str, body: bytes, ts: str) -> int:
        seq = self._seq
        line = self._line(type, body, seq, ts)
        if self._backlog.holding:
            return self._hold_locked(type, line, ts)
        try:
            self._put(type, line)
        except OSError as exc:
            if type in self.SYNC_TYPES:  # consent's evidence is written now or refused, never held
                raise JournalError(_write_error(self.path, exc)) from None
            self._backlog.start(ts, _why(exc))
            return self._hold_locked(type, line, ts)
        self._advance(line, seq)
        return seq

    def _hold_locked(self, type: str, line: bytes, ts: str) -> int:
        if not self._backlog.fits(len(line)):
            self._backlog.count_lost(type, ts)
            return -1
        seq = self._seq
        self._backlog.hold(type, line)
        self._advance(line, seq)
        return seq

    def _flush_locked(self) -> bool:
        """Write the held records, then the ``gap`` (and ``loss``) record; True once nothing is held."""
        backlog = self._backlog
        while backlog.lines:
            type, line = backlog.lines[0]
            try:
                self._put(type, line)
            except OSError:
                return False
            backlog.written()
        if backlog.holding:
            for type, data in backlog.closing_records(self._clock.now()):
                self._append_locked(type, _encode_data(data), self._clock.now())
        return not backlog.holding

    def checkpoint(self) -> int:
        """Write a signed checkpoint over the chain head now, and sync it."""
        return self._signed("checkpoint", {})

    def seal(self, data: dict | None = None) -> int:
        """Write the final signed ``seal``; nothing can be appended after it."""
        extra = dict(data or {})
        clash = _RESERVED_SEAL_FIELDS.intersection(extra)
        if clash:
            raise ValueError(f"a seal cannot carry the fields {sorted(clash)}")
        return self._signed("seal", extra)

    def _signed(self, type: str, extra: dict) -> int:
        _encode_data(extra)  # reject what canonical JSON cannot hold
        with self._lock:
            self._check_writable()
            if self._backlog.holding and not self._flush_locked():
                raise JournalError(_write_error(self.path, self._backlog.error))
            seq, ts = self._seq, self._clock.now()
            data = {**extra, "count": seq, "head": self._head, "key": self._key.fingerprint}
            record = {"data": data, "seq": seq, "session": self.session, "ts": ts, "type": type}
            data["sig"] = self._key.sign(checkpoint_message(record))
            line = self._line(type, canonical_unchecked(data), seq, ts)
            try:
                self._put(type, line)
            except OSError as exc:
                raise JournalError(_write_error(self.path, exc)) from None
            self._advance(line, seq)
            self._since_checkpoint = 0
            self._last_signed = time.monotonic()
            if type == "seal":
                self._sealed = self._blocked = True
        self._sync()
        return seq

    def _line(self, type: str, body: bytes, seq: int, ts: str) -> bytes:
        type_json = self._type_json.get(type)
        if type_json is None:
            if not isinstance(type, str) or not type:
                raise ValueError("a record's type must be a non-empty string")
            try:
                type_json = self._type_json[type] = json.dumps(type, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a record's type is not valid Unicode") from None
        # The envelope's keys all sort after "data", so the canonical line is the data and then these.
        line = (b'{"data":%b,"prev":"%b","seq":%d,"session":%b,"ts":"%b","type":%b,"v":1}\n'
                % (body, self._head.encode("ascii"), seq, self._session_json, ts.encode("ascii"), type_json))
        if len(line) > MAX_LINE:
            raise ValueError(f"a {type!r} record of {len(line)} bytes is larger than the journal's limit of {MAX_LINE}")
        return line

    def _put(self, type: str, line: bytes) -> None:
        """One ``os.write`` of a whole line (then the ledger's hook, for its types); on failure the file is
        cut back and OSError raised."""
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            self._cut_back()
            raise
        self._size += len(line)
        self._unsynced = True
        if self._on_line is not None and type in self._ledger_types:
            try:
                self._on_line(line[:-1])
            except Exception:  # noqa: BLE001 - the record is written; the hook's owner journals its own failures
                pass

    def _advance(self, line: bytes, seq: int) -> None:
        self._head = sha256(line).hexdigest()
        self._seq = seq + 1
        self._since_checkpoint += 1

    def _cut_back(self) -> None:
        """Remove a partly written record so the file ends with the last good one."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # the next open() sets the torn tail aside

    def _check_writable(self) -> None:
        if self._closed:
            raise JournalError(f"The journal of session {self.session} is closed.")
        if self._sealed:
            raise JournalError(f"The journal of session {self.session} is sealed; nothing can be added to it.")
        if self._failure is not None:
            raise self._failure

    def _sync(self) -> None:
        try:
            self._unsynced = False
            _datasync(self._fd)
        except OSError as exc:
            self._failure = JournalError(_write_error(self.path, exc))
            self._blocked = True
            raise self._failure from None

    # --- the background thread ---------------------------------------------
    def _background(self) -> None:
        last_checkpoint = time.monotonic()
        while not self._stop.wait(self._sync_interval):
            try:
                if self._backlog.holding:
                    with self._lock:
                        flushed = not self._closed and self._flush_locked()
                    if flushed:  # the disk takes records again: make what was held durable, and sign it
                        self.checkpoint()
                        last_checkpoint = time.monotonic()
                    continue
                now = time.monotonic()
                if self._since_checkpoint and now - last_checkpoint >= self._checkpoint_interval:
                    self.checkpoint()
                    last_checkpoint = time.monotonic()
                elif self._heartbeat and now - self._last_signed >= self._heartbeat and not self._blocked:
                    self.checkpoint()  # no record came: a heartbeat, so a witnessed journal has no silent stretch
                elif self._unsynced:
                    self._sync()
            except JournalError:
                # A full disk or a failed sync: the writer's next append reports
                # it; keep trying, so syncs and checkpoints resume with space.
                continue

    # --- closing ----------------------------------------------------------------
    def close(self) -> None:
        """Stop the background thread and sync. Does not seal."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._closed = self._blocked = True
            dropped = self._backlog.dropped()
            if dropped:
                log.warning("journal %s closed with %d record(s) the disk never took (%s); they are lost",
                            self.path, dropped, self._backlog.error)
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {self.session} seq={self._seq} sealed={self._sealed}>"
