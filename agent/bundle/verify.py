"""``verify_bundle``: is this bundle genuine, and if not, what is the first thing wrong?

In order, stopping at the first failure:

1. the bundle can be read (a zip or a folder; exit 2 otherwise);
2. it holds exactly the six files, with plain names;
3. ``allowed_signers`` names one Ed25519 key, the one pinned if a fingerprint is given;
4. ``SHA256SUMS.sig`` is that key's SSHSIG over ``SHA256SUMS`` (armored exactly as ssh-keygen writes it);
5. every file matches ``SHA256SUMS``;
6. the journal is genuine (chain, checkpoints and seal signed by that same key);
7. the ledger evidence (``ledger.proof``, ``ledger.checkpoints``, when present,
   listed in SHA256SUMS): with ``witnesses``, every checkpoint and the seal are
   in heads each named witness cosigned in time (``agent.bundle.witnessing``),
   else the bundle is not genuine; without, what it claims is reported.

The journal is read once, streaming, for steps 5 and 6, and once more for 7;
when it is small enough to keep in memory (``KEEP``), a zip member is inflated once.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from agent import sshsig
from agent.bundle.layout import (
    FILES,
    JOURNAL,
    LEDGER_CHECKPOINTS,
    LEDGER_PROOF,
    NAMESPACE,
    OPTIONAL,
    SIG,
    SIGNERS,
    SUMMED,
    SUMS,
    parse_signers,
    parse_sums,
)
from agent.bundle.source import BundleSource, Unexpected, Unreadable, snapshot
from agent.bundle.witnessing import DEFAULT_MAX_LAG, WitnessReport, check_evidence
from agent.errors import KeyFormatError, LayoutError, NoteError
from agent.journal.format import strict_dearmor
from agent.journal.reader import iter_lines
from agent.journal.verify import JournalCheck, verify_journal
from agent.ledger.cosignature import CosignatureVerifier, vkey_verifier
from agent.sshkeys import fingerprint as fingerprint_of
from agent.sshkeys import line_to_blob

EXIT_GENUINE, EXIT_NOT_GENUINE, EXIT_UNREADABLE = 0, 1, 2
#: A journal up to this size is read into memory once and checked from there (see ``BundleSource.load``).
KEEP = 64 << 20


@dataclass(frozen=True)
class Verdict:
    """What ``verify_bundle`` found. ``reason`` is one sentence naming the file,
    or the record's line and seq, and why."""

    genuine: bool
    readable: bool
    reason: str
    fingerprint: str | None = None  # the bundle's signing key
    pinned: bool = False  # a fingerprint was given and matched
    session: str | None = None
    records: int = 0
    unsealed: int = 0  # records after the last seal
    principal: str | None = None
    file: str | None = None  # the bad file, if any
    line: int | None = None  # the first bad record's line and seq, if any
    seq: int | None = None
    witness: dict | None = None  # the ledger evidence: WitnessReport.to_json()
    mode: str | None = None  # the agent's mode, as the journal says: "system" or "personal"
    key_account: str | None = None  # the account that could read the device key, as the journal says

    @property
    def exit_code(self) -> int:
        if self.genuine:
            return EXIT_GENUINE
        return EXIT_NOT_GENUINE if self.readable else EXIT_UNREADABLE

    def to_json(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


class _Fail(Exception):
    def __init__(self, reason: str, *, readable: bool = True, file: str | None = None,
                 check: JournalCheck | None = None):
        super().__init__(reason)
        self.reason, self.readable, self.file, self.check = reason, readable, file, check


def normalize_fingerprint(text: str) -> str:
    """``SHA256:…`` as ssh-keygen prints it (the prefix may be left out)."""
    text = text.strip()
    return text if text.startswith("SHA256:") else f"SHA256:{text}"


def witness_verifiers(vkeys: Sequence[str]) -> list[CosignatureVerifier]:
    """Verifiers for the witnesses' keys given on the command line; ``NoteError`` names a bad one."""
    out = []
    for vkey in vkeys:
        verifier = vkey_verifier(vkey)
        if not isinstance(verifier, CosignatureVerifier):
            raise NoteError(f"{vkey[:60]!r} is a log's key, not a witness's (cosignature) key")
        out.append(verifier)
    return out


def verify_bundle(path: str | os.PathLike | BundleSource, fingerprint: str | None = None, *,
                  witnesses: Sequence[str] = (), origin: str | None = None,
                  max_lag: float = DEFAULT_MAX_LAG) -> Verdict:
    """Check a bundle (zip or folder, or one already open, which is left open). Never raises for bad
    content (a malformed ``witnesses`` key raises ``NoteError``: that is the caller's input). With
    ``witnesses``, the bundle is genuine only if each of them witnessed its every checkpoint and its seal
    in time (see ``agent.bundle.witnessing``)."""
    pin = normalize_fingerprint(fingerprint) if fingerprint else None
    verifiers = witness_verifiers(witnesses)
    facts: dict = {}
    try:
        with ExitStack() as stack:
            # a path is read once (``snapshot``): a large journal is read twice (to verify it, then to check its
            # ledger evidence), and a bundle swapped in between must not be the one the evidence is about
            source = (path if isinstance(path, BundleSource)
                      else stack.enter_context(stack.enter_context(snapshot(Path(path))).open(KEEP)))
            check = _verify(source, pin, facts)
            report = _witnessing(source, facts["fingerprint"], verifiers, origin, max_lag)
            facts["witness"] = report.to_json()
            if verifiers and not report.complete:
                raise _Fail(report.problem or "The bundle's ledger evidence is incomplete.",
                            file=LEDGER_PROOF if report.present else None, check=check)
    except Unreadable as exc:
        return Verdict(False, False, str(exc), **facts)
    except Unexpected as exc:
        return Verdict(False, True, str(exc), **facts)
    except _Fail as fail:
        failed = fail.check
        extra: dict = {"session": failed.session, "records": failed.records, "unsealed": failed.unsealed,
                       "line": failed.line, "seq": failed.seq} if failed else {}
        return Verdict(False, fail.readable, fail.reason, file=fail.file, **facts, **extra)
    return Verdict(True, True, f"Genuine: session {check.session}, {check.records} records, sealed, "
                               f"signed by {facts['principal']} with key {facts['fingerprint']}.",
                   pinned=pin is not None, session=check.session, records=check.records, unsealed=0, **facts)


def _verify(source: BundleSource, pin: str | None, facts: dict) -> JournalCheck:
    names = set(source.names)
    for name in FILES:
        if name not in names:
            raise _Fail(f"The bundle lacks {name}.", file=name)
    extra = sorted(names - set(FILES) - set(OPTIONAL))
    if extra:
        raise _Fail(f"The bundle holds {extra[0]}, which SHA256SUMS does not list.", file=extra[0])

    try:
        principal, public_line = parse_signers(source.read(SIGNERS))
        key_blob = line_to_blob(public_line)
    except (LayoutError, KeyFormatError) as exc:
        raise _Fail(f"{exc}.", file=SIGNERS) from None
    facts.update(principal=principal, fingerprint=fingerprint_of(key_blob))
    if pin is not None and facts["fingerprint"] != pin:
        raise _Fail(f"The bundle is signed by the key {facts['fingerprint']}, not by the pinned device key {pin}.",
                    file=SIGNERS)

    sums = source.read(SUMS)
    try:
        signed = sshsig.verify_blob(strict_dearmor(source.read(SIG).decode("ascii")), NAMESPACE, sums)
    except Exception as exc:  # noqa: BLE001 - hostile bytes: any failure to parse or check is a bad signature
        raise _Fail(f"{SIG} is not a valid signature of {SUMS} ({exc}).", file=SIG) from None
    if signed.public_key_blob != key_blob:
        raise _Fail(f"{SIG} is signed by {fingerprint_of(signed.public_key_blob)}, not by the key in {SIGNERS}.",
                    file=SIG)
    try:
        digests = parse_sums(sums)
    except LayoutError as exc:
        raise _Fail(f"{exc}.", file=SUMS) from None

    for name in OPTIONAL:
        if (name in names) != (name in digests):
            raise _Fail(f"The bundle {'holds' if name in names else 'lacks'} {name}, which SHA256SUMS "
                        f"{'does not list' if name in names else 'lists'}.", file=name)
    for name in [*SUMMED, *(n for n in OPTIONAL if n in names)]:
        if name == JOURNAL:
            data = source.load(JOURNAL)
            if data is not None:
                check = verify_journal(io.BytesIO(data), key_blob, name=JOURNAL)
                digest = hashlib.sha256(data).hexdigest()
            else:
                with source.open(JOURNAL) as stream:
                    tee = _HashingReader(stream)
                    check = verify_journal(tee, key_blob, name=JOURNAL)
                    digest = tee.finish()
            if digest != digests[JOURNAL]:
                why = f": {check.reason}" if not check.ok else ""
                raise _Fail(f"{JOURNAL} does not match {SUMS}, so it was changed after signing{_clause(why)}",
                            file=JOURNAL, check=check)
        elif _digest(source, name) != digests[name]:
            raise _Fail(f"{name} does not match {SUMS}, so it was changed after signing.", file=name)
    facts.update(mode=check.mode, key_account=check.key_account)
    if not check.ok:
        raise _Fail(check.reason, readable=check.readable, file=JOURNAL, check=check)
    return check


def _witnessing(source: BundleSource, device_fingerprint: str, verifiers: list[CosignatureVerifier],
                origin: str | None, max_lag: float) -> WitnessReport:
    proof = source.read(LEDGER_PROOF) if LEDGER_PROOF in source.names else None
    checkpoints = source.read(LEDGER_CHECKPOINTS) if LEDGER_CHECKPOINTS in source.names else None
    with source.open(JOURNAL) as stream:
        return check_evidence(iter_lines(stream), proof, checkpoints, verifiers,
                              device_fingerprint=device_fingerprint, origin=origin, max_lag=max_lag)


def _clause(why: str) -> str:
    """Join a journal reason as a clause of the sentence."""
    return (why[:-1] if why.endswith(".") else why) + "."


def _digest(source: BundleSource, name: str) -> str:
    with source.open(name) as stream:
        return _HashingReader(stream).finish()


class _HashingReader:
    """A binary stream that hashes what is read through it (``finish`` reads the rest)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()

    def readline(self, limit: int = -1) -> bytes:
        try:
            line = self._stream.readline(limit)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, zlib.error… for damaged data
            raise OSError(f"its data is damaged ({exc})") from None
        self._hash.update(line)
        return line

    def finish(self) -> str:
        try:
            while chunk := self._stream.read(1 << 20):
                self._hash.update(chunk)
        except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, zlib.error… for damaged data
            raise Unreadable(f"A file of the bundle cannot be read to its end ({exc}).") from None
        return self._hash.hexdigest()
