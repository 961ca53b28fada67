"""``export_bundle``: the signed bundle of a sealed session, as a zip or a folder.

It works from the home's files alone (the History row and the journal), so no
agent needs to run. The journal is copied, hashed and verified in one pass,
so the bundle holds exactly the bytes that were checked; a journal that is not
sealed, or not intact, is refused. Output appears atomically: a zip is
written under a temporary name and renamed; a folder's files likewise.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from agent.bundle.layout import (
    FILES,
    JOURNAL,
    LEDGER_CHECKPOINTS,
    LEDGER_PROOF,
    OPTIONAL,
    PRINCIPAL,
    REPORT,
    SIG,
    SIGNERS,
    SUMS,
    VERIFY,
    sums_text,
    verify_text,
)
from agent.bundle.report import BundleCopy, write_report
from agent.bundle.witnessing import Evidence, collect_evidence
from agent.devicekey import DeviceKey
from agent.errors import ChaperoneError, KeyFileError, UsageError
from agent.history import History
from agent.home import Home
from agent.journal.reader import iter_lines
from agent.journal.verify import verify_journal
from agent.ledger import Ledger, ledger_dir

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}")


def export_bundle(home: Home, session_id: str, out: str | os.PathLike) -> Path:
    """Write the bundle of ``session_id`` to ``out``: a zip, or a folder when
    ``out`` ends with ``/`` or is an existing folder. Returns the path written."""
    return export_bundle_with_evidence(home, session_id, out)[0]


def journal_of(home: Home, session_id: str) -> tuple[Path, dict | None]:
    """The journal of ``session_id`` and its history row; ``UsageError`` if there is none."""
    if not SESSION_ID.fullmatch(session_id):
        raise UsageError(f"{session_id!r} is not a session id; 'chaperone sessions' lists them.")
    with History(home, readonly=True) as history:
        row = history.get(session_id)
    journal = Path(row["journal"]) if row and row.get("journal") else home.journal_path(session_id)
    if not journal.is_file():
        if row is None:
            raise UsageError(f"There is no session {session_id} in {home.path}; 'chaperone sessions' lists them.")
        raise UsageError(f"The journal of session {session_id} is missing from {journal}.")
    return journal, row


def ledger_evidence(home: Home, journal: Path) -> Evidence | None:
    """The device ledger's evidence for a sealed journal (read-only: the agent may hold the ledger);
    None when this home has no ledger."""
    if not ledger_dir(home).is_dir():
        return None
    with Ledger.open(home, readonly=True) as ledger:
        return collect_evidence(ledger, _lines_of(journal))


def export_bundle_with_evidence(home: Home, session_id: str, out: str | os.PathLike) -> tuple[Path, Evidence | None]:
    """``export_bundle``, and what the ledger had for it (``ledger.proof``, ``ledger.checkpoints``)."""
    if not SESSION_ID.fullmatch(session_id):
        raise UsageError(f"{session_id!r} is not a session id; 'chaperone sessions' lists them.")
    key = DeviceKey.load(home)
    if not PRINCIPAL.fullmatch(key.principal):
        raise KeyFileError(f"The device key's name {key.principal!r} cannot appear in allowed_signers; "
                           f"edit the comment in {home.pub_path} to a plain name such as chaperone@host.")
    journal, row = journal_of(home, session_id)

    out_text = os.fspath(out)
    as_folder = out_text.endswith(("/", os.sep)) or Path(out_text).is_dir()
    target = Path(out_text).absolute()
    writer = _FolderWriter(target) if as_folder else _ZipWriter(target)
    try:
        digests = {}
        with open(journal, "rb") as src, writer.create(JOURNAL) as dst:
            copy = _CopyingReader(src, dst)
            check = verify_journal(copy, key.public_blob, name=JOURNAL)
            digests[JOURNAL] = copy.digest()
        if not check.ok:
            if check.chain_ok:
                raise UsageError(f"Session {session_id} is not sealed yet; end it first with "
                                 f"'chaperone end {session_id}', then export it.")
            raise ChaperoneError(f"The journal of session {session_id} is not intact, so it cannot be exported "
                                 f"as genuine: {check.reason}")
        evidence = ledger_evidence(home, journal)
        with writer.create(REPORT) as raw:
            report = _HashingSink(raw)
            write_report(report, lambda: _lines_of(journal), history=row,
                         copy=BundleCopy(target.name, key.fingerprint))
            digests[REPORT] = report.digest()
        files = {
            VERIFY: verify_text(session_id, key.principal, key.fingerprint, target.name,
                                witnessed_by=evidence.witnessed_by if evidence and evidence.proof else None,
                                mode=check.mode, key_account=check.key_account).encode("utf-8"),
            SIGNERS: (key.allowed_signers_line() + "\n").encode("ascii"),
        }
        if evidence is not None and evidence.proof is not None:
            files[LEDGER_PROOF] = evidence.proof
            if evidence.checkpoints is not None:
                files[LEDGER_CHECKPOINTS] = evidence.checkpoints
        for name, data in files.items():
            writer.write(name, data)
            digests[name] = hashlib.sha256(data).hexdigest()
        sums = sums_text(digests)
        writer.write(SUMS, sums)
        writer.write(SIG, key.sign(sums).encode("ascii"))
        writer.commit()
    except OSError as exc:
        writer.abort()
        raise ChaperoneError(f"Cannot write the bundle {target}: {exc.strerror or exc}.") from None
    except BaseException:
        writer.abort()
        raise
    return target, evidence


def _lines_of(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        yield from iter_lines(stream)


class _HashingSink:
    """A text sink writing UTF-8 to a binary stream and hashing it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._hash.update(data)
        self._raw.write(data)

    def digest(self) -> str:
        return self._hash.hexdigest()


