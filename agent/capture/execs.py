"""The program each exec ran, even when the process is gone before ``/proc/<pid>/exe`` can be read.

The proc connector says *that* a process exec'd, not *what*: a 1 ms process
(``/bin/true``, ``chmod``) has often exited before the lineage reads
``/proc``. fanotify's ``FAN_OPEN_EXEC`` is queued by the kernel when the
exec opens the program, with the pid, so the name survives the process.
One exec opens the program, then its ELF interpreter (``ld-linux…``), and
for a script the script, then its ``#!`` interpreter: :class:`ExecOpens`
keeps each pid's opens in order and gives an exec the first program of its
group (:func:`take_program`, pure).
"""

from __future__ import annotations

import glob
import os
import struct
from collections import deque

from agent.capture.fanotify import (
    FAN_CLASS_NOTIF,
    FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_OPEN_EXEC,
    FAN_Q_OVERFLOW,
    FAN_REPORT_DFID_NAME,
    FanotifyGroup,
    FanotifyUnavailable,
    HandleResolver,
    join_name,
)
from agent.capture.mountinfo import Mount, read_mountinfo, storage_mounts

MAX_PENDING_PIDS = 65_536
_META = struct.Struct("=IBBHQii")
_INFO = struct.Struct("=BBH")
_U32 = struct.Struct("=I")


INTERPRETER_GLOBS = ("/lib*/ld-*.so*", "/lib/*/ld-*.so*", "/usr/lib*/ld-*.so*", "/usr/lib/*/ld-*.so*",
                     "/lib/ld-musl-*", "/usr/lib/ld-musl-*")


def elf_interpreters() -> set[bytes]:
    """The dynamic loaders installed here (every dynamically linked exec opens one)."""
    found = set()
    for pattern in INTERPRETER_GLOBS:
        for path in glob.glob(pattern):
            real = os.path.realpath(path)
            if os.path.isfile(real):
                found.add(os.fsencode(real))
    return found


def is_elf_interpreter(path: bytes) -> bool:
    base = os.path.basename(path)
    return base.startswith((b"ld-linux", b"ld-musl", b"ld.so", b"ld64.so"))


_SCRIPTS: dict[bytes, bool] = {}


def _is_script(path: bytes) -> bool:
    """Whether a program starts with ``#!`` (remembered per path: programs rarely change kind)."""
    known = _SCRIPTS.get(path)
    if known is not None:
        return known
    try:
        with open(path, "rb") as f:
            known = f.read(2) == b"#!"
    except OSError:
        known = False
    if len(_SCRIPTS) > 4096:
        _SCRIPTS.clear()
    _SCRIPTS[path] = known
    return known


def take_program(opens: deque[bytes], is_script=_is_script) -> bytes | None:
    """Consume the opens of one exec from the front of ``opens`` and return its program: the first
    open, after which its ELF interpreter and, for a script, the ``#!`` interpreter (and its ELF
    interpreter) belong to the same exec."""
    while opens and is_elf_interpreter(opens[0]):
        opens.popleft()  # left over from an exec whose program was already taken
    if not opens:
        return None
    program = opens.popleft()
    if is_script(program) and opens and not is_elf_interpreter(opens[0]):
        opens.popleft()  # the script's interpreter
    while opens and is_elf_interpreter(opens[0]):
        opens.popleft()
    return program


def exec_opens(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """``(pid, folder key, name)`` for each ``FAN_OPEN_EXEC`` in a buffer from a ``DFID_NAME`` group,
    where the key is the fsid and ``struct file_handle`` as :meth:`HandleResolver.folder_raw` takes
    them; an overflow is ``(-1, b"", b"")``. A hand-rolled walk of what
    :func:`agent.capture.fanotify.parse_fid_events` reads (it runs for every exec on the machine;
    the tests hold the two to the same answers)."""
    out = []
    size = len(data)
    offset = 0
    while offset + _META.size <= size:
        event_len, _v, _r, meta_len, mask, _fd, pid = _META.unpack_from(data, offset)
        end = offset + event_len
        if event_len < _META.size or meta_len < _META.size or end > size:
            break
        if mask & FAN_Q_OVERFLOW:
            out.append((-1, b"", b""))
        elif mask & FAN_OPEN_EXEC and offset + meta_len + 20 <= end:
            at = offset + meta_len
            kind, _pad, length = _INFO.unpack_from(data, at)
            if kind == FAN_EVENT_INFO_TYPE_DFID_NAME and length >= 20 and at + length <= end:
                key_end = at + 20 + _U32.unpack_from(data, at + 12)[0]
                if key_end <= at + length:
                    out.append((pid, data[at + 4:key_end], data[key_end:at + length].split(b"\0", 1)[0]))
        offset = end
    return out


class ExecOpens:
    """A fanotify group reporting ``FAN_OPEN_EXEC`` on every filesystem that holds programs."""

    def __init__(self) -> None:
        self._group = FanotifyGroup(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME)
        self._resolver = HandleResolver(self._group.libc)
        self.unmarked: list[str] = []
        self._devs: set[str] = set()
        for mount in storage_mounts(read_mountinfo()):
            if "noexec" not in mount.options.split(","):
                self.add_filesystem(mount)
        marked = len(self._devs)
        if not marked:
            self.close()
            raise FanotifyUnavailable("no filesystem could be watched for execs.")
        for interpreter in elf_interpreters():  # half the events otherwise, and nothing to learn from them
            self._group.ignore(interpreter, FAN_OPEN_EXEC)
        self._pending: dict[int, deque[bytes]] = {}
        self.overflows = 0

    def fileno(self) -> int:
        return self._group.fileno()

    def add_filesystem(self, mount: Mount) -> None:
        """Watch execs from one more filesystem (not one already watched: see WriteRecorder.on_mount)."""
        if mount.dev in self._devs:
            return
        try:
            self._group.mark(mount.mountpoint, FAN_OPEN_EXEC)
            self._resolver.add(mount.mountpoint)
            self._devs.add(mount.dev)
        except FanotifyUnavailable as exc:
            self.unmarked.append(str(exc))

    def drain(self) -> None:
        """Read what the kernel queued into the per-pid lists."""
        pending = self._pending
        folder_of = self._resolver.folder_raw
        while True:
            data = self._group.read()
            if not data:
                return
            for pid, key, name in exec_opens(data):
                if pid < 0:
                    self.overflows += 1
                    pending.clear()  # which open belongs to which exec is lost: start afresh
                    continue
                folder = folder_of(key)
                if folder is None:
                    continue
                queue = pending.get(pid)
                if queue is None:
                    if len(pending) >= MAX_PENDING_PIDS:
                        pending.clear()
                    queue = pending[pid] = deque(maxlen=64)
                queue.append(join_name(folder, name))

    def take(self, pid: int) -> str | None:
        """The program of ``pid``'s next exec not yet accounted for. Call :meth:`drain` after reading
        the exec events and before applying them: an exec's opens are queued before its event."""
        queue = self._pending.get(pid)
        if not queue:
            return None
        program = take_program(queue)
        return os.fsdecode(program) if program is not None else None

    def discard(self) -> None:
        """Drop what was queued while nobody listened (it cannot be matched to execs any more)."""
        self.drain()
        self._pending.clear()

    def forget(self, pid: int) -> None:
        self._pending.pop(pid, None)

    def close(self) -> None:
        self._resolver.close()
        self._group.close()
