"""The tray's icons, one per state, drawn as SVG assets that differ in shape and glyph.

| state          | shape                           |
|----------------|---------------------------------|
| ``idle``         | shield with a check mark        |
| ``consent``      | speech bubble with a question mark |
| ``active``       | disc with an open eye           |
| ``alarm``        | triangle with an exclamation mark |
| ``disconnected`` | dashed hollow shield with a cross |
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon

STATES = ("idle", "consent", "active", "alarm", "disconnected")


def asset_path(name: str) -> Path:
    """Path of a file in ui/assets, from a source checkout or a frozen (PyInstaller) build."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    base = Path(frozen_root) / "ui" / "assets" if frozen_root else Path(__file__).resolve().parent / "assets"
    return base / name


def state_icon(state: str) -> QIcon:
    if state not in STATES:
        raise ValueError(f"unknown tray state {state!r}")
    return QIcon(str(asset_path(f"{state}.svg")))
