"""Reading a bundle from a zip or a folder, without trusting it.

Only plain names are accepted (no ``/``, ``\\``, ``..``, no sub-folders or
links), sizes are capped per file, and a zip member that inflates too much is
refused, so a hostile bundle cannot write outside, exhaust memory or fill
the disk: nothing is ever extracted.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.bundle.layout import MAX_RATIO, MAX_SIZE

_SMALL_MEMBER = 1 << 20
#: A zip up to this size is read into memory in one call (``snapshot``: hashed and checked from the same
#: bytes), and its members up to ``_FAST_MEMBER`` are inflated in one call each (zipfile's reader is Python,
#: chunk by chunk: it was a tenth of a review's time).
SMALL = 16 << 20
_FAST_MEMBER = 16 << 20
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # PKZIP APPNOTE 4.3.7, as zipfile reads it
_LOCAL_SIGNATURE = b"PK\x03\x04"


class Unreadable(Exception):
    """The bundle cannot be read at all; ``str()`` is one sentence."""


class Unexpected(Exception):
    """The bundle holds an entry no genuine bundle has; ``str()`` is one sentence."""


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", "..") or ".." in name or "\x00" in name:
        raise Unexpected(f"The bundle holds an entry named {name!r}, which no genuine bundle has.")


_FOLDER_PREFIX = b"chaperone-bundle-folder\n"


@dataclass(frozen=True)
class Snapshot:
    """A bundle as it was read once: ``path`` to read it from (the original, or a private copy), ``data`` (a
    small zip's bytes), ``digest`` (its identity: the SHA-256 of a zip's bytes, or of a folder's files' names
    and digests) and ``shown`` (its name as given)."""

    path: Path
    data: bytes | None
    digest: str
    shown: Path

    def open(self, keep: int = 0) -> BundleSource:
        return BundleSource(self.path, keep=keep, data=self.data, shown=self.shown)


@contextmanager
def snapshot(path: Path) -> Iterator[Snapshot]:
    """Read the bundle at ``path`` once, so that what is checked is what is hashed and shown.

    Whoever can write where a bundle lies could otherwise swap it between two reads: between hashing and
    verifying (and have a review's index remember a tampered bundle's digest as genuine), or between
    verifying and writing the report (and have a genuine verdict printed over tampered records). A small zip
    is read into memory; a larger zip, or a bundle folder, is copied into a private temporary folder as it is
    hashed (which takes its size on that disk for as long as it is read). ``Unreadable`` when it cannot be
    read at all."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise Unreadable(f"{path} is neither a file nor a folder, so it is no bundle.")
        small = _read_small(path, st.st_size) if stat.S_ISREG(st.st_mode) and st.st_size <= SMALL else None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if small is not None:
        yield Snapshot(path, small, hashlib.sha256(small).hexdigest(), path)
        return
    with tempfile.TemporaryDirectory(prefix="chaperone-bundle-") as private:
        try:
            taken = _copy_folder(path, Path(private)) if stat.S_ISDIR(st.st_mode) else _copy_zip(path, Path(private))
        except OSError as exc:
            raise _unreadable(path, exc) from None
        yield taken


def _unreadable(path: Path, exc: OSError) -> Unreadable:
    if isinstance(exc, FileNotFoundError):
        return Unreadable(f"There is no bundle at {path}.")
    return Unreadable(f"Cannot read {path}: {exc.strerror or exc}.")


def _read_small(path: Path, size: int) -> bytes | None:
    """The file's bytes if it holds at most ``SMALL`` (``size``: what it held when it was looked at; it may
    have changed since)."""
    with open(path, "rb", buffering=1 << 16) as stream:  # reads until it has them (or the end)
        data = stream.read(size + 1)  # not SMALL + 1: that would be a 16 MiB buffer for a 25 KB file
        if len(data) > size:
            data += stream.read(SMALL + 1 - len(data))
    return data if len(data) <= SMALL else None


def _copy_zip(path: Path, private: Path) -> Snapshot:
    copy = private / "bundle.zip"
    return Snapshot(copy, None, _copy(path, copy), path)


def _copy_folder(path: Path, private: Path) -> Snapshot:
    copy = private / "bundle"
    copy.mkdir()
    outer = hashlib.sha256(_FOLDER_PREFIX)
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False):
            digest = _copy(Path(entry.path), copy / entry.name)
            outer.update(f"{entry.name}\0{digest}\n".encode("utf-8", "surrogateescape"))
        else:  # a link, folder or device: the copy holds a folder there, which no bundle may hold either
            (copy / entry.name).mkdir()
            outer.update(f"{entry.name}\0not a file\n".encode("utf-8", "surrogateescape"))
    return Snapshot(copy, None, outer.hexdigest(), path)


def _copy(source: Path, target: Path) -> str:
    """Copy a file, hashing what is copied; its SHA-256."""
    digest = hashlib.sha256()
    with open(source, "rb") as reading, open(target, "xb") as writing:
        while chunk := reading.read(1 << 20):
            digest.update(chunk)
            writing.write(chunk)
    return digest.hexdigest()


