"""fanotify, the kernel interface: groups, marks, events, and file handles turned into paths.

Two uses:

- **Filesystem-wide capture** (:mod:`agent.capture.writes` builds the
  records): a group that reports file identifiers (``FAN_REPORT_DFID_NAME``:
  the folder's handle and the name in it), marked on every mounted
  filesystem (``FAN_MARK_FILESYSTEM``), so creates, deletes, moves, closes
  after writing and metadata changes anywhere carry the writer's pid and a
  path, with no file descriptor opened per event. :func:`parse_fid_events`
  reads the buffer (pure, tested with hypothesis); :class:`HandleResolver`
  turns a handle into a path (``open_by_handle_at``, root only), caching
  folders.
- **Programs of execs** (:mod:`agent.capture.execs`): ``FAN_OPEN_EXEC``
  on the same kind of group, so the lineage knows what a 1 ms process ran.

``FAN_MODIFY`` (every write) is not asked for: a close after writing is
one event per file, while a write is one per ``write()`` (the journal's own
appends among them), and under a burst the doubled event rate starved the
inotify reader until its queue overflowed (bench/RESULTS.md). Without
root, :class:`GuessAttributor` names the newest process started during the
session that was alive around the change (``how = "guess"``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections import OrderedDict
from typing import NamedTuple

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
FAN_REPORT_MNT = 0x4000
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_INODE = 0x0
FAN_MARK_MOUNT = 0x10
FAN_MARK_IGNORED_MASK = 0x20
FAN_MARK_IGNORED_SURV_MODIFY = 0x40
FAN_MARK_FILESYSTEM = 0x100
FAN_MARK_MNTNS = 0x110

FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
FAN_RENAME = 0x10000000
FAN_MNT_ATTACH = 0x01000000
FAN_MNT_DETACH = 0x02000000
FAN_ONDIR = 0x40000000

FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FAN_EVENT_INFO_TYPE_MNT = 7
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = 12
_NAMED_INFO = (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)
_FID_INFO = (FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_DFID, *_NAMED_INFO)

AT_FDCWD = -100
O_PATH = getattr(os, "O_PATH", 0o10000000)
_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO_HEADER = struct.Struct("=BBH")  # info_type, pad, len
_HANDLE_HEADER = struct.Struct("=Ii")  # handle_bytes, handle_type
_U32 = struct.Struct("=I")
READ_SIZE = 256 * 1024


class FanotifyUnavailable(Exception):
    """fanotify cannot be used here; the message says why, in one sentence."""


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_char_p]
    return libc


def parse_events(buf: bytes) -> list[tuple[int, int, int]]:
    """``(mask, fd, pid)`` for each fanotify event in ``buf`` (a descriptor-reporting group)."""
    events = []
    offset = 0
    while offset + _METADATA.size <= len(buf):
        event_len, _vers, _res, _meta_len, mask, fd, pid = _METADATA.unpack_from(buf, offset)
        if event_len < _METADATA.size:
            break
        events.append((mask, fd, pid))
        offset += event_len
    return events


class FidInfo(NamedTuple):
    """One file-identifier record of an event: which object (``fsid`` + handle), and the name in it
    for the ``*_NAME`` kinds (``kind`` is a ``FAN_EVENT_INFO_TYPE_*``)."""

    kind: int
    fsid: bytes
    handle_type: int
    handle: bytes
    name: bytes | None


class FidEvent(NamedTuple):
    mask: int
    pid: int
    infos: tuple[FidInfo, ...]

    def info(self, *kinds: int) -> FidInfo | None:
        return next((i for i in self.infos if i.kind in kinds), None)


def parse_fid_events(buf: bytes | bytearray | memoryview) -> list[FidEvent]:
    """Every event in a buffer read from a file-identifier group. Records of kinds this module does
    not use are skipped; a malformed event ends the parse there (never an exception)."""
    data = bytes(buf)
    events: list[FidEvent] = []
    offset = 0
    while offset + _METADATA.size <= len(data):
        event_len, _vers, _res, meta_len, mask, _fd, pid = _METADATA.unpack_from(data, offset)
        end = offset + event_len
        if event_len < _METADATA.size or meta_len < _METADATA.size or end > len(data):
            break
        infos = []
        at = offset + meta_len
        while at + _INFO_HEADER.size <= end:
            kind, _pad, length = _INFO_HEADER.unpack_from(data, at)
            if length < _INFO_HEADER.size or at + length > end:
                break
            if kind in _FID_INFO:
                info = _parse_fid_info(data, at, length, kind)
                if info is not None:
                    infos.append(info)
            at += length
        events.append(FidEvent(mask, pid, tuple(infos)))
        offset = end
    return events


def event_spans(data: bytes) -> list[tuple[int, int, int, int, bytes, bytes | None]]:
    """``(start, end, mask, pid, key, name)`` of each event in a file-identifier buffer, where ``key``
    is the fsid and ``struct file_handle`` of its first record (the folder, for ``DFID_NAME``), as
    :meth:`HandleResolver.folder_raw` takes it (b"" if none), and ``name`` the name that record
    carries (None for a record without one): the cheap first look of a hot path.
    ``data[start:end]`` is the whole event, for :func:`parse_fid_events`. Never raises."""
    out = []
    size = len(data)
    offset = 0
    while offset + _METADATA.size <= size:
        event_len, _v, _r, meta_len, mask, _fd, pid = _METADATA.unpack_from(data, offset)
        end = offset + event_len
        if event_len < _METADATA.size or meta_len < _METADATA.size or end > size:
            break
        key = b""
        name = None
        at = offset + meta_len
        if at + _INFO_HEADER.size + 8 + _HANDLE_HEADER.size <= end:
            kind, _pad, length = _INFO_HEADER.unpack_from(data, at)
            if kind in _FID_INFO and at + length <= end:
                key_end = at + _INFO_HEADER.size + 8 + _HANDLE_HEADER.size + _U32.unpack_from(data, at + 12)[0]
                if key_end <= at + length:
                    key = data[at + _INFO_HEADER.size:key_end]
                    if kind in _NAMED_INFO:
                        name = data[key_end:at + length].split(b"\0", 1)[0]
        out.append((offset, end, mask, pid, key, name))
        offset = end
    return out


def _parse_fid_info(data: bytes, at: int, length: int, kind: int) -> FidInfo | None:
    body = at + _INFO_HEADER.size
    end = at + length
    if body + 8 + _HANDLE_HEADER.size > end:
        return None
    fsid = data[body:body + 8]
    handle_bytes, handle_type = _HANDLE_HEADER.unpack_from(data, body + 8)
    handle_at = body + 8 + _HANDLE_HEADER.size
    if handle_at + handle_bytes > end:
        return None
    handle = data[handle_at:handle_at + handle_bytes]
    name = None
    if kind in _NAMED_INFO:
        raw = data[handle_at + handle_bytes:end]
        name = raw.split(b"\0", 1)[0]
    return FidInfo(kind, fsid, handle_type, handle, name)


def mount_events(data: bytes) -> list[tuple[int, int, int]]:
    """``(mask, pid, unique mount id)`` for each event of a ``FAN_REPORT_MNT`` group (attach, detach);
    an overflow is ``(FAN_Q_OVERFLOW, 0, 0)``. Never raises."""
    out = []
    offset = 0
    while offset + _METADATA.size <= len(data):
        event_len, _v, _r, meta_len, mask, _fd, pid = _METADATA.unpack_from(data, offset)
        end = offset + event_len
        if event_len < _METADATA.size or meta_len < _METADATA.size or end > len(data):
            break
        if mask & FAN_Q_OVERFLOW:
            out.append((FAN_Q_OVERFLOW, 0, 0))
        at = offset + meta_len
        while at + _INFO_HEADER.size <= end:
            kind, _pad, length = _INFO_HEADER.unpack_from(data, at)
            if length < _INFO_HEADER.size or at + length > end:
                break
            if kind == FAN_EVENT_INFO_TYPE_MNT and length >= 16:
                out.append((mask, pid, struct.unpack_from("=Q", data, at + 8)[0]))  # after 4 bytes of padding
            at += length
        offset = end
    return out


SYS_STATMOUNT = 457  # the same number on every architecture (the unified table)
STATMOUNT_MNT_BASIC = 0x2
_MNT_ID_REQ = struct.Struct("=IIQQQ")  # size, spare, mnt_id, param, mnt_ns_id


def old_mount_id(libc, unique_id: int) -> int | None:
    """The id ``/proc/self/mountinfo`` shows for the mount whose unique id fanotify reported
    (``statmount``, Linux 6.8+; by id, so it never walks a path into the mount and never makes an
    ``umount`` fail as busy). None when the mount is gone or the kernel cannot say."""
    request = ctypes.create_string_buffer(_MNT_ID_REQ.pack(24, 0, unique_id, STATMOUNT_MNT_BASIC, 0), 32)
    answer = ctypes.create_string_buffer(512)
    if libc.syscall(SYS_STATMOUNT, request, answer, ctypes.c_size_t(len(answer)), ctypes.c_uint(0)) != 0:
        return None
    mask = struct.unpack_from("=Q", answer.raw, 8)[0]
    if not mask & STATMOUNT_MNT_BASIC:
        return None
    return struct.unpack_from("=I", answer.raw, 56)[0]


def join_name(folder: bytes, name: bytes | None) -> bytes:
    if not name or name == b".":
        return folder
    return folder.rstrip(b"/") + b"/" + name if folder != b"/" else b"/" + name


def fsid_of(libc, fd: int) -> bytes | None:
    """The filesystem id fanotify reports for the filesystem holding ``fd`` (``statfs``'s f_fsid)."""
    if struct.calcsize("l") != 8:
        return None  # the layout below is the 64-bit one
    buf = ctypes.create_string_buffer(120)
    if libc.fstatfs(fd, buf) != 0:
        return None
    return buf.raw[56:64]  # f_type, f_bsize (long), five 64-bit counts, then f_fsid


class HandleResolver:
    """File handles to paths, through a folder of each marked filesystem (``open_by_handle_at``
    needs ``CAP_DAC_READ_SEARCH``). Folders are cached; :meth:`forget_folders` after a folder moves.

    No descriptor is kept open on a filesystem: one would keep it busy, and the customer could not
    unmount a USB stick during a session. The mount point is opened for each lookup that misses the
    cache, and checked to still be that filesystem."""

    def __init__(self, libc=None, *, cache: int = 8192):
        self._libc = libc or _libc()
        self._mounts: dict[bytes, bytes] = {}  # fsid -> a mount point of it
        self._folders: OrderedDict[bytes, bytes] = OrderedDict()  # fsid + file_handle -> path
        self._max = cache
        self.failures = 0

    def add(self, mountpoint: bytes) -> bytes | None:
        """Remember a filesystem by one of its folders; returns its fsid (None if it has none)."""
        fsid = self.fsid_of(mountpoint)
        if fsid is not None and fsid not in self._mounts:
            self._mounts[fsid] = mountpoint
        return fsid

    def fsid_of(self, path: bytes) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return fsid_of(self._libc, fd)
        finally:
            os.close(fd)

    def knows(self, fsid: bytes) -> bool:
        return fsid in self._mounts

    def path(self, info: FidInfo) -> bytes | None:
        """The path of the object an info record names, joined with its name for ``*_NAME`` kinds."""
        folder = self.folder(info.fsid, info.handle_type, info.handle)
        if folder is None:
            return None
        return join_name(folder, info.name) if info.kind in _NAMED_INFO else folder

    def folder(self, fsid: bytes, handle_type: int, handle: bytes) -> bytes | None:
        return self.folder_raw(fsid + _HANDLE_HEADER.pack(len(handle), handle_type) + handle)

    def folder_raw(self, raw: bytes) -> bytes | None:
        """The folder named by ``raw``: an fsid (8 bytes) and a ``struct file_handle``, as an event
        record carries them (so the hot path slices one key out of the buffer and looks it up)."""
        path = self._folders.get(raw)
        if path is not None:
            return path
        if len(raw) < 8 + _HANDLE_HEADER.size:
            return None
        handle_bytes, handle_type = _HANDLE_HEADER.unpack_from(raw, 8)
        path = self._open(raw[:8], handle_type, raw[8 + _HANDLE_HEADER.size:8 + _HANDLE_HEADER.size + handle_bytes])
        if path is not None:
            self._folders[raw] = path
            if len(self._folders) > self._max:
                self._folders.popitem(last=False)
        return path

    def _open(self, fsid: bytes, handle_type: int, handle: bytes) -> bytes | None:
        mountpoint = self._mounts.get(fsid)
        if mountpoint is None:
            self.failures += 1
            return None
        try:
            mount_fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self.failures += 1
            return None
        try:
            if fsid_of(self._libc, mount_fd) != fsid:  # unmounted, or another filesystem mounted over it
                self.failures += 1
                return None
            raw = _HANDLE_HEADER.pack(len(handle), handle_type) + handle
            fd = self._libc.open_by_handle_at(mount_fd, raw, O_PATH | os.O_CLOEXEC)
        finally:
            os.close(mount_fd)
        if fd < 0:
            self.failures += 1
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:
            self.failures += 1
            return None
        finally:
            os.close(fd)
        if path.endswith(b" (deleted)") or not path.startswith(b"/"):
            return None
        return path

    def forget_folders(self) -> None:
        self._folders.clear()

    def close(self) -> None:
        self._mounts.clear()
        self._folders.clear()


class FanotifyGroup:
    """One fanotify group (an fd) and its marks. ``read()`` returns what is queued (b"" if nothing)."""

    def __init__(self, flags: int, *, event_flags: int = os.O_RDONLY | getattr(os, "O_LARGEFILE", 0)):
        if not sys.platform.startswith("linux"):
            raise FanotifyUnavailable("fanotify exists only on Linux.")
        if os.geteuid() != 0:
            raise FanotifyUnavailable("fanotify needs root.")
        self.libc = _libc()
        fd = self.libc.fanotify_init(flags | FAN_CLOEXEC | FAN_NONBLOCK, event_flags)
        if fd < 0:
            raise FanotifyUnavailable(f"the kernel refused fanotify: {os.strerror(ctypes.get_errno())}.")
        self.fd = fd
        self._buf = bytearray(READ_SIZE)

    def mark(self, path: bytes, mask: int, *, how: int = FAN_MARK_FILESYSTEM, remove: bool = False) -> None:
        action = FAN_MARK_REMOVE if remove else FAN_MARK_ADD
        if self.libc.fanotify_mark(self.fd, action | how, mask, AT_FDCWD, path) != 0:
            err = ctypes.get_errno()
            why = {errno.ENODEV: "it has no filesystem id", errno.EOPNOTSUPP: "it cannot report file handles",
                   errno.EXDEV: "it is a subvolume or an idmapped mount"}.get(err, os.strerror(err))
            raise FanotifyUnavailable(f"the kernel refused to watch {os.fsdecode(path)!r}: {why}.")

    def ignore(self, path: bytes, mask: int) -> bool:
        """Stop reporting ``mask`` on one file (an inode mark's ignore mask, kept across writes)."""
        flags = FAN_MARK_ADD | FAN_MARK_INODE | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY
        return self.libc.fanotify_mark(self.fd, flags, mask, AT_FDCWD, path) == 0

    def read(self) -> bytes:
        try:
            n = os.readv(self.fd, [self._buf])
        except BlockingIOError:
            return b""
        return bytes(self._buf[:n])

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class GuessAttributor:
    """Without fanotify: the newest process of the session alive around the change, the technician's
    first, labelled as a guess (``how = "guess"``). ``recent`` gives the candidates, newest first
    (:meth:`agent.capture.lineage.Lineage.recent`)."""

    how = "guess"

    def __init__(self, recent):
        self._recent = recent

    def attribute(self, path: bytes) -> dict | None:
        candidates = self._recent() if self._recent is not None else []
        if not candidates:
            return None
        best = next((p for p in candidates if p.get("technician")), candidates[0])
        return {"pid": best["pid"], "exe": best.get("exe"), "user": best.get("user"), "how": self.how,
                "technician": bool(best.get("technician")), "label": best.get("label")}

    def close(self) -> None:
        pass
