"""SSHSIG signatures (OpenSSH PROTOCOL.sshsig), as ``ssh-keygen -Y sign`` makes them.

Signing uses the Ed25519 device key; Ed25519 is deterministic, so our output
is byte-identical to ``ssh-keygen -Y sign`` over the same data and key.
Verification also accepts the RSA and ECDSA keys technicians may use, and
returns the signer's public key blob so that the caller decides whether that
key (or the CA behind a certificate) is trusted.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent import sigcheck
from agent.errors import SignatureError, WireError
from agent.sshkeys import public_key_from_blob
from agent.sshwire import WireReader, ssh_mpint, ssh_string

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}


@dataclass(frozen=True)
class VerifiedSignature:
    """What a valid signature tells: the signer's public key blob (a plain key
    or an OpenSSH certificate) and its namespace."""

    public_key_blob: bytes
    namespace: str

    @property
    def key_type(self) -> str:
        return WireReader(self.public_key_blob).string().decode("ascii", "replace")


def _signed_data(namespace: str, message: bytes, hash_alg: str = "sha512") -> bytes:
    digest = _HASHES[hash_alg](message).digest()
    return _signed_prefix(namespace, hash_alg) + ssh_string(digest)


@lru_cache(maxsize=64)
def _signed_prefix(namespace: str, hash_alg: str) -> bytes:
    return MAGIC + ssh_string(namespace.encode()) + ssh_string(b"") + ssh_string(hash_alg.encode())


def ed25519_public_blob(public_key: ed25519.Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ssh_string(b"ssh-ed25519") + ssh_string(raw)


def sign_binary(private_key: ed25519.Ed25519PrivateKey, namespace: str, message: bytes) -> bytes:
    """The binary SSHSIG blob over ``message``."""
    sig = private_key.sign(_signed_data(namespace, message))
    return (
        MAGIC
        + VERSION.to_bytes(4, "big")
        + ssh_string(ed25519_public_blob(private_key.public_key()))
        + ssh_string(namespace.encode())
        + ssh_string(b"")
        + ssh_string(b"sha512")
        + ssh_string(ed25519_signature_blob(sig))
    )


def ed25519_signature_blob(signature: bytes) -> bytes:
    """An Ed25519 signature as SSH writes it: its type, then its 64 bytes."""
    return ssh_string(b"ssh-ed25519") + ssh_string(signature)


def armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode("ascii")
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return BEGIN + "\n" + "\n".join(lines) + "\n" + END + "\n"


def dearmor(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SignatureError("the signature file is not an SSH signature") from exc
    body = text.strip()
    if not body.startswith(BEGIN) or not body.endswith(END):
        raise SignatureError("the signature file is not an SSH signature")
    b64 = "".join(body[len(BEGIN) : -len(END)].split())
    try:
        return base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise SignatureError("the signature is not valid base64") from exc


def sign(private_key: ed25519.Ed25519PrivateKey, namespace: str, message: bytes) -> str:
    """An armored SSHSIG, byte-identical to ``ssh-keygen -Y sign -n NAMESPACE``."""
    return armor(sign_binary(private_key, namespace, message))


@lru_cache(maxsize=256)
def _public_key(key_blob: bytes) -> tuple[object, bytes | None]:
    """The key object of a blob and, for Ed25519, its raw 32 bytes; parsed once: a journal's checkpoints
    are all signed by one key."""
    key = public_key_from_blob(key_blob)
    return key, key.public_bytes_raw() if isinstance(key, ed25519.Ed25519PublicKey) else None


def _verify_raw(key_blob: bytes, sig_blob: bytes, data: bytes) -> None:
    """Check a raw SSH signature over ``data`` with the key (or certificate's key)."""
    key, raw = _public_key(key_blob)
    r = WireReader(sig_blob)
    sig_type = r.string().decode("ascii", "replace")
    sig = r.string()
    if raw is not None:  # Ed25519: through libsodium (agent.sigcheck says why)
        if sig_type != "ssh-ed25519":
            raise SignatureError(f"signature type {sig_type} does not match the key")
        if not sigcheck.valid(raw, sig, data):
            raise SignatureError("the signature does not match the data")
        return
    try:
        if isinstance(key, rsa.RSAPublicKey):
            algs = {"rsa-sha2-512": hashes.SHA512(), "rsa-sha2-256": hashes.SHA256()}
            if sig_type not in algs:
                raise SignatureError(f"RSA signature type {sig_type} is not accepted")
            key.verify(sig, data, padding.PKCS1v15(), algs[sig_type])
        elif isinstance(key, ec.EllipticCurvePublicKey):
            curve_hash = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}
            inner = WireReader(sig)
            der = encode_dss_signature(inner.mpint(), inner.mpint())
            key.verify(der, data, ec.ECDSA(curve_hash[key.curve.key_size]))
        else:  # pragma: no cover - public_key_from_blob only returns the above
            raise SignatureError("unsupported key type")
    except InvalidSignature as exc:
        raise SignatureError("the signature does not match the data") from exc


