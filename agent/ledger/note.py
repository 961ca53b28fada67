"""C2SP signed notes (https://c2sp.org/signed-note), with Ed25519 signatures.

A note is UTF-8 text ending in a newline, a blank line, then one or more
signature lines ``— <key name> <base64(4-byte key id || signature)>``. It holds
no control character but the newline. A key is named (no spaces, no ``+``)
and identified by ``key id = SHA-256(name || "\\n" || type || public key)[:4]``
(big-endian); a verifier key ("vkey") is written ``name+<8 hex key id>+
<base64(type || public key)>``, as Go's ``golang.org/x/mod/sumdb/note``
writes and reads them. Type ``0x01`` is a plain Ed25519 signature over the
note text (this module); ``0x04`` is a timestamped witness cosignature
(``agent.ledger.cosignature``).

Opening a note follows the specification: signatures by keys we do not know
(name and id) are ignored; a known key's signature that does not verify
rejects the whole note; a note with no verified signature is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import sigcheck
from agent.errors import NoteError

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"
#: The most signature lines a note may carry (the specification asks for at least 16; Go allows 100).
MAX_SIGNATURES = 100
#: The longest note we read (a checkpoint with 100 cosignatures is under 20 KB).
MAX_NOTE = 1 << 20


def valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no ``+`` (and, being text, valid Unicode)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and _printable(name)


def _printable(text: str) -> bool:
    return all(c == "\n" or ord(c) >= 0x20 for c in text)


def key_id(name: str, alg: int, public: bytes) -> int:
    """``SHA-256(name || "\\n" || alg || public)[:4]`` as a big-endian integer."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def make_vkey(name: str, alg: int, public: bytes) -> str:
    """The verifier key ``name+<hex id>+<base64(alg || public)>``."""
    if not valid_name(name):
        raise NoteError(f"{name!r} cannot name a key (no spaces, no '+', not empty)")
    return f"{name}+{key_id(name, alg, public):08x}+{base64.b64encode(bytes([alg]) + public).decode('ascii')}"


def b64decode(text: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), padded, and nothing else (no newlines, no URL alphabet)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError("not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError("not canonical base64")
    return raw


def split_vkey(vkey: str) -> tuple[str, int, int, bytes]:
    """``(name, key id, alg, public key)`` of a verifier key; ``NoteError`` if malformed or if its id
    does not match its name and key."""
    parts = vkey.strip().split("+")
    # The base64 may itself hold '+': the name and the id are the first two fields.
    if len(parts) < 3:
        raise NoteError("a verifier key has the form name+hash+base64")
    name, hex_id, b64 = parts[0], parts[1], "+".join(parts[2:])
    if not valid_name(name) or len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteError("a verifier key has the form name+hash+base64 (8 lowercase hex digits)")
    raw = b64decode(b64)
    if len(raw) < 2:
        raise NoteError("the verifier key holds no key")
    alg, public = raw[0], raw[1:]
    if key_id(name, alg, public) != int(hex_id, 16):
        raise NoteError("the verifier key's hash does not match its name and key")
    return name, int(hex_id, 16), alg, public


class Verifier(Protocol):
    """A key that can check signatures on notes: its name, its key id, and the check."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    @property
    def vkey(self) -> str: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """A key that signs notes."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, text: bytes) -> bytes: ...


def raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Ed25519Verifier:
    """Checks type 0x01 signatures: Ed25519 over the note text."""

    name: str
    public: bytes

    @property
    def key_id(self) -> int:
        return key_id(self.name, ALG_ED25519, self.public)

    @property
    def vkey(self) -> str:
        return make_vkey(self.name, ALG_ED25519, self.public)

    def verify(self, text: bytes, signature: bytes) -> bool:
        return sigcheck.valid(self.public, signature, text)


@dataclass(frozen=True)
class NamedKey:
    """An Ed25519 private key under a key name; each kind of signer says which verifier it makes."""

    name: str
    private_key: ed25519.Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"{self.name!r} cannot name a key (no spaces, no '+', not empty)")

    @property
    def verifier(self) -> Verifier:
        raise NotImplementedError

    @property
    def key_id(self) -> int:
        return self.verifier.key_id

    @property
    def vkey(self) -> str:
        return self.verifier.vkey


