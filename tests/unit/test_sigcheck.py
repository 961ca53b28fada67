"""Ed25519 through libsodium (agent.sigcheck): it agrees with OpenSSL on real keys, and refuses the weak
keys OpenSSL lets through."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import sigcheck, sshsig
from agent.errors import SignatureError
from agent.sshwire import ssh_string

IDENTITY = bytes([1]) + bytes(31)  # the neutral point, of order 1
FORGERY = IDENTITY + bytes(32)  # R = the neutral point, S = 0


def openssl_valid(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@settings(max_examples=300)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300),
       flip=st.one_of(st.none(), st.integers(min_value=0, max_value=64 * 8 - 1)),
       other=st.binary(max_size=300))
def test_agrees_with_openssl_on_real_keys(seed: bytes, message: bytes, flip: int | None, other: bytes) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes_raw()
    signature = bytearray(key.sign(message))
    if flip is not None:
        signature[flip // 8] ^= 1 << (flip % 8)
    for signed in (message, other):
        assert sigcheck.valid(public, bytes(signature), signed) == openssl_valid(public, bytes(signature), signed)
    assert sigcheck.valid(public, key.sign(message), message)


def test_a_key_of_small_order_that_openssl_accepts_for_every_message_is_refused() -> None:
    for message in (b"SHA256SUMS of a bundle", b"anything at all"):
        assert openssl_valid(IDENTITY, FORGERY, message)  # why this module does not use OpenSSL for checks
        assert not sigcheck.valid(IDENTITY, FORGERY, message)


def test_an_sshsig_made_with_a_weak_key_is_refused() -> None:
    """The same forgery as an SSHSIG: what a forger would put in a bundle's SHA256SUMS.sig."""
    weak = ed25519.Ed25519PublicKey.from_public_bytes(IDENTITY)
    forged = sshsig.armor(sshsig.MAGIC + sshsig.VERSION.to_bytes(4, "big")
                          + ssh_string(sshsig.ed25519_public_blob(weak)) + ssh_string(b"chaperone-session")
                          + ssh_string(b"") + ssh_string(b"sha512")
                          + ssh_string(ssh_string(b"ssh-ed25519") + ssh_string(FORGERY)))
    try:
        sshsig.verify(forged, "chaperone-session", b"any SHA256SUMS")
    except SignatureError as exc:
        assert "does not match" in str(exc)
    else:
        raise AssertionError("a signature by a key of small order was accepted")


def test_inputs_of_the_wrong_length_are_invalid_not_errors() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public, signature = key.public_key().public_bytes_raw(), key.sign(b"m")
    assert not sigcheck.valid(public[:31], signature, b"m")
    assert not sigcheck.valid(public, signature[:63], b"m")
    assert not sigcheck.valid(public, signature + b"\0", b"m")
    assert not sigcheck.valid(b"", b"", b"")


def test_an_sshsig_shaped_like_one_already_checked_is_still_checked() -> None:
    """verify_blob parses an Ed25519 SSHSIG once per shape (key, namespace, hash): one that differs only in
    its 64 signature bytes is not parsed again, but its signature always is checked, and its namespace."""
    key = ed25519.Ed25519PrivateKey.generate()
    good = sshsig.dearmor(sshsig.sign(key, "chaperone-session", b"checkpoint 1"))
    assert sshsig.verify_blob(good, "chaperone-session", b"checkpoint 1").public_key_blob  # now its shape is known
    other = sshsig.dearmor(sshsig.sign(key, "chaperone-session", b"checkpoint 2"))
    assert other[:-64] == good[:-64] and other != good
    assert sshsig.verify_blob(other, "chaperone-session", b"checkpoint 2")
    for forged, message in ((other, b"checkpoint 1"), (good[:-64] + bytes(64), b"checkpoint 1"),
                            (good[:-64] + FORGERY, b"checkpoint 1"), (good[:-1] + bytes([good[-1] ^ 1]), b"checkpoint 1")):
        with pytest.raises(SignatureError, match="does not match"):
            sshsig.verify_blob(forged, "chaperone-session", message)
    with pytest.raises(SignatureError, match="namespace"):
        sshsig.verify_blob(good, "file", b"checkpoint 1")
    # a blob one byte longer is another shape: parsed in full, and refused for its trailing byte
    with pytest.raises(SignatureError, match="malformed|trailing"):
        sshsig.verify_blob(good + b"\0", "chaperone-session", b"checkpoint 1")
