"""The one place that knows which categories each OS has. Other OSes list only what psutil can tell
for now (listening ports, remote-access tools running)."""

from __future__ import annotations

import sys

from agent.capture.inventory.common import portable_categories
from agent.capture.inventory.linux import linux_categories
from agent.capture.inventory.types import Categories, Collector, collectors_of


def default_categories(platform: str = sys.platform, root: str = "/") -> Categories:
    """category name -> :class:`Category` for ``platform``, reading the machine under ``root``."""
    if platform.startswith("linux"):
        return linux_categories(root)
    return portable_categories()


def default_collectors(platform: str = sys.platform, root: str = "/") -> dict[str, Collector]:
    """category -> collector for ``platform`` (what :func:`take_snapshot` takes)."""
    return collectors_of(default_categories(platform, root))
