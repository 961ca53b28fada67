"""Session commands: agent, request, open, pending, approve, deny, status, note, end.

Everything a technician or customer types here goes through the agent's
local API (agent.api.client); text that came from a technician is
printed escaped (agent.text).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from agent.api.client import AgentClient
from agent.cli import client_of, home_of
from agent.clock import parse_rfc3339, utc_now
from agent.errors import UsageError
from agent.session.request import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    FILE_MAX_BYTES,
    SessionRequest,
    format_duration,
    parse_duration,
    parse_technician,
)
from agent.session.request_file import request_file_text, sign_with_ssh_keygen, stamp
from agent.text import escape

EXIT_ALLOWED, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 3, 4
_ALLOWED_STATES = {"allowed", "active", "ended", "sealed"}
_WAIT_SLICE = 60.0


def register(subparsers, common) -> None:
    p = subparsers.add_parser("agent", parents=[common], help="run the agent service in the foreground")
    p.add_argument("--consent-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="no decision within this time is a refusal (default 120)")
    p.add_argument("--system-socket", metavar="PATH", type=Path,
                   help="also serve the desktop's customers on this socket (the system agent; the installed "
                        "unit passes /run/chaperone/customer.sock)")
    p.set_defaults(func=run_agent_cmd)

    p = subparsers.add_parser("request", parents=[common],
                              help="ask the local agent for a session, or write a request file")
    p.add_argument("--technician", required=True, metavar="T",
                   help='who asks: "Name <email>" (or a name, with --email)')
    p.add_argument("--email", help="the technician's email (the principal their signature is checked against)")
    p.add_argument("--org", required=True, metavar="O", help="the technician's organisation")
    p.add_argument("--ticket", required=True, metavar="N", help="the ticket number")
    p.add_argument("--reason", required=True, metavar="R", help="why the session is needed")
    p.add_argument("--duration", default="30m", help="how long: 30m, 2h, 1h30m (default 30m, at most 8h)")
    p.add_argument("--watch", action="append", default=[], metavar="PATH", help="a path to watch (repeatable)")
    p.add_argument("--capability", action="append", choices=CAPABILITIES, metavar="CAP",
                   help=f"what is asked for: {', '.join(CAPABILITIES)} (repeatable; default "
                        f"{' and '.join(DEFAULT_CAPABILITIES)})")
    p.add_argument("--sign-key", metavar="KEY", help="sign the request with this SSH key (ssh-keygen -Y sign)")
    p.add_argument("-o", "--output", metavar="FILE", help="write a request file instead of asking the agent")
    p.add_argument("--device", metavar="SHA256:…",
                   help="the fingerprint of the one computer the request file is for (needed with --sign-key -o)")
    _add_wait(p)
    p.set_defaults(func=run_request)

    p = subparsers.add_parser("open", parents=[common], help="hand a request file to the local agent")
    p.add_argument("file", metavar="FILE")
    _add_wait(p)
    p.set_defaults(func=run_open)

    p = subparsers.add_parser("pending", parents=[common], help="list requests waiting for a decision")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run_pending)

    for name, decision in (("approve", "allow"), ("deny", "deny")):
        p = subparsers.add_parser(name, parents=[common],
                                  help=f"{'allow' if decision == 'allow' else 'refuse'} a request")
        p.add_argument("id", metavar="ID")
        if decision == "allow":
            p.add_argument("--only", metavar="CAPS",
                           help="grant only these of the capabilities asked for, e.g. files or files,shell")
            p.add_argument("--for", dest="for_", metavar="DURATION",
                           help="grant a shorter time than asked, e.g. 20m")
        p.set_defaults(func=run_decide, decision=decision)

    p = subparsers.add_parser("status", parents=[common], help="the agent's state and the active session")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run_status)

    p = subparsers.add_parser("note", parents=[common], help="add a note to the running session's journal")
    p.add_argument("words", nargs="+", metavar="[SESSION] TEXT")
    p.set_defaults(func=run_note)

    p = subparsers.add_parser("end", parents=[common],
                              help="end the session now and seal it (recorded as ended by whoever runs it)")
    p.add_argument("id", nargs="?", metavar="SESSION")
    p.set_defaults(func=run_end)


def _add_wait(p) -> None:
    p.add_argument("--wait", action="store_true",
                   help="wait for the decision: exit 0 if allowed, 3 if refused, 4 if nobody answered in time")
    p.add_argument("--json", action="store_true", help="print the agent's answer as JSON")


# --- agent ------------------------------------------------------------------------------------


def run_agent_cmd(args) -> int:
    # Only `chaperone agent` loads the service (capture, watchdog, psutil): every other command starts faster.
    from agent.service.server import run_agent

    if not 0 < args.consent_timeout <= 86400:
        raise UsageError("--consent-timeout must be between 0 and 86400 seconds.")
    return run_agent(home_of(args), consent_timeout=args.consent_timeout, system_socket=args.system_socket)


# --- request / open ---------------------------------------------------------------------------


def _request_from_args(args) -> SessionRequest:
    name, email = parse_technician(args.technician)
    if args.email:
        email = args.email
    return SessionRequest.from_fields({
        "technician": name, "email": email, "org": args.org, "ticket": args.ticket, "reason": args.reason,
        "duration_s": parse_duration(args.duration),
        "capabilities": args.capability or list(DEFAULT_CAPABILITIES),
        "watch": [os.path.abspath(p) for p in args.watch],
    })


def run_request(args) -> int:
    request = _request_from_args(args)
    if args.output:
        if args.wait:
            raise UsageError("--wait asks the local agent; it cannot be used with -o.")
        if args.sign_key and not args.device:
            raise UsageError("A signed request file is for one computer: give its fingerprint with --device "
                             "SHA256:… (the customer reads it in the tray's 'This device' or from 'chaperone init').")
        request = stamp(request, device=args.device)
        signature = sign_with_ssh_keygen(request.signed_bytes(), args.sign_key) if args.sign_key else None
        _write_file(Path(args.output), request_file_text(request, signature))
        state = "signed" if signature else "unsigned (the customer will see NOT VERIFIED)"
        print(f"Wrote the {state} request to {args.output}; it expires at {request.expires}.", file=sys.stderr)
        return 0
    client = client_of(args)
    if args.sign_key:
        request = stamp(request, device=client.call("ping").get("device"))
        text = request_file_text(request, sign_with_ssh_keygen(request.signed_bytes(), args.sign_key))
        result = client.call("request", request_file=text)
    else:
        result = client.call("request", request=request.fields())
    return _after_request(client, result, args)


def run_open(args) -> int:
    path = Path(args.file)
    try:
        size = path.stat().st_size
        if size > FILE_MAX_BYTES:
            raise UsageError(f"{path} is larger than {FILE_MAX_BYTES // 1024} KiB; it is not a request file.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"There is no file {path}; check the name.") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file; it is not a request file.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    client = client_of(args)
    return _after_request(client, client.call("request", request_file=text), args)


def _write_file(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write {path}: {exc.strerror}.") from None


def _after_request(client: AgentClient, result: dict, args) -> int:
    if args.json and not args.wait:
        print(json.dumps(result))
    elif not args.json:
        print(escape(result["id"]))
        print(escape(result["verification"]["detail"]), file=sys.stderr)
        for flag in result.get("flags") or []:
            print(f"flag: {escape(flag)}", file=sys.stderr)
    if not args.wait:
        return 0
    state = result["state"]
    if state == "requested":
        state = _wait_for_decision(client, result["id"], result.get("expires_at"))
    if args.json:
        print(json.dumps({**result, "state": state}))
    else:
        print(f"{escape(result['id'])}: {escape(state)}", file=sys.stderr)
    if state in _ALLOWED_STATES:
        return EXIT_ALLOWED
    return EXIT_REFUSED if state == "refused" else EXIT_NO_ANSWER


def _wait_for_decision(client: AgentClient, sid: str, expires_at: str | None) -> str:
    """Wait until the agent decides; the agent's consent timeout bounds the wait."""
    deadline = time.monotonic() + 86400
    if expires_at:
        deadline = time.monotonic() + max(0.0, (parse_rfc3339(expires_at) - utc_now()).total_seconds()) + 10
    state = "requested"
    while state == "requested" and time.monotonic() < deadline:
        slice_s = max(0.0, min(_WAIT_SLICE, deadline - time.monotonic()))
        state = client.call("wait", id=sid, timeout=round(slice_s, 3))["state"]
    return state


