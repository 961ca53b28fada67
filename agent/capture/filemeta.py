"""A file's metadata (mode, owner, ACL, capabilities), what changed, and which changes are a way back in.

Pure functions except :func:`read_metadata`. The rules (:func:`way_back_in`):

- a regular file that becomes setuid or setgid (a program that runs as its
  owner or group, whoever starts it);
- a file or folder that becomes writable by everyone (anyone can then plant
  or change a program or a configuration; a folder with the sticky bit still
  lets anyone add files, so it counts too, and the reason says so);
- file capabilities set on a program (``security.capability``, e.g.
  ``cap_setuid+ep`` on an interpreter: root powers without setuid);
- an ACL entry that gives a named user or group write access.

"Becomes" means: not so before. When the before is unknown (the first event
about a file is the change itself), a file that is so after counts, and the
record says the before was unknown.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import struct

from agent.capture.hashing import kind_of

ACL_XATTR = "system.posix_acl_access"
CAPS_XATTR = "security.capability"
_ACL_TAGS = {0x01: "user", 0x02: "user", 0x04: "group", 0x08: "group", 0x10: "mask", 0x20: "other"}
_ACL_NAMED = (0x02, 0x08)
_ACL_ENTRY = struct.Struct("<HHI")


def parse_posix_acl(raw: bytes) -> list[str]:
    """``system.posix_acl_access`` (version 2, then 8-byte entries) as ``getfacl``-style entries:
    ``user::rwx``, ``user:1000:rw-``, ``group::r-x``, ``mask::rwx``, ``other::r--``.
    ValueError if it is not such a value."""
    if len(raw) < 4 or struct.unpack_from("<I", raw)[0] != 2 or (len(raw) - 4) % _ACL_ENTRY.size:
        raise ValueError("not a POSIX ACL")
    entries = []
    for offset in range(4, len(raw), _ACL_ENTRY.size):
        tag, perm, ident = _ACL_ENTRY.unpack_from(raw, offset)
        if tag not in _ACL_TAGS:
            raise ValueError("an unknown ACL tag")
        who = str(ident) if tag in _ACL_NAMED else ""
        rights = "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))
        entries.append(f"{_ACL_TAGS[tag]}:{who}:{rights}")
    return entries


def _name(lookup, ident: int) -> str | None:
    try:
        return lookup(ident)[0]
    except (KeyError, OverflowError):
        return None


def metadata_of(st: os.stat_result, acl: list[str] | None = None, capabilities: str | None = None) -> dict:
    """What a record keeps of a file's metadata."""
    return {
        "mode": format(stat.S_IMODE(st.st_mode), "04o"),
        "kind": kind_of(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "acl": acl,
        "capabilities": capabilities,
    }


def read_metadata(path: bytes) -> dict | None:
    """The metadata of ``path`` now (not following a symlink); None if it is gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    acl = caps = None
    if not stat.S_ISLNK(st.st_mode):
        try:
            acl = parse_posix_acl(os.getxattr(path, ACL_XATTR, follow_symlinks=False))
        except (OSError, ValueError):
            acl = None
        if stat.S_ISREG(st.st_mode):
            try:
                caps = os.getxattr(path, CAPS_XATTR, follow_symlinks=False).hex()
            except OSError:
                caps = None
    return metadata_of(st, acl, caps)


def changed(before: dict | None, after: dict | None) -> list[str]:
    """Which of mode, owner, group, acl, capabilities differ (all that are set, when before is unknown)."""
    keys = (("mode", "mode"), ("owner", "uid"), ("group", "gid"), ("acl", "acl"), ("capabilities", "capabilities"))
    if before is None or after is None:
        return [name for name, key in keys if after and after.get(key) not in (None, [])] if after else []
    return [name for name, key in keys if before.get(key) != after.get(key)]


def _mode(meta: dict | None) -> int | None:
    return int(meta["mode"], 8) if meta and meta.get("mode") is not None else None


def way_back_in(before: dict | None, after: dict | None) -> str | None:
    """Why this change gives someone a way back in, or None (see the module docstring)."""
    if not after or after.get("kind") == "symlink":
        return None
    now, was = _mode(after), _mode(before)
    unknown = " (its mode before is unknown)" if before is None else ""
    reasons = []
    if after.get("kind") == "file" and now is not None:
        owner = after.get("user") or after.get("uid")
        if now & stat.S_ISUID and not (was is not None and was & stat.S_ISUID):
            reasons.append(f"it is now setuid: it runs as {owner} whoever starts it{unknown}")
        if now & stat.S_ISGID and not (was is not None and was & stat.S_ISGID):
            group = after.get("group") or after.get("gid")
            reasons.append(f"it is now setgid: it runs with group {group} whoever starts it{unknown}")
    if now is not None and now & stat.S_IWOTH and not (was is not None and was & stat.S_IWOTH):
        what = "folder" if after.get("kind") == "dir" else "file"
        sticky = " (sticky: anyone can still add files)" if after.get("kind") == "dir" and now & stat.S_ISVTX else ""
        reasons.append(f"the {what} is now writable by everyone{sticky}{unknown}")
    if after.get("capabilities") and after.get("capabilities") != (before or {}).get("capabilities"):
        reasons.append("the program now has file capabilities (root powers without setuid)")
    granted = _acl_writers(after.get("acl")) - _acl_writers((before or {}).get("acl"))
    if granted:
        reasons.append("an ACL now lets " + ", ".join(sorted(granted)) + " write to it")
    return "; ".join(reasons) if reasons else None


def _acl_writers(acl: list[str] | None) -> set[str]:
    out = set()
    for entry in acl or []:
        kind, who, rights = entry.split(":")
        if who and "w" in rights:
            out.add(f"{kind} {who}")
    return out
