"""Collectors that work on every OS (through psutil, or ``/proc`` where there is one).

``listening``: TCP ports listening and UDP ports bound. ``remote_access``:
remote-access tools running (by program name, whatever their connections:
a tool that starts during a session is a way back in whether or not it is
connected yet). The technician's own SSH login is not one of them (it is
the session), and a new ``sshd`` listening shows as a port.
"""

from __future__ import annotations

import functools
import os
import socket

import psutil

from agent.capture.inventory import procfs
from agent.capture.inventory.listening import listening_items
from agent.capture.inventory.types import Categories, Category, Items, error_entry
from agent.capture.remote_access import KNOWN_TOOLS, SSH

PROC = "/proc"
LISTENING_POLL_S = 1.0
REMOTE_ACCESS_POLL_S = 1.5


def collect_listening(net_connections=psutil.net_connections) -> Items:
    """TCP ports listening and UDP ports bound, with the owning process's name where we may see it."""
    try:
        conns = net_connections(kind="inet")
    except (psutil.Error, OSError) as exc:
        return dict([error_entry("sockets", f"the sockets could not be listed: {exc}")])
    names: dict[int, str | None] = {}

    def name_of(pid: int | None) -> str | None:
        if pid is None:
            return None
        if pid not in names:
            try:
                names[pid] = psutil.Process(pid).name()
            except (psutil.Error, OSError):
                names[pid] = None
        return names[pid]

    sockets = []
    for c in conns:
        if not c.laddr:
            continue
        if c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN:
            proto = "tcp"
        elif c.type == socket.SOCK_DGRAM and not c.raddr:
            proto = "udp"
        else:
            continue
        sockets.append((proto, c.laddr[0], c.laddr[1], name_of(c.pid)))
    return listening_items(sockets)


def listening_fingerprint() -> object:
    """What changes when a port opens or closes: ``/proc/net`` where readable, else the full list."""
    found = procfs.listening_fingerprint(PROC)
    return found if found is not None else sorted(collect_listening())


_TOOLS = tuple(t for t in KNOWN_TOOLS if t.name != SSH)


@functools.lru_cache(maxsize=4096)  # the same few hundred program names, polled again and again
def tool_of(name: str) -> str | None:
    """The remote-access tool a program name belongs to (lower-cased, without ``.exe``), or None."""
    base = name.lower()
    base = base.removesuffix(".exe")
    return next((t.name for t in _TOOLS if t.matches([base])), None)


def _programs() -> dict[int, str]:
    programs = procfs.running_programs(PROC)
    if programs is not None:
        return programs
    found = {}
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.info.get("name"):
            found[proc.info["pid"]] = proc.info["name"]
    return found


def _user_of(pid: int) -> str | None:
    try:
        return psutil.Process(pid).username()
    except (psutil.Error, OSError, KeyError):
        return None


def remote_access_fingerprint() -> frozenset[tuple[int, str]]:
    """(pid, program) of every remote-access tool running now: cheap (names only)."""
    return frozenset((pid, name) for pid, name in _programs().items() if tool_of(name))


def collect_remote_access() -> Items:
    """``"AnyDesk: anydesk (root)"`` -> tool, process, user: one item per tool, program and user."""
    items: Items = {}
    try:
        running = remote_access_fingerprint()
    except (psutil.Error, OSError) as exc:
        return dict([error_entry("processes", f"the processes could not be listed: {exc}")])
    for pid, name in sorted(running):
        user = _user_of(pid)
        if user is None and not os.path.exists(f"{PROC}/{pid}") and os.path.isdir(PROC):
            continue  # ended meanwhile
        tool = tool_of(name)
        items[f"{tool}: {name} ({user or 'unknown user'})"] = {
            "source": "processes", "tool": tool, "process": name, "user": user,
        }
    return items


def portable_categories() -> Categories:
    """What every OS has: polled, no files to watch. They look at this machine's kernel, whatever
    root the other collectors read."""
    return {
        "listening": Category("listening", collect_listening, fingerprint=listening_fingerprint,
                              poll_s=LISTENING_POLL_S),
        "remote_access": Category("remote_access", collect_remote_access, fingerprint=remote_access_fingerprint,
                                  poll_s=REMOTE_ACCESS_POLL_S),
    }
