"""Files replaced all at once: a reader sees the old file or the new one, never half of either.

The new content goes to a temporary file beside the target (``O_NOFOLLOW``, created with the given
mode, so a secret is never readable by others, not even for a moment), which is fsynced and renamed
over the target; then the folder is fsynced so that the rename survives a crash. On any error the
temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike[str], mode: int | None = 0o600, *, durable: bool = True) -> Iterator[int]:
    """Yield the descriptor of a new file that, when the block ends without an error, replaces ``path``.

    ``mode`` None: what the user's umask gives a new file (for what a command writes where the user asked).
    ``durable=False``: no fsync of the file or its folder, for output that can be made again (a review
    writes 10,000 reports; a crash leaves each old or new, never half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # whatever the umask, and a stale temporary file's mode
        yield fd
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        sync_folder(path.parent)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int | None = 0o600, *,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once (see the module's docstring and ``replacing``)."""
    with replacing(path, mode, durable=durable) as fd:
        write_all(fd, data)


def sync_folder(folder: str | os.PathLike[str]) -> None:
    """fsync a folder, so that a rename in it survives a crash; a folder that cannot be opened is skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse to sync a folder; the rename itself has happened
    finally:
        os.close(fd)
