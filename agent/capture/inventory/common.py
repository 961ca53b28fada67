"""Collectors that work on every OS (through psutil)."""

from __future__ import annotations

import socket

import psutil

from agent.capture.inventory.listening import listening_items
from agent.capture.inventory.snapshot import Items, error_entry


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
