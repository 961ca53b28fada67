"""The ``admin`` capability for a non-root account: sudo for the session, and not a second longer.

When the customer grants ``admin`` to a technician who logs in to an account
other than root, the agent writes ``/etc/sudoers.d/chaperone-<session>``
(``<user> ALL=(ALL:ALL) NOPASSWD: ALL``: the technician does not know the
account's password), checked by ``visudo -c`` before it is moved into place,
and removes it when the session ends and when the agent starts (recovery,
a crash, a kill). Without ``admin``, nothing is written: an account that holds
sudo rights of its own keeps them, which the consent dialog says.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

SUDOERS_D = Path("/etc/sudoers.d")
PREFIX = "chaperone-"
_SAFE_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # sudo skips names with a dot: keep them out


class SudoError(Exception):
    """sudo could not be given or taken back; ``str`` says why."""


def drop_in_path(session_id: str, folder: Path = SUDOERS_D) -> Path:
    if not _SAFE_ID.match(session_id):
        raise SudoError(f"the session id {session_id!r} cannot name a sudoers file")
    return folder / f"{PREFIX}{session_id}"


def _owner_line(home: str) -> str:
    return f"# Chaperone home: {home}\n"


def grant(user: str, session_id: str, until: str, home: str, folder: Path = SUDOERS_D,
          visudo: str | None = None) -> Path:
    """Give ``user`` sudo for the session of the agent of ``home``; the drop-in's path. ``SudoError`` if it
    cannot be done safely."""
    if not _SAFE_USER.match(user) or user == "root":
        raise SudoError(f"the account {user!r} cannot be given sudo this way")
    checker = visudo or shutil.which("visudo") or "/usr/sbin/visudo"
    if not os.path.exists(checker):
        raise SudoError("sudo is not installed (no visudo), so admin rights cannot be given")
    if not folder.is_dir():
        raise SudoError(f"{folder} does not exist, so sudo would not read a drop-in")
    path = drop_in_path(session_id, folder)
    text = (f"# Chaperone session {session_id}: {user} may use sudo until {until}.\n"
            f"{_owner_line(home)}"
            f"# Removed when the session ends; do not edit.\n"
            f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    temp = folder / f".{PREFIX}{session_id}.new"  # a dotted name: sudo ignores it while it is checked
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o440)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    check = subprocess.run([checker, "-c", "-q", "-f", str(temp)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        temp.unlink(missing_ok=True)
        raise SudoError(f"visudo refused the drop-in: {(check.stderr or check.stdout).strip()[:200]}")
    os.replace(temp, path)
    return path


def revoke(session_id: str, folder: Path = SUDOERS_D) -> bool:
    """Take the session's sudo back; whether there was a drop-in to remove."""
    path = drop_in_path(session_id, folder)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def revoke_all_but(live: set[str], home: str, folder: Path = SUDOERS_D) -> list[str]:
    """Remove the drop-ins that the agent of ``home`` left for sessions not in ``live`` (after a crash or a
    kill); the sessions they were for. Another agent's drop-ins (another home) are left alone."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if name.startswith(PREFIX) and name[len(PREFIX):] not in live and _owned_by(folder / name, home):
            try:
                (folder / name).unlink()
                removed.append(name[len(PREFIX):])
            except OSError:
                pass
    return removed


def _owned_by(path: Path, home: str) -> bool:
    try:
        with open(path, encoding="ascii", errors="replace") as text:
            return _owner_line(home) in text.read(4096)
    except OSError:
        return False
