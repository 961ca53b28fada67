"""``chaperone init``: make the device key (and the ledger's key) if missing and print its fingerprint."""

from __future__ import annotations

import json

from agent.cli import home_of
from agent.devicekey import DeviceKey
from agent.ledger import ledger_identity


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "init", parents=[common], help="make the device key if missing; print its fingerprint"
    )
    p.add_argument("--json", action="store_true", help="print the fingerprint, public key and ledger identity as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    home = home_of(args)
    key, created = DeviceKey.init(home)
    origin, vkey = ledger_identity(home)
    if args.json:
        print(json.dumps({
            "home": str(home.path),
            "created": created,
            "fingerprint": key.fingerprint,
            "principal": key.principal,
            "public_key": key.public_line,
            "ledger": {"origin": origin, "vkey": vkey},
        }))
    else:
        print(key.fingerprint_line())
    return 0
