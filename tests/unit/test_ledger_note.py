"""C2SP signed notes, verifier keys, cosignatures, checkpoints and tlog-proofs (agent.ledger)."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ledger.checkpoint import Checkpoint, TlogProof
from agent.ledger.cosignature import (
    CosignatureSigner,
    CosignatureVerifier,
    cosignature_time,
    cosigned_message,
    vkey_verifier,
)
from agent.ledger.note import (
    Ed25519Signer,
    Ed25519Verifier,
    NoteError,
    Signature,
    make_vkey,
    open_note,
    parse_note,
    sign_note,
    split_vkey,
)

# Go's golang.org/x/mod/sumdb/note test vector (note_test.go: TestSign, TestNewVerifier).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")


def go_signer() -> Ed25519Signer:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return Ed25519Signer("PeterNeumann", ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def test_signing_matches_go_sumdb_note_byte_for_byte():
    signer = go_signer()
    assert signer.vkey == GO_VKEY
    assert signer.key_id == 0xC74F20A3
    assert sign_note(GO_TEXT, signer).decode() == GO_NOTE
    note, found = open_note(GO_NOTE.encode(), [vkey_verifier(GO_VKEY)])
    assert note.text == GO_TEXT and [v.vkey for v in found] == [GO_VKEY]


def test_vkeys_are_parsed_strictly():
    name, kid, alg, public = split_vkey(GO_VKEY)
    assert (name, kid, alg, len(public)) == ("PeterNeumann", 0xC74F20A3, 1, 32)
    for bad in ["PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
                "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case hex
                "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # a space
                "PeterNeumann+c74f20a3",
                "PeterNeumann+c74f20a3+not base64!",
                "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"]:
        with pytest.raises(NoteError):
            vkey_verifier(bad)
    with pytest.raises(NoteError):  # a known algorithm byte we do not accept (0x02, ECDSA)
        vkey_verifier(make_vkey("x", 0x02, b"k" * 32))


def test_unknown_signatures_are_ignored_and_a_bad_known_one_rejects_the_note():
    signer = go_signer()
    other = Ed25519Signer("other.example/key", ed25519.Ed25519PrivateKey.generate())
    both = sign_note(GO_TEXT, signer, other)
    note, found = open_note(both, [signer.verifier])
    assert [v.name for v in found] == ["PeterNeumann"] and len(note.signatures) == 2
    # The same name with another key id is someone else's key: ignored, so nothing verifies.
    impostor = Ed25519Signer("PeterNeumann", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(sign_note(GO_TEXT, impostor), [signer.verifier])
    # A signature by the known key that does not verify rejects the note even beside a good one.
    bad = parse_note(both)
    sig = bad.signatures[0]
    forged = Signature(sig.name, sig.key_id, bytes(64))
    with pytest.raises(NoteError, match="does not verify"):
        open_note(type(bad)(bad.text, (forged, bad.signatures[0])).to_bytes(), [signer.verifier])


@pytest.mark.parametrize("data", [
    b"no blank line\n\xe2\x80\x94 a AAAA\n",
    b"text\n\n",
    b"text\n\nnot a signature\n",
    b"text\n\n\xe2\x80\x94 name AAAAAA==",  # no final newline
    b"text\n\n\xe2\x80\x94 name AAAA\n",  # fewer than 5 bytes
    b"te\x01xt\n\n\xe2\x80\x94 name AAAAAAA=\n",  # a control character
    b"\xff\n\n\xe2\x80\x94 name AAAAAAA=\n",  # not UTF-8
    b"text\n\n\xe2\x80\x94 na+me AAAAAAA=\n",  # '+' in a name
])
def test_malformed_notes_are_refused(data):
    with pytest.raises(NoteError):
        parse_note(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_mutation_of_a_signed_checkpoint_is_rejected(data):
    signer = go_signer()
    checkpoint = Checkpoint("example.com/log", data.draw(st.integers(0, 10**9)), data.draw(st.binary(min_size=32, max_size=32)))
    note = bytearray(sign_note(checkpoint.text(), signer))
    i = data.draw(st.integers(0, len(note) - 1))
    kind = data.draw(st.sampled_from(["flip", "delete", "insert"]))
    if kind == "flip":
        note[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "delete":
        del note[i]
    else:
        note.insert(i, data.draw(st.integers(0, 255)))
    try:
        parsed, _found = open_note(bytes(note), [signer.verifier])
        reread = Checkpoint.from_note(parsed)
    except NoteError:
        return
    # The only mutations that survive are those that change nothing the signature covers:
    # none, since base64 is read canonically and the text is signed whole.
    assert reread == checkpoint and parsed.text == checkpoint.text(), bytes(note)


def test_cosignatures_are_timestamped_and_bound_to_the_checkpoint():
    witness = CosignatureSigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate())
    assert witness.vkey.startswith("witness.example/w1+")
    assert base64.b64decode(witness.vkey.split("+", 2)[2])[0] == 0x04
    text = Checkpoint("example.com/log", 5, b"\x07" * 32).text().encode()
    sig = witness.cosign(text, timestamp=1679315147)
    assert cosignature_time(sig) == 1679315147
    assert struct.unpack(">I", base64.b64decode(sig.line.split()[-1])[:4])[0] == witness.key_id
    assert cosigned_message(text, 1679315147).startswith(b"cosignature/v1\ntime 1679315147\nexample.com/log\n")
    verifier = vkey_verifier(witness.vkey)
    assert isinstance(verifier, CosignatureVerifier)
    assert verifier.verify(text, sig.signature)
    # Another checkpoint, another time, a flipped bit: rejected.
    assert not verifier.verify(Checkpoint("example.com/log", 6, b"\x07" * 32).text().encode(), sig.signature)
    assert not verifier.verify(text, struct.pack(">Q", 1679315148) + sig.signature[8:])
    for i in range(0, 72, 7):
        flipped = bytearray(sig.signature)
        flipped[i] ^= 0x10
        assert not verifier.verify(text, bytes(flipped))
    # A log key (0x01) cannot pass for the witness's cosignature key (0x04), and vice versa.
    assert Ed25519Verifier(witness.name, verifier.public).key_id != witness.key_id
    # A cosignature from the future is refused when the verifier bounds the clock skew.
    future = witness.cosign(text, timestamp=2**40)
    assert verifier.verify(text, future.signature)
    assert not CosignatureVerifier(witness.name, verifier.public, max_skew=60).verify(text, future.signature)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_mutation_of_a_cosignature_is_rejected(data):
    log = go_signer()
    witness = CosignatureSigner("witness.example/w1", ed25519.Ed25519PrivateKey.from_private_bytes(b"w" * 32))
    text = Checkpoint("example.com/log", 42, b"\x01" * 32).text()
    note = parse_note(sign_note(text, log)).with_signatures([witness.cosign(text.encode(), 1_700_000_000)])
    raw = bytearray(note.to_bytes())
    line_start = raw.rindex("\u2014 witness".encode())
    i = data.draw(st.integers(line_start, len(raw) - 2))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        _parsed, found = open_note(bytes(raw), [log.verifier, witness.verifier])
    except NoteError:
        return
    assert witness.verifier not in found, bytes(raw)


def test_checkpoint_text_round_trips_and_is_strict():
    cp = Checkpoint("example.com/behind-the-sofa", 20852163,
                    base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    assert cp.text() == "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert Checkpoint.parse(cp.text()) == cp
    for bad in ["o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zero
                "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
                "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # unpadded
                "o\n1\nAAAA\n",  # not 32 bytes
                "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
                "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
                "o\n1\n"]:
        with pytest.raises(NoteError):
            Checkpoint.parse(bad)
    with_ext = Checkpoint.parse(cp.text() + "ext line\n")
    assert with_ext.extensions == ("ext line",)


def test_tlog_proof_round_trips_and_rejects_bad_files():
    note = sign_note(Checkpoint("example.com/log", 3, b"\x02" * 32).text(), go_signer())
    proof = TlogProof(2, (b"\x03" * 32, b"\x04" * 32), note)
    data = proof.to_bytes()
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nindex 2\nAwMD")
    assert TlogProof.parse(data) == proof
    with_extra = TlogProof(0, (), note, extra=b"context")
    assert TlogProof.parse(with_extra.to_bytes()) == with_extra
    for bad in [data.replace(b"@v1", b"@v2"), data.replace(b"index 2", b"index 02"),
                data.replace(b"AwMD", b"AwM*"), data.replace(b"\n\n", b"\n", 1), b"",
                data[: data.index(b"\n\n") + 2] + b"not a note\n"]:
        with pytest.raises(NoteError):
            TlogProof.parse(bad)
