"""Listening ports: a pure function over (protocol, address, port, process) tuples."""

from __future__ import annotations

from collections.abc import Iterable


def listening_items(sockets: Iterable[tuple[str, str, int, str | None]]) -> dict[str, dict]:
    """``"tcp 0.0.0.0:22"`` -> proto, port, process (names joined when several share the port)."""
    items: dict[str, dict] = {}
    for proto, host, port, process in sockets:
        key = f"{proto} [{host}]:{port}" if ":" in host else f"{proto} {host}:{port}"
        item = items.setdefault(key, {"source": "sockets", "proto": proto, "port": port, "process": None})
        if process:
            names = set(filter(None, (item["process"] or "").split(", "))) | {process}
            item["process"] = ", ".join(sorted(names))
    return items