# --- the customer's side ---------------------------------------------------------------------


def run_pending(args) -> int:
    items = client_of(args).call("pending")
    if args.json:
        print(json.dumps(items))
        return 0
    if not items:
        print("No requests are waiting.")
    for item in items:
        print(format_pending(item))
    return 0


def format_pending(item: dict) -> str:
    """The customer's view of a request: every technician-supplied text escaped."""
    who = escape(item["technician"]) + (f" <{escape(item['email'])}>" if item.get("email") else "")
    lines = [
        f"{escape(item['id'])}  {who}, {escape(item['org'])}",
        f"  ticket:       {escape(item['ticket'])}",
        f"  reason:       {escape(item['reason'])}",
        f"  duration:     {format_duration(item['duration_s'])}",
        f"  capabilities: {escape(', '.join(item['capabilities']))}",
        f"  watch:        {', '.join(escape(p) for p in item['watch'])}",
        f"  identity:     {escape(item['verification']['detail'])}",
    ]
    lines += [f"  flag:         {escape(flag)}" for flag in item.get("flags") or []]
    lines.append(f"  decide by:    {escape(item['expires_at'])} (no answer is a refusal)")
    return "\n".join(lines)


def run_decide(args) -> int:
    params: dict = {"id": args.id, "decision": args.decision, "how": "terminal"}
    if getattr(args, "only", None):
        params["only"] = [c.strip() for c in args.only.split(",") if c.strip()]
    if getattr(args, "for_", None):
        params["for_s"] = parse_duration(args.for_)
    result = client_of(args).call("decide", **params)
    print(f"{escape(result['id'])}: {escape(result['state'])}")
    return 0


def run_status(args) -> int:
    status = client_of(args).call("status")
    if args.json:
        print(json.dumps(status))
        return 0
    active = status.get("active")
    if active:
        print(f"active: {escape(active['id'])}  {escape(active['technician'])}, {escape(active['org'])}, "
              f"ticket {escape(active['ticket'])}, until {escape(active['until'])}")
    else:
        print(escape(status["state"]))
    if status.get("pending"):
        print(f"{status['pending']} request(s) waiting: see 'chaperone pending'")
    return 0


def run_note(args) -> int:
    if len(args.words) > 2:
        raise UsageError("Give the note as one quoted text, optionally after the session's id.")
    sid, text = (args.words if len(args.words) == 2 else (None, args.words[0]))
    result = client_of(args).call("note", id=sid, text=text)
    print(f"{escape(result['id'])}: note recorded (record {result['seq']})")
    hidden = result.get("hidden") or 0
    if hidden:
        what = "1 value that looks like a secret was" if hidden == 1 else f"{hidden} values that look like secrets were"
        print(f"{what} hidden in the note; the journal holds [redacted: …] in its place.")
    return 0


def run_end(args) -> int:
    result = client_of(args, timeout=120.0).call("end", id=args.id)
    print(f"{escape(result['id'])}: {escape(result['state'])}")
    return 0
