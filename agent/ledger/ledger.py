"""The device ledger: one append-only Merkle log per device, with signed and cosigned tree heads.

It knows nothing of sessions: an entry is opaque bytes without a newline (the
service logs journal lines, byte for byte). Its folder, ``HOME/ledger/``:

``entries``, ``index``, ``hashes``, ``lock``
    the log itself (``agent.ledger.store``).
``key``
    the ledger's own Ed25519 key (PKCS#8 PEM, 0600), made on first use.
``checkpoint``
    the newest signed tree head: a C2SP tlog-checkpoint note signed by the
    ledger key under the origin's name, replaced atomically.
``cosigned.jsonl``
    every head a witness cosigned, one canonical JSON object a line:
    ``{"at", "note", "size", "witnesses"}`` where ``note`` is the checkpoint
    with the log's signature and every cosignature known for it.

The origin is ``ledger.origin`` from the settings, else
``chaperone.local/device/<fingerprint>``, the fingerprint being the device
key's 43 base64 characters in the URL-safe alphabet (a key name may not hold
``+``). A head is signed only over synced entries, and never smaller than, or
inconsistent with, the last one signed: on open the stored hashes must still
give the last signed head's root, or the ledger refuses to open (it was cut or
changed while the agent was down).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from agent.atomic import replace_file
from agent.canonical import canonical_bytes
from agent.clock import rfc3339, utc_now
from agent.devicekey import DeviceKey
from agent.errors import LedgerError
from agent.home import Home
from agent.ledger import merkle
from agent.ledger.checkpoint import Checkpoint, TlogProof
from agent.ledger.keyfile import load_or_make_key
from agent.ledger.note import (
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteError,
    Signature,
    Verifier,
    open_note,
    parse_note,
    sign_note,
    verified_by,
)
from agent.ledger.store import LedgerStore

ORIGIN_PREFIX = "chaperone.local/device/"
KEY = "key"
CHECKPOINT = "checkpoint"
COSIGNED = "cosigned.jsonl"
#: Cosigned heads kept in memory (the rest stay in ``cosigned.jsonl``).
RECENT_HEADS = 64


def ledger_dir(home: Home) -> Path:
    return home.path / "ledger"


def default_origin(device_fingerprint: str) -> str:
    """``chaperone.local/device/<fingerprint's base64, URL-safe>`` (no ``+``, no extra ``/``)."""
    b64 = device_fingerprint.removeprefix("SHA256:")
    return ORIGIN_PREFIX + b64.replace("+", "-").replace("/", "_")


@dataclass(frozen=True)
class SignedHead:
    """A tree head signed by the ledger key: the checkpoint and its note (with any cosignatures)."""

    checkpoint: Checkpoint
    note: bytes

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class CosignedHead:
    """A head with the cosignatures of ``witnesses`` (their key names), the newest at ``at``."""

    checkpoint: Checkpoint
    note: bytes
    witnesses: tuple[str, ...]
    at: str

    @property
    def size(self) -> int:
        return self.checkpoint.size

    def to_json(self) -> dict:
        return {"at": self.at, "note": self.note.decode("utf-8"), "size": self.size,
                "witnesses": list(self.witnesses)}


def _identity(home: Home) -> tuple[Ed25519Signer, bool]:
    folder = ledger_dir(home)
    key, created = load_or_make_key(folder / KEY, "ledger key", LedgerError)
    origin = home.settings().ledger.origin or default_origin(DeviceKey.load(home).fingerprint)
    return Ed25519Signer(origin, key), created


def ledger_identity(home: Home) -> tuple[str, str]:
    """``(origin, verifier key)`` of the home's ledger, making its key if missing."""
    signer, _ = _identity(home)
    return signer.name, signer.vkey


