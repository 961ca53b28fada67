"""Which collectors run on which OS. Other OSes list only what psutil can tell for now."""

from __future__ import annotations

import sys

from agent.capture.inventory.common import collect_listening
from agent.capture.inventory.snapshot import Collector


def default_collectors(platform: str = sys.platform) -> dict[str, Collector]:
    """category -> collector for ``platform``."""
    if platform.startswith("linux"):
        from agent.capture.inventory import linux

        return {
            "packages": linux.collect_packages,
            "services": linux.collect_services,
            "scheduled": linux.collect_scheduled,
            "autostart": linux.collect_autostart,
            "users": linux.collect_users,
            "groups": linux.collect_groups,
            "authorized_keys": linux.collect_authorized_keys,
            "sudoers": linux.collect_sudoers,
            "listening": collect_listening,
        }
    return {"listening": collect_listening}
