"""Errors a user can act on.

A ``ChaperoneError`` carries one plain sentence that says what is wrong and
what to do; the command line prints it to stderr without a traceback and
exits with ``exit_code``.
"""


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


class AgentUnavailable(ChaperoneError):
    """No agent answers on the home's socket."""


class LedgerError(ChaperoneError):
    """The device ledger cannot be opened, read or written, or its files disagree with a signed head."""


class WitnessError(ChaperoneError):
    """A witness's key or state cannot be read or written, or its arguments are wrong."""
