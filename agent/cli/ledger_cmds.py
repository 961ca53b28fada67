"""``chaperone ledger [--json]`` and ``chaperone ledger export -o DIR``: the device's ledger for a client."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from agent.cli import home_of
from agent.clock import parse_rfc3339, utc_now
from agent.errors import LedgerError
from agent.home import Home
from agent.ledger import Ledger, vkey_verifier
from agent.witness import WitnessPool

#: How long ``export`` waits for a cosignature of the seal by default, and with ``--wait-witness``.
DEFAULT_WAIT_S = 10.0
WAIT_WITNESS_S = 120.0


def register(subparsers, common) -> None:
    p = subparsers.add_parser("ledger", parents=[common],
                              help="the device's ledger: origin, verifier key, size, last cosigned head")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run_show)
    sub = p.add_subparsers(dest="ledger_command", metavar="COMMAND", parser_class=type(p))
    q = sub.add_parser("export", parents=[common], help="write the ledger's entries and heads to a folder")
    q.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write (made if missing)")
    q.set_defaults(func=run_export)


def _open(home, *, write: bool) -> Ledger:
    """The writer when no agent holds the ledger (so a fresh head can be signed), else a reader."""
    if write:
        try:
            return Ledger.open(home)
        except LedgerError as exc:
            if "already open for writing" not in str(exc):
                raise
    return Ledger.open(home, readonly=True)


def _age(at: str) -> float:
    return max(0.0, (utc_now() - parse_rfc3339(at)).total_seconds())


def describe(ledger: Ledger) -> dict:
    signed = ledger.last_signed
    cosigned = ledger.last_cosigned
    return {
        "origin": ledger.origin,
        "vkey": ledger.vkey,
        "size": ledger.size,
        "signed": {"size": signed.size, "root": signed.note.decode().split("\n")[2]} if signed else None,
        "cosigned": {"size": cosigned.size, "witnesses": list(cosigned.witnesses), "at": cosigned.at,
                     "age_s": round(_age(cosigned.at), 1)} if cosigned else None,
    }


def run_show(args) -> int:
    with _open(home_of(args), write=False) as ledger:
        info = describe(ledger)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"Origin:        {info['origin']}")
    print(f"Verifier key:  {info['vkey']}")
    print(f"Entries:       {info['size']}")
    signed = info["signed"]
    print(f"Signed head:   {signed['size']} entries" if signed else "Signed head:   none yet")
    cosigned = info["cosigned"]
    if cosigned:
        when = datetime.fromtimestamp(utc_now().timestamp() - cosigned["age_s"], UTC)
        print(f"Cosigned head: {cosigned['size']} entries, by {', '.join(cosigned['witnesses'])}, "
              f"{cosigned['at']} ({_ago(cosigned['age_s'])}, {when:%H:%M} UTC)")
    else:
        print("Cosigned head: none (no witness has cosigned this ledger: its record has not left the machine)")
    return 0


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def run_export(args) -> int:
    out = Path(args.output)
    with _open(home_of(args), write=True) as ledger:
        head = ledger.export(out)
        count = head.size if head else 0
        cosigned = ledger.last_cosigned
    print(f"Wrote {count} ledger entries and their heads to {out}.")
    if cosigned is None:
        print("No witness has cosigned this ledger yet.")
    return 0


def _last_line(journal: Path) -> bytes:
    with open(journal, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    return tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]


def witness_seal(home: Home, journal: Path, timeout: float) -> tuple[str, ...] | None:
    """Wait up to ``timeout`` seconds until the journal's seal is in a ledger head cosigned by a quorum of
    the configured witnesses: their names, ``()`` if not in time, None when no witness is configured.

    When no agent holds the ledger, this command sends the head to the witnesses itself (an agent that
    runs sends its heads at every seal); otherwise it watches what the agent keeps."""
    config = home.settings().witness
    if not config.witnesses:
        return None
    seal = _last_line(journal)
    verifiers = [vkey_verifier(w.vkey) for w in config.witnesses]
    deadline = time.monotonic() + timeout
    while True:
        try:
            ledger = Ledger.open(home)
        except LedgerError as exc:
            if "already open for writing" not in str(exc):
                raise
            ledger = Ledger.open(home, readonly=True)
        with ledger:
            index = ledger.find([seal]).get(seal)
            if index is None:
                return ()  # the seal never reached the ledger: there is nothing to witness
            head = ledger.cosigned_covering(index, verifiers, config.quorum)
            if head is None and not ledger.store.readonly:
                remaining = max(1.0, deadline - time.monotonic())
                asyncio.run(_push_once(ledger, config, min(10.0, remaining)))
                head = ledger.cosigned_covering(index, verifiers, config.quorum)
            if head is not None:
                return head.witnesses
        if time.monotonic() >= deadline:
            return ()
        time.sleep(0.5)


async def _push_once(ledger: Ledger, config, timeout: float) -> None:
    pool = WitnessPool(ledger, [(w.url, w.vkey) for w in config.witnesses], quorum=config.quorum, timeout=timeout)
    try:
        await pool.push()
    finally:
        await pool.close()
