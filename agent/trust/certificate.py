"""OpenSSH certificates (PROTOCOL.certkeys), read with cryptography's parser.

``Certificate.from_blob`` checks the CA's signature; ``authority_problem``
applies OpenSSH's ``sshkey_cert_check_authority`` rules for user logins and
signatures: a user certificate, ``valid_after <= now < valid_before``, a
non-empty principal list, and the wanted name among the principals.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

from agent import sigcheck
from agent.errors import CertificateError, KeyFormatError
from agent.sshkeys import CERT_SUFFIX, SSHPublicKeyTypes, blob_type, fingerprint, line_to_blob, load_identity
from agent.sshsig import ed25519_signature_blob
from agent.sshwire import ssh_string

#: An Ed25519 CA's signature ends a certificate as a string of this many bytes: its type, then 64 bytes.
_SIGNATURE_FIELD = len(ssh_string(ed25519_signature_blob(bytes(64))))

FOREVER = 2**64 - 1


def _blob_of(public_key: SSHPublicKeyTypes) -> bytes:
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line_to_blob(line.decode("ascii"))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _check_ed25519_ca(blob: bytes, ca_key: ed25519.Ed25519PublicKey) -> None:
    """An Ed25519 CA's signature checked again through libsodium (``agent.sigcheck``), as every other Ed25519
    signature is: OpenSSL, which checked it first, accepts a CA key of small order whose one "signature"
    verifies for every certificate (a CA is trusted only when the customer pins it, but pinning a key made
    to look harmless must not let it sign anything)."""
    signed, field = blob[:-_SIGNATURE_FIELD], blob[-_SIGNATURE_FIELD:]
    if len(blob) <= _SIGNATURE_FIELD or field != ssh_string(ed25519_signature_blob(field[-64:])):
        raise CertificateError("the certificate is malformed")
    if not sigcheck.valid(ca_key.public_bytes_raw(), field[-64:], signed):
        raise CertificateError("the certificate's CA signature does not match")


def is_certificate_blob(blob: bytes) -> bool:
    try:
        return blob_type(blob).endswith(CERT_SUFFIX)
    except KeyFormatError:
        return False


@dataclass(frozen=True)
class Certificate:
    blob: bytes
    key_blob: bytes  # the certified (plain) public key
    ca_blob: bytes  # the signing CA's public key
    is_user: bool
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int  # exclusive; FOREVER when unlimited
    critical_options: dict[str, str]
    extensions: dict[str, str]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key_blob)

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_blob)

    @classmethod
    def from_blob(cls, blob: bytes) -> Certificate:
        """Parse a certificate and check its CA signature; CertificateError otherwise."""
        try:
            cert = load_identity(blob)
            if not isinstance(cert, SSHCertificate):
                raise CertificateError("the key is not a certificate")
            ca_key = cert.signature_key()
            cert.verify_cert_signature()
            if isinstance(ca_key, ed25519.Ed25519PublicKey):
                _check_ed25519_ca(blob, ca_key)
            cert_type = cert.type
            key_blob = _blob_of(cert.public_key())
            ca_blob = _blob_of(ca_key)
            key_id = _text(cert.key_id)
            principals = tuple(_text(p) for p in cert.valid_principals)
            critical_options = {_text(k): _text(v) for k, v in cert.critical_options.items()}
            extensions = {_text(k): _text(v) for k, v in cert.extensions.items()}
        except CertificateError:
            raise
        except InvalidSignature as exc:
            raise CertificateError("the certificate's CA signature does not match") from exc
        except (KeyFormatError, ValueError, TypeError) as exc:
            raise CertificateError("the certificate is malformed") from exc
        except UnsupportedAlgorithm as exc:  # e.g. a DSA CA
            raise CertificateError("the certificate uses an unsupported algorithm") from exc
        return cls(
            blob=blob,
            is_user=cert_type == SSHCertificateType.USER,
            valid_after=cert.valid_after,
            valid_before=cert.valid_before,
            key_blob=key_blob,
            ca_blob=ca_blob,
            key_id=key_id,
            principals=principals,
            critical_options=critical_options,
            extensions=extensions,
        )

    def authority_problem(self, now: int, name: str | None) -> str | None:
        """Why this certificate may not act as ``name`` at ``now``, or None if it may.

        ``name`` None skips the principal check (the list must still be non-empty).
        """
        if not self.is_user:
            return "it is not a user certificate"
        if now < self.valid_after:
            return "it is not valid yet"
        if now >= self.valid_before:
            return "it has expired"
        if not self.principals:
            return "it lists no principals"
        if name is not None and name not in self.principals:
            return f"{name!r} is not among its principals"
        return None
