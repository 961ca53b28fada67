"""The machine the collectors read: ``/``, or a folder that stands for it.

Collectors name what they find by its path on the machine (``/etc/crontab``)
and read it through :class:`Machine`, so that tests can point them at a
temporary root without touching the real ``/etc``. Paths that a file on the
machine names (a home in ``/etc/passwd``, an ``@includedir`` in sudoers) are
machine paths too, and are read under the same root.
"""

from __future__ import annotations

import glob
import os

from agent.capture.inventory import accounts
from agent.capture.inventory.readers import list_dir, read_bytes, read_text


class Machine:
    """Reads machine paths (absolute, as on the machine) under ``root``."""

    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root).rstrip("/") or "/"
        self.is_real = self.root == "/"

    def real(self, path: str) -> str:
        """The real path of a machine path."""
        return path if self.is_real else self.root + ("" if path.startswith("/") else "/") + path

    def read(self, path: str) -> str | None:
        return read_text(self.real(path))

    def read_bytes(self, path: str) -> bytes | None:
        return read_bytes(self.real(path))

    def listdir(self, path: str) -> list[str]:
        return list_dir(self.real(path))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.real(path))

    def isfile(self, path: str) -> bool:
        return os.path.isfile(self.real(path))

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.real(path))

    def glob(self, pattern: str) -> list[str]:
        """Machine paths matching ``pattern`` (a machine path with wildcards), sorted."""
        if self.is_real:
            return sorted(glob.glob(pattern))
        found = glob.glob(glob.escape(self.root) + pattern)
        return sorted(p[len(self.root):] for p in found)

    def users(self) -> dict[str, dict]:
        return accounts.parse_passwd(self.read("/etc/passwd") or "")

    def homes(self) -> list[tuple[str, dict]]:
        """(user, passwd entry) of users whose home is a folder, each home once, by uid."""
        seen, result = set(), []
        for name, u in sorted(self.users().items(), key=lambda kv: (kv[1]["uid"] is None, kv[1]["uid"] or 0, kv[0])):
            home = u["home"]
            if home and home.startswith("/") and home not in seen and self.isdir(home):
                seen.add(home)
                result.append((name, u))
        return result


def join(folder: str, name: str) -> str:
    """``folder/name`` without a doubled slash (``/`` + ``etc`` is ``/etc``)."""
    return folder.rstrip("/") + "/" + name
