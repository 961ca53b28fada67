"""Reading one process from ``/proc``: pure parsers for its files, and small readers around them.

Every reader returns None (or an empty value) when the process is gone or
unreadable: processes vanish between any two reads, and a reader that raises
would stop whoever called it. Start times are clock ticks since boot, as
``/proc/<pid>/stat`` gives them (field 22): with the pid, they name one
process for good, since a pid is reused but never at the same tick.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
UNSET_ID = 4294967295  # /proc/<pid>/loginuid and sessionid before a login sets them
MAX_CMDLINE = 32 * 1024


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of ``/proc/<pid>/stat`` the lineage needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    sid: int
    start_ticks: int


def parse_stat(text: str) -> Stat:
    """``/proc/<pid>/stat``. The name sits in parentheses and may itself hold spaces and
    parentheses, so the fields after it are found from the *last* ``)``. ValueError if malformed."""
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at < 1 or close_at < open_at:
        raise ValueError("not a /proc stat line")
    pid = int(text[:open_at])
    rest = text[close_at + 1:].split()
    if len(rest) < 20:
        raise ValueError("a /proc stat line with too few fields")
    # rest[0] is field 3 (state); field n is rest[n - 3]
    return Stat(pid=pid, comm=text[open_at + 1:close_at], state=rest[0], ppid=int(rest[1]),
                sid=int(rest[3]), start_ticks=int(rest[19]))


def parse_status_ids(text: str) -> tuple[int, int] | None:
    """(real uid, effective uid) from ``/proc/<pid>/status``."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            parts = line.split()
            if len(parts) >= 3:
                return int(parts[1]), int(parts[2])
    return None


def parse_cmdline(raw: bytes) -> list[str]:
    """The argument vector from ``/proc/<pid>/cmdline`` (NUL-separated; undecodable bytes escaped)."""
    if not raw:
        return []
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [os.fsdecode(part) for part in raw.split(b"\0")]


_UNIT = re.compile(r"([^/]+\.(?:service|scope|slice|socket|mount|timer|path|swap|target))(?=/|$)")


def unit_of_cgroup(text: str) -> str | None:
    """The systemd unit a process runs in, from ``/proc/<pid>/cgroup``: the deepest unit name of
    the cgroup v2 line (``0::/system.slice/foo.service``), else of the ``name=systemd`` v1 line.
    Slices are containers, not units that run things, so they are skipped. None if there is none."""
    lines = text.splitlines()
    chosen = next((line for line in lines if line.startswith("0::")), None)
    if chosen is None or chosen.strip() == "0::/":
        chosen = next((line for line in lines if ":name=systemd:" in line), chosen)
    if chosen is None:
        return None
    path = chosen.split(":", 2)[-1]
    units = [u for u in _UNIT.findall(path) if not u.endswith(".slice")]
    return units[-1] if units else None


def _read(path: str, limit: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_stat(pid: int) -> Stat | None:
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    try:
        return parse_stat(raw.decode("utf-8", "replace"))
    except ValueError:
        return None


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), the second half of its identity."""
    stat = read_stat(pid)
    return stat.start_ticks if stat else None


def read_cmdline(pid: int) -> list[str] | None:
    raw = _read(f"/proc/{pid}/cmdline", MAX_CMDLINE)
    return None if raw is None else parse_cmdline(raw)


def read_exe(pid: int) -> str | None:
    try:
        return os.fsdecode(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def read_ids(pid: int) -> tuple[int, int] | None:
    raw = _read(f"/proc/{pid}/status", 8192)
    return parse_status_ids(raw.decode("utf-8", "replace")) if raw else None


def read_audit_session(pid: int) -> tuple[int | None, int | None]:
    """(loginuid, sessionid), each None when unset (no login set it) or unreadable."""
    values = []
    for name in ("loginuid", "sessionid"):
        raw = _read(f"/proc/{pid}/{name}", 32)
        try:
            value = int(raw) if raw else None
        except ValueError:
            value = None
        values.append(None if value == UNSET_ID else value)
    return values[0], values[1]


def read_unit(pid: int) -> str | None:
    raw = _read(f"/proc/{pid}/cgroup", 8192)
    return unit_of_cgroup(raw.decode("utf-8", "replace")) if raw else None


def list_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def boot_offset_ns() -> int:
    """CLOCK_BOOTTIME minus CLOCK_MONOTONIC now: the time the machine spent suspended."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()


def ticks_from_monotonic_ns(monotonic_ns: int, offset_ns: int) -> int:
    """A CLOCK_MONOTONIC time (a proc-connector timestamp) as ``/proc`` start ticks."""
    return (monotonic_ns + offset_ns) * CLK_TCK // 1_000_000_000


def monotonic_ns_from_ticks(ticks: int, offset_ns: int) -> int:
    return ticks * 1_000_000_000 // CLK_TCK - offset_ns


def wall_from_monotonic_ns(monotonic_ns: int) -> float:
    """A CLOCK_MONOTONIC time as a Unix time (for records)."""
    return (time.time_ns() - time.monotonic_ns() + monotonic_ns) / 1e9


def ancestors(pid: int) -> set[int]:
    """The processes above ``pid`` now (its parent, their parent, …)."""
    found: set[int] = set()
    while pid > 1 and len(found) < 64:
        stat = read_stat(pid)
        if stat is None or stat.ppid in found:
            break
        pid = stat.ppid
        found.add(pid)
    return found
