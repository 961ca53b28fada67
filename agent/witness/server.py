"""A C2SP tlog-witness server over HTTP (aiohttp): ``POST /add-checkpoint``.

For each request, in the order the specification gives:

- a body that is not an old size line, proof lines, a blank line and a
  checkpoint note: 400;
- an origin the witness does not trust: 404;
- no signature by a trusted key of that origin verifies (or one by a trusted
  key fails): 403;
- an old size larger than the checkpoint's: 400;
- an old size other than the size of the newest head cosigned for the origin,
  or the same size with another root hash: 409, with the witness's size as
  ``text/x.tlog.size``;
- a consistency proof that does not verify: 422;
- otherwise the head is stored (committed to disk) and then the cosignature
  line is the answer (200).

Refusals of validly signed requests (409, 422) are kept as evidence
(``agent.witness.state``). The SQLite work runs in a thread, so one slow disk
does not stall other requests' parsing; ``WitnessState.advance`` makes the
check-and-store atomic.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from agent.ledger.checkpoint import Checkpoint
from agent.ledger.cosignature import CosignatureSigner
from agent.ledger.note import NoteError, parse_note, verified_by
from agent.witness.protocol import (
    MAX_BODY,
    PATH,
    SIZE_CONTENT_TYPE,
    format_size,
    parse_request,
)
from agent.witness.state import WitnessState

TEXT = "text/plain"


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type=TEXT)


def make_app(signer: CosignatureSigner, state: WitnessState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def add_checkpoint(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _text(413, "the request body is too large")
        try:
            req = parse_request(body)
            note = parse_note(req.note)
            checkpoint = Checkpoint.from_note(note)
        except NoteError as exc:
            return _text(400, f"malformed request: {exc}")
        verifiers = await asyncio.to_thread(state.verifiers, checkpoint.origin)
        if not verifiers:
            return _text(404, "unknown origin")
        try:
            if not verified_by(note, verifiers):
                return _text(403, "no signature by a trusted key of this origin")
        except NoteError:
            return _text(403, "a signature by a trusted key does not verify")
        if req.old_size > checkpoint.size:
            return _text(400, "the old size is larger than the checkpoint's size")
        outcome = await asyncio.to_thread(state.advance, checkpoint, req.note, req.old_size, req.proof, body)
        if outcome.status == 409:
            return web.Response(status=409, body=format_size(outcome.size), content_type=SIZE_CONTENT_TYPE)
        if outcome.status == 422:
            return _text(422, f"the consistency proof does not verify: {outcome.reason}")
        cosignature = signer.cosign(note.text.encode("utf-8"))
        return web.Response(status=200, text=cosignature.line, content_type=TEXT)

    app.router.add_post(PATH, add_checkpoint)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6); ``ValueError`` if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(listen)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


async def serve(signer: CosignatureSigner, state: WitnessState, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; prints one line with the address once it listens."""
    runner = web.AppRunner(make_app(signer, state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp keeps the bound socket here; needed to report port 0's real port
    sockets = getattr(server, "sockets", None)
    bound = sockets[0].getsockname() if sockets else (host, port)
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"Witness {signer.name} listening on http://{shown}:{bound[1]}", flush=True)
    print(f"Its verifier key: {signer.vkey}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        print("Witness stopped.", file=sys.stderr, flush=True)
