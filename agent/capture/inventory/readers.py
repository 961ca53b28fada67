"""Reading sources for the collectors: commands with a time limit, files with a size limit.

Failures raise :class:`SourceError` with one sentence; a source that simply
is not there (a file, a program) is ``None`` or empty, not an error.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

COMMAND_TIMEOUT_S = 30.0
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DIR_ENTRIES = 10_000


class SourceError(Exception):
    """A source that exists but could not be read; ``str()`` is the sentence to record."""


def have(program: str) -> bool:
    return shutil.which(program) is not None


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT_S, ok: tuple[int, ...] = (0,),
        silent_ok: bool = False) -> str:
    """The standard output of a command (C locale), or SourceError when its exit status is not in ``ok``.

    ``silent_ok``: any exit status with no output at all, on stdout or stderr, is an empty answer
    (systemctl exits 1 when it lists no units)."""
    env = {**os.environ, "LC_ALL": "C", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"{argv[0]} took longer than {timeout:g} s") from exc
    except OSError as exc:
        raise SourceError(f"{argv[0]} could not be started: {exc.strerror or exc}") from exc
    if silent_ok and not done.stdout.strip() and not done.stderr.strip():
        return ""
    if done.returncode not in ok:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SourceError(f"{argv[0]} exited with status {done.returncode}" + (f": {err[0][:200]}" if err else ""))
    return done.stdout.decode("utf-8", "replace")


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str | None:
    """A regular file's text (UTF-8, bad bytes replaced); None when it does not exist."""
    data = read_bytes(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def read_bytes(path: str, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """A regular file's bytes; None when it does not exist. Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise SourceError(f"{path} could not be read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SourceError(f"{path} is larger than {limit // 1024} KiB")
    return data


def list_dir(path: str) -> list[str]:
    """Sorted entry names of a folder; empty when it does not exist."""
    try:
        with os.scandir(path) as it:
            names = []
            for entry in it:
                names.append(entry.name)
                if len(names) > MAX_DIR_ENTRIES:
                    raise SourceError(f"{path} has more than {MAX_DIR_ENTRIES} entries")
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise SourceError(f"{path} could not be listed: {exc.strerror or exc}") from exc
    return sorted(names)
