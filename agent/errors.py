"""Every error Chaperone raises, in one tree, and the one way to turn any of them into a sentence.

Two families:

- ``ChaperoneError``: a problem a person can act on. ``str(err)`` is one plain
  sentence that says what is wrong and what to do; the command line prints it
  without a traceback and exits with ``exit_code``. ``ApiError`` is the one
  error of the local API: it carries the wire ``code`` and the sentence, on
  both sides of the socket.
- ``FormatError`` (a ``ValueError``): bytes or text in one of the formats we
  read (SSH wire, keys, signatures, journal lines, bundles, allowed_signers,
  certificates) are not what they must be. ``str(err)`` is a clause saying why
  ("it is not valid UTF-8"); it is raised by pure parsers and converted at the
  boundary into a verdict or a ``ChaperoneError`` that names the file.

``LifecycleError`` is a bug (a transition the state machine forbids), never a
user's doing. ``user_message`` turns any exception into what a user sees.
"""

from __future__ import annotations

import errno


class ChaperoneError(Exception):
    """A problem the user can fix; ``str(err)`` is the sentence to show."""

    exit_code = 2


class HomeError(ChaperoneError):
    """The home folder is missing, unreadable or not writable."""


class SettingsError(ChaperoneError):
    """``settings.json`` cannot be read, or a key in it holds a value of the wrong kind."""


class KeyFileError(ChaperoneError):
    """The device key is missing, damaged or readable by others."""


class UsageError(ChaperoneError):
    """The user's input is wrong (a bad argument, an unknown id)."""


class RequestError(UsageError):
    """A session request is malformed, out of range, or its file cannot be used."""


class AgentUnavailable(ChaperoneError):
    """No agent answers on the home's socket."""


class AlreadyRunning(ChaperoneError):
    """Another agent holds this home."""


class JournalError(ChaperoneError):
    """The journal cannot be written or opened."""


class HistoryError(ChaperoneError):
    """The history database cannot be read or written."""


class InventoryFileError(ChaperoneError):
    """A session's saved "before" inventory is missing, damaged, or not the one its journal recorded."""


class TrustError(ChaperoneError):
    """A signature or key is not trusted, or the trust file cannot be used."""


class LedgerError(ChaperoneError):
    """The device ledger cannot be opened, read or written, or its files disagree with a signed head."""


class WitnessError(ChaperoneError):
    """A witness's key or state cannot be read or written, or its arguments are wrong."""


API_CODES = ("bad-request", "forbidden", "not-found", "conflict", "too-large", "unavailable")


class ApiError(ChaperoneError):
    """An operation of the local API that cannot be done: ``code`` (one of ``API_CODES``) travels on
    the wire with the sentence; the client raises the same error with what the agent said."""

    def __init__(self, code: str, message: str):
        if code not in API_CODES:
            raise ValueError(f"unknown API error code {code!r}")
        super().__init__(message)
        self.code = code


# --- formats we read ---------------------------------------------------------------------------------

class FormatError(ValueError):
    """Input in one of our formats is malformed; ``str(err)`` says why, as a clause."""


class WireError(FormatError):
    """The bytes are not a well-formed SSH wire structure."""


class KeyFormatError(FormatError):
    """Not a public key or certificate that we understand."""


class SignatureError(FormatError):
    """The signature is malformed or does not match."""


class CertificateError(FormatError):
    """The certificate is malformed or its CA signature does not match."""


class SignersLineError(FormatError):
    """A line of an allowed_signers file cannot be used."""


class NotCanonical(FormatError):
    """The value cannot be written as canonical JSON."""


class LineTooLong(FormatError):
    """A journal line longer than the journal allows: the input is not a journal we can read."""


class BadLine(FormatError):
    """A journal line that is not a well-formed record."""


class LayoutError(FormatError):
    """A bundle file is not in the expected format."""


class NoteError(FormatError):
    """A C2SP signed note, signature line, verifier key, checkpoint or tlog-proof is malformed, or a
    signature on it does not verify."""


class ProofError(FormatError):
    """A Merkle inclusion or consistency proof does not verify, or has the wrong shape for its sizes."""


class LifecycleError(Exception):
    """A session transition the lifecycle does not allow (a bug, never a user's doing)."""


# --- the sentence a user sees ----------------------------------------------------------------------

_OS_SENTENCES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.ENOENT: "it does not exist",
    errno.EIO: "an input/output error (the disk may be failing)",
}


def user_message(exc: BaseException) -> str:
    """One sentence for any exception: ours as they are, the system's in plain words, a bug as such."""
    if isinstance(exc, ChaperoneError):
        return str(exc)
    if isinstance(exc, OSError):
        what = _OS_SENTENCES.get(exc.errno or 0) or (exc.strerror or str(exc)).rstrip(".").lower()
        where = f" ({exc.filename})" if exc.filename else ""
        return f"The system refused{where}: {what}."
    return f"Internal error ({error_detail(exc)}); run again with CHAPERONE_DEBUG=1 for details and report it."


def error_detail(exc: BaseException) -> str:
    """``Type: message`` for a record's ``error`` field (for the reader of a journal, not a sentence)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
