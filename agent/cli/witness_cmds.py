"""``chaperone witness init | serve | trust | status``: run a C2SP tlog-witness for other devices' ledgers."""

from __future__ import annotations

import asyncio
import json

from agent.cli import home_of
from agent.errors import UsageError
from agent.witness.state import WitnessState, init_witness, load_witness


def register(subparsers, common) -> None:
    p = subparsers.add_parser("witness", parents=[common],
                              help="run a witness that cosigns devices' ledger heads (C2SP tlog-witness)")
    sub = p.add_subparsers(dest="witness_command", metavar="COMMAND", parser_class=type(p))
    sub.required = True

    q = sub.add_parser("init", parents=[common], help="make the witness key if missing; print its verifier key")
    q.add_argument("--name", help="the witness's key name (default chaperone.local/witness/<host>)")
    q.add_argument("--json", action="store_true", help="print the name and verifier key as JSON")
    q.set_defaults(func=run_init)

    q = sub.add_parser("serve", parents=[common], help="serve POST /add-checkpoint over HTTP, in the foreground")
    q.add_argument("--listen", required=True, metavar="ADDR", help="HOST:PORT to listen on, e.g. 127.0.0.1:7380")
    q.set_defaults(func=run_serve)

    q = sub.add_parser("trust", parents=[common], help="accept a device's ledger: its origin and verifier key")
    q.add_argument("origin", metavar="ORIGIN", help="the ledger's origin, as 'chaperone ledger' prints it")
    q.add_argument("vkey", metavar="VKEY", help="the ledger's verifier key, as 'chaperone ledger' prints it")
    q.set_defaults(func=run_trust)

    q = sub.add_parser("status", parents=[common], help="the trusted ledgers and the newest head cosigned for each")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=run_status)


def run_init(args) -> int:
    signer, created = init_witness(home_of(args), args.name)
    if args.json:
        print(json.dumps({"name": signer.name, "vkey": signer.vkey, "created": created}))
    else:
        print(signer.vkey)
    return 0


def run_serve(args) -> int:
    # aiohttp's server costs every `chaperone` command (the agent too) ~20 MB: only `witness serve` loads it
    from agent.witness.server import parse_listen, serve
    try:
        host, port = parse_listen(args.listen)
    except ValueError:
        raise UsageError(f"{args.listen!r} is not an address to listen on; give HOST:PORT, "
                         "e.g. 127.0.0.1:7380.") from None
    home = home_of(args)
    signer = load_witness(home)
    state = WitnessState.of(home)
    try:
        asyncio.run(serve(signer, state, host, port))
    except OSError as exc:
        raise UsageError(f"Cannot listen on {args.listen}: {exc.strerror or exc}; pick another address.") from None
    finally:
        state.close()
    return 0


def run_trust(args) -> int:
    home = home_of(args)
    load_witness(home)
    state = WitnessState.of(home)
    try:
        state.trust(args.origin, args.vkey)
    finally:
        state.close()
    print(f"This witness now cosigns heads of {args.origin}.")
    return 0


def run_status(args) -> int:
    home = home_of(args)
    signer = load_witness(home)
    state = WitnessState.of(home)
    try:
        logs = []
        for origin, vkey in state.trusted():
            head = state.head(origin)
            logs.append({"origin": origin, "vkey": vkey, "size": head.size if head else None,
                         "updated": head.updated if head else None,
                         "refusals": len(state.refusals(origin))})
    finally:
        state.close()
    if args.json:
        print(json.dumps({"name": signer.name, "vkey": signer.vkey, "logs": logs}))
        return 0
    print(f"Witness {signer.name}: {signer.vkey}")
    if not logs:
        print("It trusts no ledger yet ('chaperone witness trust ORIGIN VKEY').")
    for log in logs:
        seen = "nothing cosigned yet" if log["size"] is None else f"{log['size']} entries cosigned, {log['updated']}"
        refused = f"; {log['refusals']} refused (forks or bad proofs)" if log["refusals"] else ""
        print(f"  {log['origin']}: {seen}{refused}")
    return 0
