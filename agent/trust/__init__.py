"""Trusted technicians: OpenSSH allowed_signers lines, plain keys and certificate authorities."""

from agent.errors import CertificateError, TrustError
from agent.trust.certificate import Certificate
from agent.trust.store import Identity, TrustStore

__all__ = ["Certificate", "CertificateError", "Identity", "TrustError", "TrustStore"]
