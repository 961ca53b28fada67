"""Which files are configuration, secret or bulky: by place and name, cheaply.

Configuration files get a redacted diff; secret files (keys, credential
stores, ``shadow``…: ``agent.redact.is_secret_file``) get hashes only;
files in caches, toolchains and installed packages are never configuration by
place or name. :class:`ConfigPlaces` answers for every file of a large tree
(one verdict per folder is cached).
"""

from __future__ import annotations

import os

from agent.capture.hashing import HashResult
from agent.redact import is_secret_file, is_text_config

MAX_DIFF_BYTES = 1 << 20  # files larger than this get hashes only
CONFIG_SUFFIXES = (
    b".conf", b".cfg", b".cnf", b".ini", b".env", b".yaml", b".yml", b".toml", b".json", b".xml", b".properties",
    b".service", b".timer", b".socket", b".desktop", b".plist", b".rules", b".repo", b".list", b".sh", b".profile",
    b".rc", b".config", b".reg", b".ps1",
)
CONFIG_NAMES = {b"config", b"authorized_keys", b"known_hosts", b"crontab", b"hosts", b"sudoers", b"environment"}
CONFIG_DOT_DIRS = {b".config", b".ssh", b".gnupg", b".docker", b".kube", b".aws", b".azure", b".pki", b".terraform.d"}
BULKY_DIRS = {  # caches, toolchains and installed packages: never configuration by place or name
    b"node_modules", b"site-packages", b"dist-packages", b"__pycache__", b".venv", b"venv", b".cache", b".npm",
    b".cargo", b".rustup", b".gradle", b".m2", b".pyenv", b".nvm", b".rbenv", b".conda", b".local", b".var",
    b".mozilla", b"snap", b".git",
}


class ConfigPlaces:
    """Which files are configuration by place and name: anything below a system configuration folder;
    elsewhere, outside caches and toolchains, a dotfile of a watched root, a file in a configuration
    dot-folder (``~/.config``, ``~/.ssh``...), or a configuration-like name or extension. Cheap enough
    to ask for every file of a large tree (one verdict per folder is cached)."""

    _CONFIG, _BULKY, _PLAIN = range(3)

    def __init__(self, roots: list[bytes], config_prefixes: tuple[bytes, ...]):
        self._roots = tuple(r.rstrip(b"/") + b"/" for r in roots)
        self._config_prefixes = config_prefixes
        self._places: dict[bytes, int] = {}

    def __contains__(self, path: bytes) -> bool:
        folder, _, name = path.rpartition(b"/")
        folder += b"/"
        place = self._places.get(folder)
        if place is None:
            if len(self._places) > 10_000:
                self._places.clear()
            place = self._places[folder] = self._place(folder)
        if place != self._PLAIN:
            return place == self._CONFIG
        if name in CONFIG_NAMES or name.lower().endswith(CONFIG_SUFFIXES):
            return True
        return folder in self._roots and name.startswith(b".")  # a dotfile of a root

    def _place(self, folder: bytes) -> int:
        if folder.startswith(self._config_prefixes):
            return self._CONFIG
        for root in self._roots:
            if folder.startswith(root):
                parts = folder[len(root) :].split(b"/")
                if any(part in BULKY_DIRS for part in parts):
                    return self._BULKY
                return self._CONFIG if parts[0] in CONFIG_DOT_DIRS else self._PLAIN
        return self._PLAIN


def is_secret(*paths: bytes | None) -> bool:
    """Whether any of these names is a secret file (hashes only, never text)."""
    return any(is_secret_file(os.fsdecode(p)) for p in paths if p is not None)


def is_config_text(places: ConfigPlaces, path: bytes, result: HashResult) -> bool:
    """Whether a file (as hashed) is a text configuration file, by place, name and its first bytes."""
    if path not in places:
        return False
    return result.data is None or is_text_config(os.fsdecode(path), result.data[:4096])


def decode_text(data: bytes) -> str | None:
    """The text of a file's content, or None when it is binary or not UTF-8."""
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
