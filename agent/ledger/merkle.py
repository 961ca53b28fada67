"""RFC 6962 Merkle trees: hashing, stored-hash positions, inclusion and consistency proofs.

Pure functions: nothing here touches a file. A tree of ``size`` leaves is
hashed as RFC 6962 section 2.1 says: a leaf is ``SHA-256(0x00 || entry)``, an
interior node ``SHA-256(0x01 || left || right)``, and the tree over ``n > 1``
leaves splits at ``k``, the largest power of two smaller than ``n``. The empty
tree's hash is ``SHA-256()`` (RFC 6962's ``MTH({})``).

Storage (``agent.ledger.store``) keeps the root of every *complete* subtree
(a perfect binary tree whose leaves start at a multiple of its width), laid
out in the order of Crosby and Wallach's "Efficient Data Structures for
Tamper-Evident Logging" (section 3.3), which Go's ``sumdb/tlog`` also uses:
leaf ``n`` is followed by the roots its arrival completes, so the file only
ever grows at its end. ``stored_index(level, n)`` is the position of the
``n``-th root at height ``level``. Any subtree hash the proofs need is a fold
of at most ``log2(size)`` stored roots, so a proof reads ``O(log^2 size)``
hashes at worst and usually about ``2 log2(size)``.

A proof function takes a ``HashReader``: a callable given a list of stored
positions that returns their hashes in the same order (one call per proof).
Proofs are in the order RFC 6962 (and Go's ``tlog.RecordProof`` and
``tlog.TreeProof``, and C2SP tlog-proof and tlog-witness) use: from the leaf's
or old tree's side up to the root's child.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256

from agent.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()

HashReader = Callable[[Sequence[int]], Sequence[bytes]]


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return sha256(b"\x01" + left + right).digest()


def _split(width: int) -> int:
    """The largest power of two strictly smaller than ``width`` (``width >= 2``)."""
    return 1 << ((width - 1).bit_length() - 1)


# --- stored positions -------------------------------------------------------------------------------------

def stored_index(level: int, n: int) -> int:
    """The position of the ``n``-th complete subtree root of height ``level`` in the stored-hash sequence.

    The sequence holds, for each leaf ``i`` in order, the leaf's hash and then the
    roots that leaf completes (one more for each trailing 1 bit of ``i``). The root
    ``(level, n)`` is completed by leaf ``m = ((n + 1) << level) - 1``, and follows it
    at offset ``level``. Leaf ``m`` itself sits after ``m`` leaves and the
    ``m - popcount(m)`` roots they completed: position ``2m - popcount(m)``."""
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def leaf_of(position: int) -> int:
    """The leaf whose hash is stored at ``position`` (``ValueError`` if a subtree root is stored there)."""
    n = position // 2
    while stored_index(0, n) < position:
        n += 1
    if stored_index(0, n) != position:
        raise ValueError(f"position {position} holds a subtree root, not a leaf hash")
    return n


def stored_count(size: int) -> int:
    """How many hashes are stored for a tree of ``size`` leaves (``2 size - popcount(size)``)."""
    return 2 * size - size.bit_count()


def stored_for_leaf(n: int, leaf: bytes, left_roots: Sequence[bytes]) -> list[bytes]:
    """The hashes to store when leaf ``n`` (with hash ``leaf``) arrives: the leaf hash and each root it
    completes. ``left_roots`` are the roots of the complete subtrees to its left that it completes,
    nearest (smallest) first: one per trailing 1 bit of ``n``."""
    out = [leaf]
    h = leaf
    for left in left_roots:
        h = node_hash(left, h)
        out.append(h)
    return out


def _complete_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """``(level, n)`` of the complete subtrees that tile ``[lo, hi)``, left to right.

    Only ranges that occur in an RFC 6962 tree are asked for: ``lo`` is a multiple
    of a power of two at least ``hi - lo``, so the tiling follows the binary digits
    of ``hi - lo``, largest first."""
    out = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        width = 1 << level
        if lo & (width - 1):
            raise ValueError(f"[{lo}, {hi}) is not a subtree range of an RFC 6962 tree")
        out.append((level, lo >> level))
        lo += width
    return out


class _Plan:
    """The subtree ranges a proof needs, gathered first so that one read fetches every hash."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def add(self, lo: int, hi: int) -> None:
        self.ranges.append((lo, hi))

    def hashes(self, read: HashReader) -> list[bytes]:
        tiles = [_complete_subtrees(lo, hi) for lo, hi in self.ranges]
        positions = [stored_index(level, n) for tiling in tiles for level, n in tiling]
        got = list(read(positions)) if positions else []
        if len(got) != len(positions) or any(len(h) != HASH_SIZE for h in got):
            raise ValueError(f"the hash reader returned {len(got)} hashes for {len(positions)} positions")
        out = []
        i = 0
        for tiling in tiles:
            part = got[i:i + len(tiling)]
            i += len(tiling)
            h = part[-1]
            for left in reversed(part[:-1]):
                h = node_hash(left, h)
            out.append(h)
        return out


def tree_hash(size: int, read: HashReader) -> bytes:
    """The root hash of the first ``size`` leaves."""
    if size < 0:
        raise ValueError("a tree size cannot be negative")
    if size == 0:
        return EMPTY_ROOT
    plan = _Plan()
    plan.add(0, size)
    return plan.hashes(read)[0]


