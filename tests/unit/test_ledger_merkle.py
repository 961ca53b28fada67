"""RFC 6962 hashing and proofs (agent.ledger.merkle): random trees, every proof verifies, every
mutation of a proof or of what it claims is rejected."""

from __future__ import annotations

import base64
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ledger import merkle
from agent.ledger.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    stored_count,
    stored_for_leaf,
    stored_index,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)


def reference_root(entries: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursively."""
    if not entries:
        return sha256(b"").digest()
    if len(entries) == 1:
        return sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return sha256(b"\x01" + reference_root(entries[:k]) + reference_root(entries[k:])).digest()


class MemoryTree:
    """Stored hashes in a list, appended the way the store appends them."""

    def __init__(self, entries: list[bytes]) -> None:
        self.entries = entries
        self.stored: list[bytes] = []
        frontier: list[bytes] = []
        for n, entry in enumerate(entries):
            lefts = []
            m = n
            while m & 1:
                lefts.append(frontier.pop())
                m >>= 1
            assert len(self.stored) == stored_index(0, n)
            hashes = stored_for_leaf(n, leaf_hash(entry), lefts)
            self.stored += hashes
            frontier.append(hashes[-1])
        self.reads: list[list[int]] = []

    def read(self, positions):
        self.reads.append(list(positions))
        return [self.stored[p] for p in positions]


entries_strategy = st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=70)


def test_known_answers():
    # RFC 6962's leaf and node prefixes, and the empty tree's hash.
    assert leaf_hash(b"") == sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert EMPTY_ROOT == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    # The root of the 8 leaves of the certificate-transparency test vectors (RFC 6962 test data,
    # as used by Go's sumdb/tlog ct_test and transparency-dev/merkle).
    leaves = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                          "606162636465666768696a6b6c6d6e6f")]
    assert reference_root(leaves).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    tree = MemoryTree(leaves)
    assert tree_hash(8, tree.read).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert tree_hash(0, tree.read) == EMPTY_ROOT


def test_stored_positions_match_the_layout():
    # Leaf n is at 2n - popcount(n); a root (level, k) right after the leaf that completes it.
    assert [stored_index(0, n) for n in range(6)] == [0, 1, 3, 4, 7, 8]
    assert stored_index(1, 0) == 2 and stored_index(2, 0) == 6 and stored_index(1, 1) == 5
    assert [stored_count(n) for n in range(6)] == [0, 1, 3, 4, 7, 8]


@settings(max_examples=150, deadline=None)
@given(entries_strategy, st.data())
def test_every_proof_of_a_random_tree_verifies(entries, data):
    tree = MemoryTree(entries)
    assert len(tree.stored) == stored_count(len(entries))
    size = data.draw(st.integers(1, len(entries)), label="size")
    root = tree_hash(size, tree.read)
    assert root == reference_root(entries[:size])
    for index in range(size):
        proof = inclusion_proof(index, size, tree.read)
        verify_inclusion(proof, index, size, leaf_hash(entries[index]), root)
    for old in range(size + 1):
        proof = consistency_proof(old, size, tree.read)
        verify_consistency(proof, old, reference_root(entries[:old]), size, root)


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=150, deadline=None)
@given(entries_strategy, st.data())
def test_every_mutation_of_an_inclusion_proof_is_rejected(entries, data):
    tree = MemoryTree(entries)
    size = data.draw(st.integers(1, len(entries)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = tree_hash(size, tree.read)
    proof = inclusion_proof(index, size, tree.read)
    leaf = leaf_hash(entries[index])
    mutation = data.draw(st.sampled_from(["hash", "drop", "add", "swap", "index", "size", "leaf", "root"]))
    bad_proof, bad_index, bad_size, bad_leaf, bad_root = list(proof), index, size, leaf, root
    if mutation == "hash" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad_proof[i] = _flip(proof[i], data.draw(st.integers(0, 255)))
    elif mutation == "drop" and proof:
        del bad_proof[data.draw(st.integers(0, len(proof) - 1))]
    elif mutation == "add":
        bad_proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    elif mutation == "swap" and len(proof) >= 2 and proof[0] != proof[-1]:
        bad_proof[0], bad_proof[-1] = proof[-1], proof[0]
    elif mutation == "index" and size > 1:
        bad_index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        if entries[bad_index] == entries[index]:
            return  # the same entry twice: a proof for one is a proof for the other's position only by shape
    elif mutation == "size" and len(entries) > index + 1:
        # Another size with its own root (a size and a root always come together, in a signed head).
        bad_size = data.draw(st.integers(index + 1, len(entries)).filter(lambda s: s != size))
        bad_root = tree_hash(bad_size, tree.read)
    elif mutation == "leaf":
        bad_leaf = _flip(leaf, data.draw(st.integers(0, 255)))
    elif mutation == "root":
        bad_root = _flip(root, data.draw(st.integers(0, 255)))
    else:
        return
    with pytest.raises(ProofError):
        verify_inclusion(bad_proof, bad_index, bad_size, bad_leaf, bad_root)


@settings(max_examples=150, deadline=None)
@given(entries_strategy, st.data())
def test_every_mutation_of_a_consistency_proof_is_rejected(entries, data):
    tree = MemoryTree(entries)
    new = data.draw(st.integers(1, len(entries)), label="new")
    old = data.draw(st.integers(1, new), label="old")
    new_root = tree_hash(new, tree.read)
    old_root = tree_hash(old, tree.read)
    proof = consistency_proof(old, new, tree.read)
    mutation = data.draw(st.sampled_from(["hash", "drop", "add", "old_root", "new_root", "old", "new"]))
    bad = list(proof)
    args = [old, old_root, new, new_root]
    if mutation == "hash" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad[i] = _flip(proof[i], data.draw(st.integers(0, 255)))
    elif mutation == "drop" and proof:
        del bad[data.draw(st.integers(0, len(proof) - 1))]
    elif mutation == "add":
        bad.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    elif mutation == "old_root":
        args[1] = _flip(old_root, data.draw(st.integers(0, 255)))
    elif mutation == "new_root":
        args[3] = _flip(new_root, data.draw(st.integers(0, 255)))
    elif mutation == "old" and new > 1:
        # Another old size with its own root.
        args[0] = data.draw(st.integers(1, new).filter(lambda s: s != old))
        args[1] = tree_hash(args[0], tree.read)
    elif mutation == "new" and len(entries) > old:
        args[2] = data.draw(st.integers(old, len(entries)).filter(lambda s: s != new))
        args[3] = tree_hash(args[2], tree.read)
        if args[2] == old and not proof:
            return  # old -> old needs no proof: the empty proof is right for it
    else:
        return
    with pytest.raises(ProofError):
        verify_consistency(bad, *args)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), min_size=2, max_size=40), st.data())
def test_a_rewritten_history_has_no_consistency_proof(entries, data):
    """The witness's guarantee: change one entry below the old size and no proof from the old head
    to the new head exists; the honest proof of the forked tree fails against the old head."""
    new = len(entries)
    old = data.draw(st.integers(1, new))
    victim = data.draw(st.integers(0, old - 1))
    forked = list(entries)
    forked[victim] = forked[victim] + b"!"
    honest, fork = MemoryTree(entries), MemoryTree(forked)
    old_root = tree_hash(old, honest.read)
    forked_root = tree_hash(new, fork.read)
    proof = consistency_proof(old, new, fork.read)
    with pytest.raises(ProofError):
        verify_consistency(proof, old, old_root, new, forked_root)


def test_a_proof_reads_few_hashes_in_one_call():
    entries = [b"%d" % i for i in range(1000)]
    tree = MemoryTree(entries)
    tree.reads.clear()
    inclusion_proof(377, 1000, tree.read)
    consistency_proof(333, 1000, tree.read)
    assert len(tree.reads) == 2
    assert all(len(r) <= 2 * 10 for r in tree.reads)


def test_bad_arguments_are_value_errors():
    tree = MemoryTree([b"a", b"b"])
    with pytest.raises(ValueError):
        inclusion_proof(2, 2, tree.read)
    with pytest.raises(ValueError):
        consistency_proof(3, 2, tree.read)
    with pytest.raises(ValueError):
        tree_hash(-1, tree.read)
    with pytest.raises(ProofError):
        verify_inclusion([b"short"], 0, 2, leaf_hash(b"a"), EMPTY_ROOT)
    assert consistency_proof(0, 2, tree.read) == [] and consistency_proof(2, 2, tree.read) == []
    with pytest.raises(ProofError):
        verify_consistency([], 2, b"\x00" * 32, 2, b"\x01" * 32)  # same size, another root: a fork
    with pytest.raises(ProofError):
        verify_consistency([b"\x00" * 32], 0, EMPTY_ROOT, 2, tree_hash(2, tree.read))


def test_b64_of_hashes_is_standard():
    # The proofs go into C2SP files as standard base64: a hash is 44 characters with one '='.
    h = merkle.leaf_hash(b"x")
    assert len(base64.b64encode(h)) == 44
