"""Trusted technicians: OpenSSH allowed_signers lines, plain keys and certificate authorities."""

from agent.trust.certificate import Certificate, CertificateError
from agent.trust.store import Identity, TrustError, TrustStore

__all__ = ["Certificate", "CertificateError", "Identity", "TrustError", "TrustStore"]