class Ledger:
    """The device's ledger. ``Ledger.open(home)`` for the agent (the one writer), or
    ``Ledger.open(home, readonly=True)`` to read it while the agent runs."""

    def __init__(self, folder: Path, store: LedgerStore, signer: Ed25519Signer,
                 last_signed: SignedHead | None) -> None:
        self.folder = folder
        self.store = store
        self.signer = signer
        self._last_signed = last_signed
        self._head_lock = threading.Lock()
        self._recent: list[CosignedHead] = []
        self._load_cosigned()

    @classmethod
    def open(cls, home: Home, *, readonly: bool = False, lock_wait: float = 0.0) -> Ledger:
        folder = ledger_dir(home)
        signer, _ = _identity(home)
        last = _read_signed_head(folder, signer)
        store = LedgerStore.open(folder, readonly=readonly, verify_from=last.size if last else 0, lock_wait=lock_wait)
        try:
            if last is not None:
                if last.size > store.size:
                    raise LedgerError(
                        f"The ledger in {folder} holds {store.size} entries but its last signed head covers "
                        f"{last.size}: entries were removed while the agent was stopped; keep the folder as it "
                        "is for inspection and report it.")
                if store.tree_hash(last.size) != last.checkpoint.root:
                    raise LedgerError(
                        f"The ledger in {folder} no longer matches its last signed head (size {last.size}): it "
                        "was changed while the agent was stopped; keep the folder as it is for inspection and "
                        "report it.")
        except BaseException:
            store.close()
            raise
        return cls(folder, store, signer, last)

    # --- identity ----------------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    @property
    def verifier(self) -> Ed25519Verifier:
        return self.signer.verifier

    @property
    def size(self) -> int:
        return self.store.size

    @property
    def recovered(self) -> list[dict]:
        return self.store.recovered

    # --- appending and heads -------------------------------------------------------------------------
    def append(self, entry: bytes, *, sync: bool = False) -> int:
        """Add an entry (bytes without a newline); return its index. ``sync`` makes it durable now."""
        index = self.store.append(entry)
        if sync:
            self.store.sync()
        return index

    def sign_head(self) -> SignedHead:
        """Sync, then sign and save a checkpoint of the whole ledger (the same one again if nothing was added)."""
        with self._head_lock:
            # The head covers exactly what this sync made durable (appends may go on meanwhile).
            size = self.store.sync()
            root = self.store.tree_hash(size)
            last = self._last_signed
            if last is not None and last.size == size and last.checkpoint.root == root:
                return last
            checkpoint = Checkpoint(self.origin, size, root)
            note = sign_note(checkpoint.text(), self.signer)
            try:
                replace_file(self.folder / CHECKPOINT, note)
            except OSError as exc:
                raise LedgerError(f"Cannot save the ledger's signed head in {self.folder}: {exc.strerror}.") from None
            self._last_signed = SignedHead(checkpoint, note)
            return self._last_signed

    @property
    def last_signed(self) -> SignedHead | None:
        return self._last_signed

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.store.consistency_proof(old_size, new_size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.store.inclusion_proof(index, size)

    def tree_hash(self, size: int) -> bytes:
        return self.store.tree_hash(size)

    def entry(self, index: int) -> bytes:
        return self.store.entry(index)

    def find(self, entries: Iterable[bytes], stop_below: int = 0, *, newest: bool = True) -> dict[bytes, int]:
        """The index of each of ``entries`` in the ledger (those it holds), by entry: its newest occurrence,
        or its first with ``newest=False``."""
        by_leaf = {merkle.leaf_hash(e): e for e in entries}
        return {by_leaf[h]: i for h, i in self.store.find_leaves(by_leaf, stop_below, newest=newest).items()}

    # --- cosignatures -------------------------------------------------------------------------------
    def record_cosignatures(self, note: bytes, cosignatures: Sequence[Signature],
                            verifiers: Sequence[Verifier]) -> CosignedHead:
        """Keep the cosignatures a witness returned for ``note`` (a head this ledger signed).

        Only cosignatures that ``verifiers`` check are kept (``NoteError`` if one by a known key
        fails, or if none is known); they are merged with those already kept for the same head,
        written to ``cosigned.jsonl`` and synced before this returns."""
        parsed, _ = open_note(note, [self.verifier])
        checkpoint = Checkpoint.from_note(parsed)
        with_new = parsed.with_signatures(cosignatures)
        witnesses = verified_by(Note(with_new.text, tuple(cosignatures)), verifiers)
        if not witnesses:
            raise NoteError("none of the cosignatures is by a known witness")
        names = {w.name for w in witnesses}
        kept = [s for s in cosignatures if s.name in names]
        with self._head_lock:
            previous = next((h for h in reversed(self._recent) if h.checkpoint == checkpoint), None)
            base = parse_note(previous.note) if previous else parsed
            merged = base.with_signatures(kept)
            all_names = tuple(sorted({*(previous.witnesses if previous else ()), *names}))
            head = CosignedHead(checkpoint, merged.to_bytes(), all_names, rfc3339(utc_now()))
            line = canonical_bytes(head.to_json()) + b"\n"
            try:
                fd = os.open(self.folder / COSIGNED, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise LedgerError(f"Cannot save a cosigned head in {self.folder}: {exc.strerror}.") from None
            self._remember(head)
        return head

    def _remember(self, head: CosignedHead) -> None:
        self._recent = [h for h in self._recent if h.checkpoint != head.checkpoint] + [head]
        del self._recent[:-RECENT_HEADS]

    def _load_cosigned(self) -> None:
        for head in self._read_cosigned():
            self._remember(head)

    def _read_cosigned(self) -> Iterable[CosignedHead]:
        """The cosigned heads on disk, oldest first; a line that is torn or not ours is skipped."""
        try:
            with open(self.folder / COSIGNED, "rb") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LedgerError(f"Cannot read the cosigned heads in {self.folder}: {exc.strerror}.") from None
        for line in lines:
            try:
                obj = json.loads(line)
                note = obj["note"].encode("utf-8")
                parsed, _ = open_note(note, [self.verifier])
                yield CosignedHead(Checkpoint.from_note(parsed), note, tuple(obj["witnesses"]), obj["at"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a torn last line (a crash while writing) or a head from an earlier origin

    def cosigned_heads(self) -> list[CosignedHead]:
        """Every cosigned head kept on disk, oldest first."""
        return list(self._read_cosigned())

    @property
    def last_cosigned(self) -> CosignedHead | None:
        return self._recent[-1] if self._recent else None

    def last_cosigned_size(self, witness: str) -> int:
        """The size of the newest head ``witness`` (a key name) cosigned for us; 0 if none."""
        for head in reversed(self._recent):
            if witness in head.witnesses:
                return head.size
        return max((h.size for h in self._read_cosigned() if witness in h.witnesses), default=0)

    def cosigned_covering(self, index: int, verifiers: Sequence[Verifier] = (), quorum: int = 1) -> CosignedHead | None:
        """The newest cosigned head that covers entry ``index`` and carries cosignatures by at least
        ``quorum`` of ``verifiers`` (by any witness when none are given); None if there is none."""
        def good(head: CosignedHead) -> bool:
            if head.size <= index:
                return False
            if not verifiers:
                return bool(head.witnesses)
            try:
                return len(verified_by(parse_note(head.note), verifiers)) >= quorum
            except NoteError:
                return False
        for head in reversed(self._recent):
            if good(head):
                return head
        for head in reversed(self.cosigned_heads()):
            if good(head):
                return head
        return None

    def tlog_proof(self, index: int, head: CosignedHead | SignedHead) -> bytes:
        """A C2SP tlog-proof of entry ``index`` in ``head`` (which must cover it)."""
        proof = self.store.inclusion_proof(index, head.size)
        return TlogProof(index, tuple(proof), head.note).to_bytes()

    # --- export ----------------------------------------------------------------------------------
    def export(self, out: Path) -> SignedHead | None:
        """Write the ledger for a client into the folder ``out`` (see docs/ARCHITECTURE.md, "Ledger")."""
        head = self._last_signed if self.store.readonly else self.sign_head()
        out.mkdir(parents=True, exist_ok=True)
        (out / "cosigned").mkdir(exist_ok=True)
        (out / "origin").write_text(self.origin + "\n", encoding="utf-8")
        (out / "vkey").write_text(self.vkey + "\n", encoding="utf-8")
        size = head.size if head else 0
        self.store.copy_entries(out / "entries", size)
        if head is not None:
            last = self.last_cosigned
            best = last if last and last.checkpoint == head.checkpoint else None
            (out / "checkpoint").write_bytes(best.note if best else head.note)
        for cosigned in self.cosigned_heads():
            if cosigned.size <= size:
                (out / "cosigned" / str(cosigned.size)).write_bytes(cosigned.note)
        return head

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_signed_head(folder: Path, signer: Ed25519Signer) -> SignedHead | None:
    try:
        data = (folder / CHECKPOINT).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerError(f"Cannot read the ledger's signed head in {folder}: {exc.strerror}.") from None
    try:
        note, _ = open_note(data, [signer.verifier])
        checkpoint = Checkpoint.from_note(note)
    except NoteError:
        raise LedgerError(
            f"The ledger's signed head {folder / CHECKPOINT} is not signed by the ledger key for origin "
            f"{signer.name}; if ledger.origin was changed, set it back, else keep the folder for inspection "
            "and report it.") from None
    if checkpoint.origin != signer.name:
        raise LedgerError(f"The ledger's signed head {folder / CHECKPOINT} is for origin {checkpoint.origin}, "
                          f"not {signer.name}; set ledger.origin back or report it.")
    return SignedHead(checkpoint, data)
