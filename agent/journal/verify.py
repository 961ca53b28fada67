"""Checking a journal: the chain, the signed checkpoints and the seal, in one streaming pass.

``verify_journal`` reads line by line in constant memory and stops at the
first bad record, naming its line and seq and saying why in one sentence.
A genuine journal:

- has records with seq 0, 1, 2, … each carrying the SHA-256 of the line
  before it (64 zeros for the first), all for one session;
- starts with ``journal-start`` naming the device key's fingerprint;
- has checkpoints and a seal whose SSHSIG (namespace ``chaperone-session``,
  over ``format.checkpoint_message``) verifies with that device key — the
  bundle's key when one is given;
- ends with exactly one ``seal``: records after it are reported as unsealed,
  and a journal without one is not genuine (it was not ended, or was cut short).

Every byte of a line is covered by the next line's ``prev``; the last line,
the seal, is parsed fully and must be canonical and signed, so no byte of it
can change either.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent import sshsig
from agent.errors import BadLine
from agent.journal.format import MAX_LINE, NAMESPACE, SIGNED_TYPES, ZERO_HASH, checkpoint_message, strict_dearmor
from agent.journal.reader import parse_record
from agent.sshkeys import fingerprint

_SIGNED_TYPES_BYTES = frozenset(t.encode() for t in SIGNED_TYPES)
_TAIL_PREFIX = b',"prev":"'
_PLAIN_TYPE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_PLAIN_TYPE_BYTES = re.compile(_PLAIN_TYPE.pattern.encode("ascii"))


@dataclass(frozen=True)
class JournalCheck:
    """The outcome of ``verify_journal``.

    ``ok`` means genuine. ``readable`` is False when the input could not be
    read as a journal at all (missing, an enormous line, invalid UTF-8).
    ``line``/``seq`` locate the first bad record. ``key_blob`` is the key
    that signed the checkpoints. ``chain_ok`` without ``ok`` means every record
    is intact and only the seal is missing or not last.
    """

    ok: bool
    readable: bool
    reason: str
    records: int
    unsealed: int
    chain_ok: bool = False
    session: str | None = None
    line: int | None = None
    seq: int | None = None
    key_blob: bytes | None = None
    checkpoints: int = 0
    mode: str | None = None  # the agent's mode, as journal-start says: "system", "personal" (None: not said)
    key_account: str | None = None  # the account that could read the device key, as journal-start says

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.key_blob) if self.key_blob else None


class LineSource(Protocol):
    """What the verifier reads a journal from: a binary file, or a stream that copies or hashes as it goes."""

    def readline(self, limit: int = -1, /) -> bytes: ...


class _Bad(Exception):
    def __init__(self, reason: str, readable: bool = True, seq: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.readable = readable
        self.seq = seq  # the bad line's own seq, when it differs from the expected one


def verify_journal(source: str | os.PathLike | LineSource, key_blob: bytes | None = None, *,
                   name: str = "session.jsonl") -> JournalCheck:
    """Check a journal file or binary stream. ``key_blob``: the public key (SSH
    wire blob) that must have signed it, e.g. the bundle's; None accepts the
    key named by the journal's own first record. Never raises for bad content."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as stream:
                return _Verifier(key_blob, name).run(stream)
        except FileNotFoundError:
            return JournalCheck(False, False, f"There is no journal at {Path(source)}.", 0, 0)
        except IsADirectoryError:
            return JournalCheck(False, False, f"{Path(source)} is a folder, not a journal.", 0, 0)
        except OSError as exc:
            return JournalCheck(False, False, f"Cannot read {Path(source)}: {exc.strerror}.", 0, 0)
    return _Verifier(key_blob, name).run(source)


