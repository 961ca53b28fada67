"""Checking Ed25519 signatures, through libsodium (PyNaCl).

Every Ed25519 signature Chaperone checks comes here: the SSHSIGs of bundles,
checkpoints and seals, request files, the ledger's and witnesses' notes, and
the CA signatures of certificates (which ``cryptography`` parses and checks
first).

Why libsodium and not the ``cryptography`` package that signs them: on this
project's machines it checks a signature in half the time (55 µs against 102
µs; a review checks about ten a bundle), and it is stricter. Besides what both
refuse (a scalar ``S`` out of range, a point that does not decode), libsodium
refuses public keys and ``R`` values of small order and non-canonical
encodings. Those are what make a "signature" that verifies for every message:
with the identity point as the key, ``R`` the identity and ``S = 0``,
OpenSSL (and so ``cryptography``) accepts any message
(``tests/unit/test_sigcheck.py``). No key made the usual way is affected: for
a real key and signature the two always agree (tested too).
"""

from __future__ import annotations

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64


def valid(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by the raw 32-byte key ``public``."""
    if len(public) != PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, public)
    except CryptoError:  # BadSignatureError, and its ValueError for a malformed input
        return False
    return True