class BundleSource:
    """The files of a bundle: ``names``, ``size(name)``, ``open(name)``, ``read(name)``, ``load(name)``.

    ``keep``: files up to this size that are ``load``-ed are kept in memory, and every later ``open`` of
    them reads that copy (a review reads the journal three times: to verify it, to check its ledger
    evidence and to summarise it; a zip member is then inflated once)."""

    def __init__(self, path: Path, *, keep: int = 0, data: bytes | None = None, shown: Path | None = None) -> None:
        """``data``: the zip's bytes, already read; ``shown``: the bundle's name in sentences, when ``path`` is
        a private copy (see ``snapshot``)."""
        self.path = Path(path)
        self.shown = shown or self.path
        self._zip: zipfile.ZipFile | None = None
        self._bytes: bytes | None = None  # a small zip's bytes (``SMALL``)
        self._sizes: dict[str, int] = {}
        self._keep = keep
        self._kept: dict[str, bytes] = {}
        if data is not None:
            self._scan_zip(data)
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise Unreadable(f"There is no bundle at {self.shown}.") from None
        except OSError as exc:
            raise Unreadable(f"Cannot read {self.shown}: {exc.strerror}.") from None
        if stat.S_ISDIR(st.st_mode):
            self._scan_folder()
        else:
            self._scan_zip()

    def _scan_folder(self) -> None:
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise Unreadable(f"Cannot read the folder {self.shown}: {exc.strerror}.") from None
        for entry in sorted(entries, key=lambda e: e.name):
            _check_name(entry.name)
            if not entry.is_file(follow_symlinks=False):
                raise Unexpected(f"The bundle holds {entry.name!r}, which is not a plain file.")
            self._sizes[entry.name] = entry.stat(follow_symlinks=False).st_size

    def _scan_zip(self, data: bytes | None = None) -> None:
        """``data``: a small zip's bytes, read by ``snapshot``; without them the zip is read from ``path`` (a
        large one, which ``snapshot`` copied privately)."""
        self._bytes = data
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data) if data is not None else self.path)
            infos = self._zip.infolist()
        except OSError as exc:
            raise Unreadable(f"Cannot read {self.shown}: {exc.strerror or exc}.") from None
        except Exception:  # noqa: BLE001 - zipfile raises many kinds of errors for hostile bytes
            raise Unreadable(f"{self.shown} is not a zip file, or it is truncated or damaged.") from None
        for info in infos:
            _check_name(info.filename)
            if info.filename in self._sizes:
                raise Unexpected(f"The bundle holds {info.filename} twice.")
            if info.file_size > _SMALL_MEMBER and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                ratio = info.file_size // max(info.compress_size, 1)
                raise Unreadable(f"{info.filename} in {self.shown} inflates {ratio} times, "
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
            raise Unreadable(f"{name} in {self.shown} is {self._sizes[name]} bytes, "
                             f"more than the {limit} a bundle may hold.")
        if name in self._kept:
            return io.BytesIO(self._kept[name])
        if self._bytes is not None and self._sizes[name] <= _FAST_MEMBER:
            return io.BytesIO(self._inflate(name))
        try:
            if self._zip is not None:
                # zipfile's own readline is slow Python; a C buffer over the member reads lines 5-10x faster
                return io.BufferedReader(self._zip.open(name), buffer_size=1 << 16)  # type: ignore[type-var]
            return open(self.path / name, "rb")
        except Exception as exc:  # noqa: BLE001 - encrypted, unknown compression, damaged header…
            raise Unreadable(f"Cannot read {name} in {self.shown}: {exc}.") from None

    def _inflate(self, name: str) -> bytes:
        """A small zip's member, from its bytes in memory, in one call. It is read only when all its data is
        there and inflates to exactly the size and CRC-32 the zip's directory gives, else ``Unreadable``.
        (``zipfile`` is laxer: it accepts data that ends before that size if the CRC matches, and does not
        read data it does not need. No exporter writes such a zip.)"""
        assert self._zip is not None and self._bytes is not None
        info = self._zip.getinfo(name)
        if info.flag_bits & 0x61 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # 0x1 encrypted, 0x20 patch data, 0x40 strong encryption: zipfile refuses these too
            raise Unreadable(f"Cannot read {name} in {self.shown}: it is encrypted or compressed in a way no "
                             "bundle is.")
        data = self._bytes
        at = info.header_offset
        header = data[at:at + _LOCAL_HEADER.size]
        if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
            raise Unreadable(f"Cannot read {name} in {self.shown}: its header is damaged.")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        start = at + _LOCAL_HEADER.size
        local_name = data[start:start + name_length]
        if local_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace") != info.orig_filename:
            raise Unreadable(f"Cannot read {name} in {self.shown}: its name differs in the zip's header and "
                             "directory.")
        start += name_length + extra_length
        packed = data[start:start + info.compress_size]
        if len(packed) != info.compress_size:
            raise Unreadable(f"A file of the bundle cannot be read to its end ({name} is cut short).")
        if info.compress_type == zipfile.ZIP_STORED:
            content = packed[:info.file_size]
        else:
            try:
                # at most one byte more than the directory says (0 would mean no limit to zlib)
                content = zlib.decompressobj(-15).decompress(packed, info.file_size + 1)
            except zlib.error as exc:
                raise Unreadable(f"A file of the bundle cannot be read to its end ({exc}).") from None
        if len(content) != info.file_size or zlib.crc32(content) != info.CRC:
            raise Unreadable(f"A file of the bundle cannot be read to its end ({name} is damaged: its size or "
                             "CRC-32 is not the one the zip gives).")
        return content

    def read(self, name: str) -> bytes:
        """The whole (small) file."""
        with self.open(name) as stream:
            try:
                data = stream.read(MAX_SIZE.get(name, 0) + 1)
            except Exception as exc:  # noqa: BLE001 - damaged data: BadZipFile, zlib.error, EOFError…
                raise Unreadable(f"Cannot read {name} in {self.shown}: {exc}.") from None
        if len(data) > MAX_SIZE.get(name, 0):
            raise Unreadable(f"{name} in {self.shown} is larger than a bundle's {name} may be.")
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
        self._bytes = None
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> BundleSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