class _Verifier:
    def __init__(self, key_blob: bytes | None, name: str) -> None:
        self.key_blob = key_blob
        self.key_label = "the bundle's key" if key_blob else "the device key"
        self.name = name
        self.device: str | None = None  # fingerprint named by journal-start
        self.mode: str | None = None
        self.key_account: str | None = None
        self.session: str | None = None
        self.lineno = 0
        self.records = 0
        self.checkpoints = 0
        self.seal_line: int | None = None
        self.after_seal = 0
        self.first_after_seal: tuple[int, int] | None = None
        self.chain_ok = False
        self._plain_types: set[bytes] = set()  # types seen in full-parsed lines, safe for the fast path
        self._signer: tuple[bytes, str] = (b"", "")  # the last signer's key blob and fingerprint

    def run(self, stream: LineSource) -> JournalCheck:
        try:
            self._walk(stream)
        except _Bad as bad:
            at = (self.lineno, self.records if bad.seq is None else bad.seq)
            return self._result(False, bad.reason, bad.readable, at=at)
        except OSError as exc:  # e.g. a zip member whose data is damaged
            return self._result(False, f"Cannot read {self.name}: {exc}.", False)
        self.chain_ok = self.records > 0
        if self.records == 0:
            return self._result(False, f"{self.name} is empty.")
        if self.seal_line is None:
            return self._result(False, f"{self.name} has no seal: its {self.records} records are unsealed "
                                       "(the session was not ended, or the journal was cut short).")
        if self.first_after_seal is not None:
            line, seq = self.first_after_seal
            return self._result(False, f"{self.name} line {line} (seq {seq}) comes after the seal on line "
                                       f"{self.seal_line}: records after a seal are unsealed.", at=(line, seq))
        return self._result(True, f"{self.name} is complete and sealed: {self.records} records, "
                                  f"{self.checkpoints} signed checkpoints.")

    def _result(self, ok: bool, reason: str, readable: bool = True, *,
                at: tuple[int, int] | None = None) -> JournalCheck:
        """``at``: the (line, seq) of the first bad record, if one is to blame."""
        line, seq = at or (None, None)
        return JournalCheck(ok=ok, readable=readable, reason=reason, records=self.records,
                            unsealed=self.records if self.seal_line is None else self.after_seal,
                            session=self.session, line=line, seq=seq, key_blob=self.key_blob,
                            checkpoints=self.checkpoints, chain_ok=self.chain_ok, mode=self.mode,
                            key_account=self.key_account)

    def _where(self, seq: int | None = None) -> str:
        seq = self.records if seq is None else seq
        return f"{self.name} line {self.lineno} (seq {seq})"

    def _walk(self, stream: LineSource) -> None:
        # The hot loop. A line of the usual shape is checked with one comparison:
        # its tail must start with exactly the expected prev, seq and session
        # (``expect``); ``data`` is not parsed, since the next line's prev covers
        # every byte of it. Other lines (the first, checkpoints, seals, or any
        # that do not match) are parsed fully by ``_slow_envelope``.
        sha256 = hashlib.sha256
        readline = stream.readline
        limit = MAX_LINE + 1
        find_tail = _TAIL_PREFIX
        expected, head = 0, ZERO_HASH.encode("ascii")
        expect = None  # b',"prev":"<head>","seq":<n>,"session":<json>,"ts":"'
        session_json = b""
        plain_types = self._plain_types
        lineno = 0
        while line := readline(limit):
            lineno += 1
            if len(line) > MAX_LINE or line[-1] != 0x0A or not line.isascii():
                self.lineno, self.records = lineno, expected
                self._check_raw(line)
            type_ = None
            if expect is not None:
                start = line.rfind(find_tail)
                if start > 9 and line.startswith(expect, start):
                    at = start + len(expect) + 27  # 27: the length of a ts
                    type_ = line[at + 10:-9]
                    if not ((type_ in plain_types or self._plain(type_)) and line[at:at + 10] == b'","type":"'
                            and line[start - 1] == 0x7D and line.endswith(b'","v":1}\n')
                            and line.startswith(b'{"data":{')):
                        type_ = None
            if type_ is None or type_ in _SIGNED_TYPES_BYTES:
                self.lineno, self.records = lineno, expected
                type_ = self._slow_envelope(line, expected, head)
                if expected == 0:
                    session_json = json.dumps(self.session, ensure_ascii=False).encode("utf-8")
            if self.seal_line is not None:
                self.after_seal += 1
                if self.first_after_seal is None:
                    self.first_after_seal = (lineno, expected)
            if type_ == b"seal":
                self.seal_line = lineno
                self.after_seal = 0
            head = sha256(line).hexdigest().encode("ascii")
            expected += 1
            expect = b',"prev":"%s","seq":%d,"session":%s,"ts":"' % (head, expected, session_json)
        self.lineno, self.records = lineno, expected

    def _plain(self, type_: bytes) -> bool:
        """Whether a type not seen yet is a plain name (then its line can take the fast path too)."""
        if len(self._plain_types) >= 256 or not _PLAIN_TYPE_BYTES.fullmatch(type_):
            return False
        self._plain_types.add(type_)
        return True

    def _check_raw(self, line: bytes) -> None:
        """Raise unless the line has a sane length, an end, and is UTF-8."""
        if len(line) > MAX_LINE:
            raise _Bad(f"{self.name} line {self.lineno} cannot be read: it is longer than "
                       f"{MAX_LINE // (1024 * 1024)} MiB.", readable=False)
        if line[-1] != 0x0A:
            raise _Bad(f"{self._where()} is cut short: the journal was truncated.")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"{self._where()} is not valid UTF-8.", readable=False) from None

    def _slow_envelope(self, line: bytes, expected: int, head: bytes) -> bytes:
        """Parse a line fully, check its place in the chain, and return its type."""
        try:
            record = parse_record(line)
        except BadLine as exc:
            raise _Bad(f"{self._where()} is not a journal record: {exc}.") from None
        if record["seq"] != expected:
            raise _Bad(f"{self._where(record['seq'])} is out of order, seq {expected} was expected there: "
                       "a record was removed, inserted, duplicated or moved.", seq=record["seq"])
        if record["prev"].encode("ascii") != head:
            raise _Bad(f"{self._where()} does not chain to the line before it (its prev hash differs): "
                       "a record was changed, removed or inserted.")
        if self.session is None:
            self.session = record["session"]
        elif record["session"] != self.session:
            raise _Bad(f"{self._where()} belongs to session {record['session']!r}, not {self.session!r}.")
        type_ = record["type"]
        if _PLAIN_TYPE.fullmatch(type_) and len(self._plain_types) < 256:
            self._plain_types.add(type_.encode("ascii"))
        if expected == 0:
            self._check_start(record)
        if type_ in SIGNED_TYPES:
            self._check_signature(record)
        return type_.encode("utf-8")

    def _fingerprint(self, blob: bytes) -> str:
        """A signer's fingerprint (a journal's checkpoints are all signed by one key: worked out once)."""
        if blob != self._signer[0]:
            self._signer = (blob, fingerprint(blob))
        return self._signer[1]

    def _check_start(self, record: dict) -> None:
        device = record["data"].get("device")
        if record["type"] != "journal-start" or type(device) is not str:
            raise _Bad(f"{self._where()} should be the journal-start record naming the device key.")
        self.device = device
        mode, account = record["data"].get("mode"), record["data"].get("key_account")
        self.mode = mode if type(mode) is str else None
        self.key_account = account if type(account) is str else None
        if self.key_blob is not None and device != fingerprint(self.key_blob):
            raise _Bad(f"{self._where()} names the device key {device}, "
                       f"not the bundle's key {fingerprint(self.key_blob)}.")

    def _check_signature(self, record: dict) -> None:
        data, what = record["data"], f"{self._where()}, a {record['type']},"
        if data.get("count") != record["seq"] or data.get("head") != record["prev"]:
            raise _Bad(f"{what} does not commit to the chain before it (count or head is wrong).")
        sig, key = data.get("sig"), data.get("key")
        if type(sig) is not str or type(key) is not str:
            raise _Bad(f"{what} lacks its signature or key.")
        try:
            signed = sshsig.verify_blob(strict_dearmor(sig), NAMESPACE, checkpoint_message(record))
        except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure to parse or check is a bad signature
            raise _Bad(f"{what} has a bad signature: {exc}.") from None
        signer = self._fingerprint(signed.public_key_blob)
        if key != signer:
            raise _Bad(f"{what} names the key {key} but was signed by {signer}.")
        if self.key_blob is None:
            if signer != self.device:
                raise _Bad(f"{what} is signed by {signer}, not by the device {self.device} "
                           "that started the journal.")
            self.key_blob = signed.public_key_blob
        elif signed.public_key_blob != self.key_blob:
            raise _Bad(f"{what} is signed by {signer}, not by {self.key_label} {fingerprint(self.key_blob)}.")
        self.checkpoints += 1
