"""The session journal: hash-chained canonical JSON lines with signed checkpoints and a seal.

See docs/ARCHITECTURE.md ("The journal") for the contract.
"""

from agent.errors import BadLine, JournalError
from agent.journal.format import MAX_LINE, NAMESPACE, checkpoint_message, line_hash
from agent.journal.reader import iter_lines, read_records
from agent.journal.verify import JournalCheck, verify_journal
from agent.journal.writer import Journal

SYNC_TYPES = Journal.SYNC_TYPES

__all__ = [
    "BadLine",
    "Journal",
    "JournalCheck",
    "JournalError",
    "MAX_LINE",
    "NAMESPACE",
    "SYNC_TYPES",
    "checkpoint_message",
    "iter_lines",
    "line_hash",
    "read_records",
    "verify_journal",
]