class _CopyingReader:
    """Reads lines from ``src``, writing and hashing each as it passes."""

    def __init__(self, src: BinaryIO, dst: IO[bytes]) -> None:
        self._src, self._dst = src, dst
        self._hash = hashlib.sha256()

    def readline(self, limit: int = -1) -> bytes:
        line = self._src.readline(limit)
        self._dst.write(line)
        self._hash.update(line)
        return line

    def digest(self) -> str:
        while chunk := self._src.read(1 << 20):  # whatever verification did not read
            self._dst.write(chunk)
            self._hash.update(chunk)
        return self._hash.hexdigest()


class _ZipWriter:
    def __init__(self, target: Path) -> None:
        if not target.parent.is_dir():
            raise UsageError(f"The folder {target.parent} does not exist; create it or choose another -o.")
        self.target = target
        self.temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            self.zip = zipfile.ZipFile(self.temp, "w", zipfile.ZIP_DEFLATED, compresslevel=6)
        except OSError as exc:
            raise ChaperoneError(f"Cannot write the bundle {target}: {exc.strerror or exc}.") from None

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def create(self, name: str) -> IO[bytes]:
        return self.zip.open(self._info(name), "w", force_zip64=True)

    def write(self, name: str, data: bytes) -> None:
        self.zip.writestr(self._info(name), data)

    def commit(self) -> None:
        self.zip.close()
        os.replace(self.temp, self.target)

    def abort(self) -> None:
        try:
            self.zip.close()
        except Exception:  # noqa: BLE001 - already failing; the temporary file goes either way
            pass
        self.temp.unlink(missing_ok=True)


class _FolderWriter:
    def __init__(self, target: Path) -> None:
        try:
            target.mkdir(parents=True, exist_ok=True)
            others = sorted(set(os.listdir(target)) - set(FILES) - set(OPTIONAL))
        except OSError as exc:
            raise ChaperoneError(f"Cannot write the bundle folder {target}: {exc.strerror}.") from None
        if others:
            raise UsageError(f"The folder {target} holds other files ({', '.join(others[:3])}); "
                             "export into a new or empty folder.")
        self.target = target
        self._temps: list[tuple[Path, Path]] = []

    def _temp(self, name: str) -> Path:
        temp = self.target / f".{name}.{os.getpid()}.tmp"
        self._temps.append((temp, self.target / name))
        return temp

    def create(self, name: str) -> BinaryIO:
        return open(self._temp(name), "wb")

    def write(self, name: str, data: bytes) -> None:
        with open(self._temp(name), "wb") as fh:
            fh.write(data)

    def commit(self) -> None:
        for temp, final in self._temps:
            os.replace(temp, final)
        written = {final.name for _, final in self._temps}
        for name in OPTIONAL:  # a re-export without ledger evidence leaves no stale proof behind
            if name not in written:
                (self.target / name).unlink(missing_ok=True)

    def abort(self) -> None:
        for temp, _ in self._temps:
            temp.unlink(missing_ok=True)
