"""``chaperone init``: make the device key if missing and print its fingerprint."""

from __future__ import annotations

import json

from agent.cli import home_of
from agent.devicekey import DeviceKey


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "init", parents=[common], help="make the device key if missing; print its fingerprint"
    )
    p.add_argument("--json", action="store_true", help="print the fingerprint and public key as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    home = home_of(args)
    key, created = DeviceKey.init(home)
    if args.json:
        print(json.dumps({
            "home": str(home.path),
            "created": created,
            "fingerprint": key.fingerprint,
            "principal": key.principal,
            "public_key": key.public_line,
        }))
    else:
        print(key.fingerprint_line())
    return 0