def root_of_subtrees(roots: Sequence[bytes]) -> bytes:
    """The tree hash from the roots of the complete subtrees that tile it, left (largest) first."""
    if not roots:
        return EMPTY_ROOT
    h = roots[-1]
    for left in reversed(roots[:-1]):
        h = node_hash(left, h)
    return h


# --- inclusion ----------------------------------------------------------------------------------------------

def _inclusion_ranges(index: int, lo: int, hi: int, plan: _Plan) -> None:
    # RFC 6962 2.1.1: PATH(m, D[lo:hi]) = PATH(m, one side) : MTH(other side); the sibling
    # nearest the leaf comes first, so the recursion runs before the side's own range is added.
    if hi - lo == 1:
        return
    k = _split(hi - lo)
    if index < lo + k:
        _inclusion_ranges(index, lo, lo + k, plan)
        plan.add(lo + k, hi)
    else:
        _inclusion_ranges(index, lo + k, hi, plan)
        plan.add(lo, lo + k)


def inclusion_proof(index: int, size: int, read: HashReader) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    plan = _Plan()
    _inclusion_ranges(index, 0, size, plan)
    return plan.hashes(read)


def root_from_inclusion(proof: Sequence[bytes], index: int, size: int, leaf: bytes) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index``; ``ProofError`` if its length is wrong."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    if any(len(h) != HASH_SIZE for h in proof):
        raise ProofError("a proof hash is not 32 bytes")
    # Walk down from the root to find, for each level, which side the leaf is on.
    sides = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            sides.append(False)  # the leaf is on the left: the sibling is on the right
            hi = lo + k
        else:
            sides.append(True)
            lo = lo + k
    if len(proof) != len(sides):
        raise ProofError(f"an inclusion proof for leaf {index} of {size} has {len(sides)} hashes, not {len(proof)}")
    h = leaf
    for sibling, leaf_on_right in zip(proof, reversed(sides)):
        h = node_hash(sibling, h) if leaf_on_right else node_hash(h, sibling)
    return h


def verify_inclusion(proof: Sequence[bytes], index: int, size: int, leaf: bytes, root: bytes) -> None:
    """Raise ``ProofError`` unless ``proof`` shows ``leaf`` at ``index`` in the tree ``(size, root)``."""
    if root_from_inclusion(proof, index, size, leaf) != root:
        raise ProofError(f"the inclusion proof for leaf {index} does not lead to the tree head of size {size}")


# --- consistency ----------------------------------------------------------------------------------------------

def _consistency_ranges(old: int, lo: int, hi: int, whole: bool, plan: _Plan) -> None:
    # RFC 6962 2.1.2: SUBPROOF(m, D[lo:hi], b).
    if old == hi:
        if not whole:
            plan.add(lo, hi)
        return
    k = _split(hi - lo)
    if old <= lo + k:
        _consistency_ranges(old, lo, lo + k, whole, plan)
        plan.add(lo + k, hi)
    else:
        _consistency_ranges(old, lo + k, hi, False, plan)
        plan.add(lo, lo + k)


def consistency_proof(old_size: int, new_size: int, read: HashReader) -> list[bytes]:
    """The proof that the tree of ``new_size`` leaves extends the one of ``old_size`` (empty when
    ``old_size`` is 0 or equals ``new_size``)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    plan = _Plan()
    _consistency_ranges(old_size, 0, new_size, True, plan)
    return plan.hashes(read)


def _run_consistency(proof: list[bytes], old: int, lo: int, hi: int, whole: bool,
                     old_root: bytes) -> tuple[bytes, bytes]:
    """The (old, new) hashes of ``[lo, hi)`` that ``proof`` implies; consumes ``proof`` from its end."""
    if old == hi:
        if whole:
            return old_root, old_root
        if not proof:
            raise ProofError("the consistency proof is too short")
        h = proof.pop()
        return h, h
    if not proof:
        raise ProofError("the consistency proof is too short")
    sibling = proof.pop()
    k = _split(hi - lo)
    if old <= lo + k:
        old_h, new_h = _run_consistency(proof, old, lo, lo + k, whole, old_root)
        return old_h, node_hash(new_h, sibling)
    old_h, new_h = _run_consistency(proof, old, lo + k, hi, False, old_root)
    return node_hash(sibling, old_h), node_hash(sibling, new_h)


def verify_consistency(proof: Sequence[bytes], old_size: int, old_root: bytes,
                       new_size: int, new_root: bytes) -> None:
    """Raise ``ProofError`` unless ``proof`` shows that ``(new_size, new_root)`` extends
    ``(old_size, old_root)``. The empty old tree is extended by any tree (with an empty proof)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"a tree of size {new_size} cannot extend one of size {old_size}")
    if any(len(h) != HASH_SIZE for h in proof):
        raise ProofError("a proof hash is not 32 bytes")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError("the consistency proof should be empty")
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"two different tree heads of the same size {new_size}")
        return
    rest = list(proof)
    old_h, new_h = _run_consistency(rest, old_size, 0, new_size, True, old_root)
    if rest:
        raise ProofError("the consistency proof is too long")
    if old_h != old_root or new_h != new_root:
        raise ProofError(f"the tree head of size {new_size} does not extend the one of size {old_size}")
