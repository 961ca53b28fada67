"""Reading a bundle from a zip or a folder, without trusting it.

Only plain names are accepted (no ``/``, ``\\``, ``..``, no sub-folders or
links), sizes are capped per file, and a zip member that inflates too much is
refused, so a hostile bundle cannot write outside, exhaust memory or fill
the disk: nothing is ever extracted.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

from agent.bundle.layout import MAX_RATIO, MAX_SIZE

_SMALL_MEMBER = 1 << 20


class Unreadable(Exception):
    """The bundle cannot be read at all; ``str()`` is one sentence."""


class Unexpected(Exception):
    """The bundle holds an entry no genuine bundle has; ``str()`` is one sentence."""


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", "..") or ".." in name or "\x00" in name:
        raise Unexpected(f"The bundle holds an entry named {name!r}, which no genuine bundle has.")


class BundleSource:
    """The files of a bundle: ``names``, ``size(name)``, ``open(name)``, ``read(name)``, ``load(name)``.

    ``keep``: files up to this size that are ``load``-ed are kept in memory, and every later ``open`` of
    them reads that copy (a review reads the journal three times: to verify it, to check its ledger
    evidence and to summarise it; a zip member is then inflated once)."""

    def __init__(self, path: Path, *, keep: int = 0) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._sizes: dict[str, int] = {}
        self._keep = keep
        self._kept: dict[str, bytes] = {}
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise Unreadable(f"There is no bundle at {self.path}.") from None
        except OSError as exc:
            raise Unreadable(f"Cannot read {self.path}: {exc.strerror}.") from None
        if stat.S_ISDIR(st.st_mode):
            self._scan_folder()
        else:
            self._scan_zip()

    def _scan_folder(self) -> None:
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise Unreadable(f"Cannot read the folder {self.path}: {exc.strerror}.") from None
        for entry in sorted(entries, key=lambda e: e.name):
            _check_name(entry.name)
            if not entry.is_file(follow_symlinks=False):
                raise Unexpected(f"The bundle holds {entry.name!r}, which is not a plain file.")
            self._sizes[entry.name] = entry.stat(follow_symlinks=False).st_size

    def _scan_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except OSError as exc:
            raise Unreadable(f"Cannot read {self.path}: {exc.strerror or exc}.") from None
        except Exception:  # noqa: BLE001 - zipfile raises many kinds of errors for hostile bytes
            raise Unreadable(f"{self.path} is not a zip file, or it is truncated or damaged.") from None
        for info in infos:
            _check_name(info.filename)
            if info.filename in self._sizes:
                raise Unexpected(f"The bundle holds {info.filename} twice.")
            if info.file_size > _SMALL_MEMBER and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                ratio = info.file_size // max(info.compress_size, 1)
                raise Unreadable(f"{info.filename} in {self.path} inflates {ratio} times, "
                                 "which no genuine bundle does; it is not read.")
            self._sizes[info.filename] = info.file_size

    @property
    def names(self) -> list[str]:
        return list(self._sizes)

    def size(self, name: str) -> int:
        return self._sizes[name]

    def open(self, name: str) -> BinaryIO:
        """A binary stream of the file; refuses one above its size limit."""
        limit = MAX_SIZE.get(name, 0)
        if self._sizes[name] > limit:
            raise Unreadable(f"{name} in {self.path} is {self._sizes[name]} bytes, "
                             f"more than the {limit} a bundle may hold.")
        if name in self._kept:
            return io.BytesIO(self._kept[name])
        try:
            if self._zip is not None:
                # zipfile's own readline is slow Python; a C buffer over the member reads lines 5-10x faster
                return io.BufferedReader(self._zip.open(name), buffer_size=1 << 16)  # type: ignore[type-var]
            return open(self.path / name, "rb")
        except Exception as exc:  # noqa: BLE001 - encrypted, unknown compression, damaged header…
            raise Unreadable(f"Cannot read {name} in {self.path}: {exc}.") from None

    def read(self, name: str) -> bytes:
        """The whole (small) file."""
        with self.open(name) as stream:
            try:
                data = stream.read(MAX_SIZE.get(name, 0) + 1)
            except Exception as exc:  # noqa: BLE001 - damaged data: BadZipFile, zlib.error, EOFError…
                raise Unreadable(f"Cannot read {name} in {self.path}: {exc}.") from None
        if len(data) > MAX_SIZE.get(name, 0):
            raise Unreadable(f"{name} in {self.path} is larger than a bundle's {name} may be.")
        return data

    def load(self, name: str) -> bytes | None:
        """The whole file, kept for later ``open``-s, if it is no larger than ``keep``; else None (stream it)."""
        if name in self._kept:
            return self._kept[name]
        if self._sizes[name] > self._keep:
            return None
        with self.open(name) as stream:
            try:
                data = stream.read(self._keep + 1)
            except Exception as exc:  # noqa: BLE001 - damaged data: BadZipFile, zlib.error, EOFError…
                raise Unreadable(f"A file of the bundle cannot be read to its end ({exc}).") from None
        if len(data) > self._keep:  # a folder's file grew since it was listed: stream it instead
            return None
        self._kept[name] = data
        return data

    def close(self) -> None:
        self._kept.clear()
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> BundleSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
