"""A guard against Qt bindings that would crash the tray after a while.

PySide6 6.12.0 on Python 3.11 gives up a reference to ``None`` (and to
``True`` for signal emissions) on every call that returns nothing: after a
few thousand calls the interpreter aborts with "deallocating None". Python
3.12 and later are immune (``None`` is immortal there). The tray checks this
once at start and refuses to run with one plain sentence rather than crash
in the middle of a session.
"""

from __future__ import annotations

import sys

CALLS = 64


def bindings_leak_references() -> bool:
    """True when calling a Qt method that returns nothing loses a reference to ``None``."""
    if sys.version_info >= (3, 12):
        return False
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(CALLS):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - CALLS // 2


def bindings_problem() -> str | None:
    """One sentence when these Qt bindings cannot run the tray safely, else None."""
    if not bindings_leak_references():
        return None
    import PySide6

    return (f"PySide6 {PySide6.__version__} corrupts Python {sys.version_info.major}.{sys.version_info.minor}'s "
            "reference counts and would crash the tray; install another version "
            "(pip install 'PySide6-Essentials<6.12') or use Python 3.12 or later.")
