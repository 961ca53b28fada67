"""The device ledger: an append-only RFC 6962 Merkle log of the lines that matter, with C2SP heads.

It knows nothing of sessions. See ``agent.ledger.ledger`` (the ledger and its
folder), ``agent.ledger.store`` (the files), ``agent.ledger.merkle`` (hashing
and proofs), ``agent.ledger.note``, ``agent.ledger.cosignature`` and
``agent.ledger.checkpoint`` (the C2SP formats), and docs/ARCHITECTURE.md
("Ledger").
"""

from agent.ledger.checkpoint import Checkpoint, TlogProof
from agent.ledger.cosignature import (
    CosignatureSigner,
    CosignatureVerifier,
    vkey_verifier,
)
from agent.ledger.ledger import (
    CosignedHead,
    Ledger,
    SignedHead,
    default_origin,
    ledger_dir,
    ledger_identity,
)
from agent.ledger.merkle import (
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from agent.ledger.note import (
    Ed25519Signer,
    Ed25519Verifier,
    NoteError,
    Signature,
    open_note,
    parse_note,
    sign_note,
)

__all__ = [
    "Checkpoint",
    "CosignatureSigner",
    "CosignatureVerifier",
    "CosignedHead",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Ledger",
    "NoteError",
    "ProofError",
    "Signature",
    "SignedHead",
    "TlogProof",
    "default_origin",
    "leaf_hash",
    "ledger_dir",
    "ledger_identity",
    "open_note",
    "parse_note",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
    "vkey_verifier",
]
