"""``chaperone ledger [--json]`` and ``chaperone ledger export -o DIR``: the device's ledger for a client."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from agent.cli import home_of
from agent.clock import parse_rfc3339, utc_now
from agent.errors import LedgerError
from agent.ledger import Ledger


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
