"""The journal's line format, shared by the writer, the reader and the verifier.

A record is one line of canonical JSON (``agent.canonical``) ending in ``\\n``::

    {"data":{…},"prev":"<64 hex>","seq":N,"session":"<id>","ts":"<RFC 3339>","type":"<type>","v":1}

Keys sort as shown, so everything after ``data`` has a fixed shape; the
verifier relies on that to check a line without parsing its ``data``.
"""

from __future__ import annotations

import hashlib
import re
import time

from agent import sshsig
from agent.canonical import canonical_bytes

VERSION = 1
NAMESPACE = "chaperone-session"
ZERO_HASH = "0" * 64
#: The longest line the journal writes and the verifier reads (a guard against
#: enormous lines; capture keeps diffs far below this).
MAX_LINE = 4 * 1024 * 1024
#: Records that carry a signature over the chain head.
SIGNED_TYPES = frozenset({"checkpoint", "seal"})
#: The fields of a checkpoint's or seal's data that the signature does not
#: cover itself (the signature, and the signer's fingerprint, checked against it).
UNSIGNED_FIELDS = frozenset({"key", "sig"})

#: The fixed tail of a canonical line, from ``,"prev":"`` to the end. Session
#: ids and types outside these character sets are checked the slow way.
TAIL = re.compile(
    rb',"prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]{0,15}),"session":"([A-Za-z0-9._:+-]{1,200})",'
    rb'"ts":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)",'
    rb'"type":"([a-z][a-z0-9-]{0,63})","v":1}\n'
)
TAIL_START = b',"prev":"'
TS_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def line_hash(line: bytes) -> str:
    """The ``prev`` of the record that follows ``line`` (its bytes including ``\\n``)."""
    return hashlib.sha256(line).hexdigest()


class UtcClock:
    """RFC 3339 UTC timestamps with microseconds, cheap enough for the hot path."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        micros = time.time_ns() // 1000
        second, micro = divmod(micros, 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micro:06d}Z"


def checkpoint_message(record: dict) -> bytes:
    """The exact bytes a checkpoint's or seal's SSHSIG signs (namespace ``chaperone-session``).

    They are the canonical JSON (sorted keys, no spaces, UTF-8, no newline) of
    the object made of the record's ``session``, ``seq``, ``ts`` and ``type``,
    plus every field of its ``data`` except ``key`` and ``sig``: for a
    checkpoint that is exactly ``count`` and ``head``::

        {"count":7,"head":"<64 hex>","session":"<id>","seq":7,"ts":"2026-11-22T03:04:05.123456Z","type":"checkpoint"}

    A seal's extra fields (such as ``reason``) are signed with it. So anyone can
    check a checkpoint with OpenSSH alone: write these bytes to a file, the
    ``sig`` field to ``cp.sig``, and run ``ssh-keygen -Y verify -f
    allowed_signers -I <principal> -n chaperone-session -s cp.sig < file``.
    """
    data = record["data"]
    signed = {k: v for k, v in data.items() if k not in UNSIGNED_FIELDS}
    for field in ("session", "seq", "ts", "type"):
        signed[field] = record[field]
    return canonical_bytes(signed)


def strict_dearmor(armored: str) -> bytes:
    """The binary SSHSIG inside ``armored``, accepting only the one armoring
    ``ssh-keygen`` writes (70-column base64, a final newline), so that no byte
    of a signature can change without the change being noticed."""
    blob = sshsig.dearmor(armored)
    if sshsig.armor(blob) != armored:
        raise sshsig.SignatureError("the signature is not armored exactly as ssh-keygen writes it")
    return blob
