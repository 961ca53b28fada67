"""OpenSSH public keys: blobs, text lines and fingerprints as ssh-keygen shows them."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes as SSHPublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    load_ssh_public_identity,
)

from agent.errors import KeyFormatError, WireError
from agent.sshwire import WireReader

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
CERT_SUFFIX = "-cert-v01@openssh.com"


def blob_type(blob: bytes) -> str:
    try:
        return WireReader(blob).string().decode("ascii")
    except (WireError, UnicodeDecodeError) as exc:
        raise KeyFormatError("not an SSH public key") from exc


def fingerprint(blob: bytes) -> str:
    """``SHA256:…`` exactly as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def blob_to_line(blob: bytes, comment: str = "") -> str:
    line = f"{blob_type(blob)} {base64.b64encode(blob).decode('ascii')}"
    return f"{line} {comment}" if comment else line


def line_to_blob(line: str) -> bytes:
    """The blob from ``"ssh-ed25519 AAAA… comment"``."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise KeyFormatError("expected '<type> <base64>' for an SSH public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise KeyFormatError("the key's base64 is invalid") from exc
    if blob_type(blob) != parts[0]:
        raise KeyFormatError("the key's type does not match its data")
    return blob


def load_identity(blob: bytes) -> SSHPublicKeyTypes | SSHCertificate:
    """A cryptography public key, or an ``SSHCertificate`` for certificate blobs."""
    kt = blob_type(blob)
    if kt not in KEY_TYPES and not (kt.endswith(CERT_SUFFIX) and kt[: -len(CERT_SUFFIX)] in KEY_TYPES):
        raise KeyFormatError(f"unsupported key type {kt!r}")
    try:
        return load_ssh_public_identity(f"{kt} {base64.b64encode(blob).decode()}".encode())
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"malformed {kt} key") from exc


def public_key_from_blob(blob: bytes) -> SSHPublicKeyTypes:
    """The cryptography public key of a plain key or of a certificate's subject."""
    ident = load_identity(blob)
    if isinstance(ident, SSHCertificate):
        return ident.public_key()
    return ident