@dataclass(frozen=True)
class Ed25519Signer(NamedKey):
    """Makes type 0x01 signatures with an Ed25519 private key under a key name."""

    @property
    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, raw_public(self.private_key.public_key()))

    def sign(self, text: bytes) -> bytes:
        return self.private_key.sign(text)


# --- the note format ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name and id, and the signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    @property
    def line(self) -> str:
        blob = struct.pack(">I", self.key_id) + self.signature
        return f"{DASH} {self.name} {base64.b64encode(blob).decode('ascii')}\n"

    @classmethod
    def parse(cls, line: str) -> Signature:
        """One line without its newline: ``— name base64``."""
        prefix = DASH + " "
        if not line.startswith(prefix):
            raise NoteError("a signature line starts with an em dash and a space")
        name, sep, b64 = line[len(prefix):].partition(" ")
        if not sep or not valid_name(name) or not b64:
            raise NoteError("a signature line is '— <key name> <base64>'")
        blob = b64decode(b64)
        if len(blob) < 5:
            raise NoteError("a signature is a key id and at least one byte")
        return cls(name, struct.unpack(">I", blob[:4])[0], blob[4:])


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) note: its text (with the final newline) and its signatures."""

    text: str
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line for s in self.signatures)).encode("utf-8")

    def with_signatures(self, extra: Iterable[Signature]) -> Note:
        """This note with ``extra`` signatures added after its own (a line already there is not repeated)."""
        sigs = list(self.signatures)
        for sig in extra:
            if sig not in sigs:
                sigs.append(sig)
        if len(sigs) > MAX_SIGNATURES:
            raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
        return Note(self.text, tuple(sigs))


def check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if not _printable(text):
        raise NoteError("a note holds no control character but the newline")


def parse_signature_lines(data: str) -> list[Signature]:
    """Signature lines, each ending in a newline (as a witness answers)."""
    if not data.endswith("\n"):
        raise NoteError("signature lines end with a newline")
    if not _printable(data):
        raise NoteError("signature lines hold no control character but the newline")
    return [Signature.parse(line) for line in data[:-1].split("\n")]


def parse_note(data: bytes) -> Note:
    """The text and signatures of a note, checked for shape only (see ``open_note``)."""
    if len(data) > MAX_NOTE:
        raise NoteError("the note is too large")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("a note is UTF-8 text") from None
    if not _printable(whole):
        raise NoteError("a note holds no control character but the newline")
    split = whole.rfind("\n\n")
    if split < 0:
        raise NoteError("a note's text is followed by a blank line and its signatures")
    text, sig_block = whole[:split + 1], whole[split + 2:]
    if not sig_block:
        raise NoteError("a note has at least one signature line")
    signatures = parse_signature_lines(sig_block)
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    return Note(text, tuple(signatures))


def sign_note(text: str, *signers: Signer) -> bytes:
    """The note of ``text`` signed by each of ``signers``."""
    check_text(text)
    raw = text.encode("utf-8")
    sigs = tuple(Signature(s.name, s.key_id, s.sign(raw)) for s in signers)
    if not sigs:
        raise NoteError("a note needs at least one signature")
    return Note(text, sigs).to_bytes()


def verified_by(note: Note, verifiers: Sequence[Verifier]) -> list[Verifier]:
    """The verifiers (among ``verifiers``) whose signature is on ``note`` and checks.

    Signatures by unknown keys (name and id) are ignored; a known key's signature that
    fails raises ``NoteError`` (the whole note is rejected, as the specification says)."""
    known = {(v.name, v.key_id): v for v in verifiers}
    raw = note.text.encode("utf-8")
    found: list[Verifier] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(raw, sig.signature):
            raise NoteError(f"the signature by {sig.name} does not verify")
        if v not in found:
            found.append(v)
    return found


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse ``data`` and check it: ``(note, the verifiers that signed it)``. ``NoteError`` unless at
    least one known key signed it and every known key's signature verifies."""
    note = parse_note(data)
    found = verified_by(note, verifiers)
    if not found:
        raise NoteError("the note carries no signature by a known key")
    return note, found