def verify(armored: str | bytes, namespace: str, message: bytes) -> VerifiedSignature:
    """Check an SSHSIG over ``message`` in ``namespace``.

    Returns who signed (the public key blob inside the signature). Raises
    SignatureError if it is malformed, for another namespace, or does not match.
    Whether the signer is trusted is the caller's decision.
    """
    return verify_blob(dearmor(armored), namespace, message)


#: Ed25519 SSHSIGs already parsed and found well formed, by all their bytes but the signature's last 64: the
#: signer's key blob, namespace and hash. A journal's checkpoints differ only there (same key, namespace and
#: hash), so each is parsed once; the signature itself is always checked.
_PARSED: dict[bytes, tuple[bytes, str, str, bytes]] = {}


def verify_blob(blob: bytes, namespace: str, message: bytes) -> VerifiedSignature:
    """``verify`` for a signature already taken out of its armor (``dearmor``)."""
    known = _PARSED.get(blob[:-64]) if len(blob) > 64 else None
    if known is not None:  # the same bytes as a well-formed Ed25519 SSHSIG, up to its 64 signature bytes
        key_blob, ns, hash_alg, raw = known
        if ns != namespace:
            raise SignatureError(f"the signature is for namespace {ns!r}, not {namespace!r}")
        if not sigcheck.valid(raw, blob[-64:], _signed_data(namespace, message, hash_alg)):
            raise SignatureError("the signature does not match the data")
        return VerifiedSignature(public_key_blob=key_blob, namespace=ns)
    try:
        r = WireReader(blob)
        if r.raw(6) != MAGIC:
            raise SignatureError("the signature lacks the SSHSIG preamble")
        if r.uint32() != VERSION:
            raise SignatureError("unsupported SSHSIG version")
        key_blob = r.string()
        ns = r.string().decode("utf-8", "replace")
        r.string()  # reserved
        hash_alg = r.string().decode("ascii", "replace")
        sig_blob = r.string()
        if not r.done():
            raise SignatureError("trailing bytes after the signature")
    except WireError as exc:
        raise SignatureError("the signature is truncated or malformed") from exc
    if ns != namespace:
        raise SignatureError(f"the signature is for namespace {ns!r}, not {namespace!r}")
    if hash_alg not in _HASHES:
        raise SignatureError(f"unsupported hash algorithm {hash_alg!r}")
    try:
        _verify_raw(key_blob, sig_blob, _signed_data(namespace, message, hash_alg))
    except WireError as exc:
        raise SignatureError("the signature is truncated or malformed") from exc
    ed25519_raw = _public_key(key_blob)[1]
    if ed25519_raw is not None and sig_blob == ed25519_signature_blob(sig_blob[-64:]):
        if len(_PARSED) >= 256:
            _PARSED.clear()
        _PARSED[blob[:-64]] = (key_blob, ns, hash_alg, ed25519_raw)
    return VerifiedSignature(public_key_blob=key_blob, namespace=ns)


__all__ = [
    "SignatureError",
    "VerifiedSignature",
    "sign",
    "sign_binary",
    "verify",
    "verify_blob",
    "armor",
    "dearmor",
    "ed25519_public_blob",
    "ed25519_signature_blob",
    "ssh_mpint",
]
