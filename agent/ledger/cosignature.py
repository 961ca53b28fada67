"""C2SP tlog-cosignature v1 (https://c2sp.org/tlog-cosignature): a witness's timestamped Ed25519 signature.

A cosignature is a note signature line by a key of type ``0x04`` whose
signature bytes are ``timestamp (u64, big-endian) || Ed25519 signature``, and
whose signed message is::

    cosignature/v1
    time <timestamp>
    <the checkpoint's note text, with its final newline>

It states that, at ``timestamp`` (POSIX seconds), this is the largest
consistent tree head the witness has seen for the origin. ``vkey_verifier``
reads any verifier key we accept (type 0x01 for logs, 0x04 for witnesses).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from agent import sigcheck
from agent.ledger.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Ed25519Verifier,
    NamedKey,
    NoteError,
    Signature,
    Verifier,
    key_id,
    make_vkey,
    raw_public,
    split_vkey,
)

MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs: the header line, the time line, then the note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError("a cosignature's timestamp is between 0 and 2^63-1")
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def cosignature_time(signature: Signature) -> int:
    """The timestamp a cosignature carries (``NoteError`` if it is not one)."""
    if len(signature.signature) != 72:
        raise NoteError("a cosignature is 8 bytes of time and a 64-byte signature")
    return struct.unpack(">Q", signature.signature[:8])[0]


@dataclass(frozen=True)
class CosignatureVerifier:
    """Checks v1 cosignatures (type 0x04) by one witness key."""

    name: str
    public: bytes
    #: Reject cosignatures stamped more than this many seconds in the future (None: do not check).
    max_skew: float | None = None

    @property
    def key_id(self) -> int:
        return key_id(self.name, ALG_COSIGNATURE_V1, self.public)

    @property
    def vkey(self) -> str:
        return make_vkey(self.name, ALG_COSIGNATURE_V1, self.public)

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        timestamp = struct.unpack(">Q", signature[:8])[0]
        if timestamp > MAX_TIMESTAMP:
            return False
        if self.max_skew is not None and timestamp > time.time() + self.max_skew:
            return False
        return sigcheck.valid(self.public, signature[8:], cosigned_message(text, timestamp))


@dataclass(frozen=True)
class CosignatureSigner(NamedKey):
    """A witness's key: makes v1 cosignatures on checkpoint texts."""

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, raw_public(self.private_key.public_key()))

    def cosign(self, text: bytes, timestamp: int | None = None) -> Signature:
        """The cosignature line's content for a checkpoint text, stamped now unless told."""
        when = int(time.time()) if timestamp is None else timestamp
        sig = self.private_key.sign(cosigned_message(text, when))
        return Signature(self.name, self.key_id, struct.pack(">Q", when) + sig)

    def sign(self, text: bytes) -> bytes:
        """The signature bytes (time and Ed25519), so that ``note.sign_note`` can use this key too."""
        return self.cosign(text).signature


def vkey_verifier(vkey: str) -> Verifier:
    """A verifier for a verifier key of type 0x01 (a log's Ed25519 key) or 0x04 (a witness's)."""
    name, _, alg, public = split_vkey(vkey)
    if len(public) != 32:
        raise NoteError("an Ed25519 verifier key holds 32 bytes of key")
    if alg == ALG_ED25519:
        return Ed25519Verifier(name, public)
    if alg == ALG_COSIGNATURE_V1:
        return CosignatureVerifier(name, public)
    raise NoteError(f"verifier keys of type {alg:#04x} are not supported (only 0x01 and 0x04)")
