"""``/proc/self/mountinfo``, parsed (a pure function, tested with hypothesis), and which mounts hold files.

A line (``proc(5)``)::

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    id parent major:minor root mountpoint options [optional fields…] - fstype source super-options

Paths escape space, tab, newline and backslash as ``\\040``-style octal.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# Filesystems that hold no files a person keeps: kernel interfaces, not storage. Writes there are
# not recorded by the filesystem-wide capture (and most refuse fanotify's file handles anyway).
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs",
    "pstore", "bpf", "configfs", "fusectl", "autofs", "binfmt_misc", "nsfs", "rpc_pipefs", "hugetlbfs",
    "selinuxfs", "efivarfs", "devtmpfs", "nfsd", "fuse.gvfsd-fuse", "fuse.portal",
})

_OCTAL = re.compile(rb"\\([0-7]{3})")


class Mount(NamedTuple):
    mount_id: int
    parent_id: int
    dev: str  # "major:minor"
    root: bytes  # the folder of the filesystem mounted here ("/" unless a bind mount of a subfolder)
    mountpoint: bytes
    options: str
    fstype: str
    source: bytes
    super_options: str

    def describe(self) -> dict:
        """The mount for a record (paths as text, undecodable bytes escaped)."""
        return {
            "mount_id": self.mount_id,
            "mountpoint": self.mountpoint.decode("utf-8", "backslashreplace"),
            "root": self.root.decode("utf-8", "backslashreplace"),
            "fstype": self.fstype,
            "source": self.source.decode("utf-8", "backslashreplace"),
            "options": self.options,
            "dev": self.dev,
        }


def unescape(field: bytes) -> bytes:
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), field)


def escape(path: bytes) -> bytes:
    """The inverse of :func:`unescape` for what the kernel escapes (tests use it)."""
    out = bytearray()
    for byte in path:
        if byte in (0x20, 0x09, 0x0A, 0x5C):
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out)


def parse_line(line: bytes) -> Mount:
    """One line; ValueError if it is not a mountinfo line."""
    fields = line.rstrip(b"\n").split(b" ")
    try:
        sep = fields.index(b"-", 6)
    except ValueError:
        raise ValueError("a mountinfo line without its ' - ' separator") from None
    if len(fields) < sep + 3 or sep < 6:
        raise ValueError("a mountinfo line with too few fields")
    return Mount(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        dev=fields[2].decode("ascii"),
        root=unescape(fields[3]),
        mountpoint=unescape(fields[4]),
        options=fields[5].decode("ascii", "replace"),
        fstype=fields[sep + 1].decode("utf-8", "replace"),
        source=unescape(fields[sep + 2]),
        super_options=b" ".join(fields[sep + 3:]).decode("utf-8", "replace"),
    )


def parse_mountinfo(data: bytes) -> dict[int, Mount]:
    """Every mount by its id; lines that do not parse are skipped (never a crash)."""
    mounts: dict[int, Mount] = {}
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            mount = parse_line(line)
        except (ValueError, UnicodeDecodeError):
            continue
        mounts[mount.mount_id] = mount
    return mounts


def read_mountinfo(path: str = "/proc/self/mountinfo") -> dict[int, Mount]:
    with open(path, "rb") as f:
        return parse_mountinfo(f.read())


def storage_mounts(mounts: dict[int, Mount]) -> list[Mount]:
    """One mount per filesystem that holds files (by device), preferring the mount of its root
    folder (so a path found through it is the filesystem's own path), then the shortest mountpoint."""
    best: dict[str, Mount] = {}
    for mount in mounts.values():
        if mount.fstype in PSEUDO_FILESYSTEMS:
            continue
        current = best.get(mount.dev)
        rank = (mount.root != b"/", len(mount.mountpoint))
        if current is None or rank < (current.root != b"/", len(current.mountpoint)):
            best[mount.dev] = mount
    return sorted(best.values(), key=lambda m: m.mountpoint)
