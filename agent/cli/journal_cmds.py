"""``chaperone export | verify | report | sessions``: the bundle and the history, from the home's files."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

from agent import text
from agent.atomic import replacing
from agent.bundle import verify_bundle
from agent.bundle.export import export_bundle_with_evidence, journal_of
from agent.bundle.layout import JOURNAL, SUMS, mode_sentence
from agent.bundle.report import ReportCheck, write_report
from agent.bundle.source import Unexpected, Unreadable, snapshot
from agent.bundle.verify import KEEP
from agent.bundle.witnessing import DEFAULT_MAX_LAG
from agent.cli import home_of
from agent.cli.ledger_cmds import DEFAULT_WAIT_S, WAIT_WITNESS_S, witness_seal
from agent.devicekey import DeviceKey
from agent.errors import ChaperoneError, LineTooLong, NoteError, UsageError
from agent.history import History
from agent.journal.reader import iter_lines

_FINGERPRINT = re.compile(r"(SHA256:)?[A-Za-z0-9+/]{43}")
_TABLE = (("ID", "id"), ("STATE", "state"), ("TECHNICIAN", "technician"), ("ORG", "org"), ("TICKET", "ticket"),
          ("STARTED", "started"), ("ENDED", "ended"))


def register(subparsers, common) -> None:
    p = subparsers.add_parser("export", parents=[common], help="write the signed bundle of a sealed session")
    p.add_argument("session", metavar="SESSION", nargs="?", help="the session's id (see 'chaperone sessions')")
    p.add_argument("--last", action="store_true", help="the most recent sealed session")
    p.add_argument("-o", "--output", metavar="FILE.zip|DIR/",
                   help="a zip file, or a folder when it ends with '/' or exists (default: TICKET.zip here)")
    p.add_argument("--wait-witness", action="store_true",
                   help=f"wait (up to {WAIT_WITNESS_S:.0f} s) until the witnesses have cosigned the seal "
                        f"(default: {DEFAULT_WAIT_S:.0f} s, then export it as not yet witnessed)")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("verify", parents=[common],
                              help="check a bundle: 0 genuine, 1 not genuine, 2 cannot read")
    p.add_argument("bundle", metavar="BUNDLE", nargs="+",
                   help="the bundle's zip or folder (one; 'review' checks many)")
    p.add_argument("--fingerprint", metavar="SHA256:…", help="the device key's fingerprint, to pin the signer")
    p.add_argument("--witness", action="append", default=[], metavar="VKEY",
                   help="require every checkpoint and the seal to be cosigned in time by this witness "
                        "(its verifier key, from its operator); repeatable")
    p.add_argument("--origin", metavar="ORIGIN",
                   help="the device's ledger origin, when it is not the default derived from its key")
    p.add_argument("--max-lag", type=float, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                   help=f"how long after it was written a checkpoint may first be cosigned "
                        f"(default {DEFAULT_MAX_LAG:.0f})")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=run_verify)

    p = subparsers.add_parser("report", parents=[common], help="write the readable report of a bundle")
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle's zip or folder")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html")
    p.add_argument("--fingerprint", metavar="SHA256:…", help="the device key's fingerprint, to pin the signer")
    p.set_defaults(func=run_report)

    p = subparsers.add_parser("sessions", parents=[common], help="the history of sessions, newest first")
    p.add_argument("--json", action="store_true", help="print the sessions as a JSON array")
    p.set_defaults(func=run_sessions)


_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _pick_session(home, args) -> dict | None:
    """The History row to export: SESSION, or with --last the most recent sealed one."""
    if args.last == bool(args.session):
        raise UsageError("Give a session's id or --last (the most recent sealed session); 'chaperone sessions' "
                         "lists them.")
    with History(home, readonly=True) as history:
        if args.session:
            return history.get(args.session)
        for row in history.list():
            if row.get("sealed") or row.get("state") == "sealed":
                args.session = row["id"]
                return row
    raise UsageError(f"There is no sealed session in {home.path} yet; end a session first with 'chaperone end'.")


def default_bundle_name(row: dict | None, session: str) -> Path:
    """``INC-20431.zip`` (the ticket, made safe for a file name), or the session's id; never over a file."""
    ticket = _FILE_SAFE.sub("-", str((row or {}).get("ticket") or "")).strip("-.")[:64]
    for name in ([f"{ticket}.zip", f"{ticket}-{session}.zip"] if ticket else []) + [f"{session}.zip"]:
        if not Path(name).exists():
            return Path(name)
    raise UsageError(f"{session}.zip exists already here; choose a file with -o.")


def run_export(args) -> int:
    home = home_of(args)
    row = _pick_session(home, args)
    output = args.output or default_bundle_name(row, args.session)
    journal, _ = journal_of(home, args.session)
    witnessed = witness_seal(home, journal, WAIT_WITNESS_S if args.wait_witness else DEFAULT_WAIT_S)
    path, evidence = export_bundle_with_evidence(home, args.session, output)
    fingerprint = DeviceKey.load(home).fingerprint
    shown = text.escape(str(path))
    print(f"Wrote the bundle of session {text.escape(args.session)} to {shown}.")
    if evidence is not None and evidence.witnessed:
        print(text.escape(f"Witnessed by {', '.join(evidence.witnessed_by)}."))
        print(f"Check it with: chaperone verify {shown} --fingerprint {fingerprint} --witness <each witness's key>")
        return 0
    if witnessed is not None:
        print("Not yet witnessed: no witness had cosigned the seal"
              + (" in time" if not args.wait_witness else f" within {WAIT_WITNESS_S:.0f} s")
              + "; export it again later (or with --wait-witness) for a bundle that proves it left the machine.")
    print(f"Check it with: chaperone verify {shown} --fingerprint {fingerprint}")
    return 0


def _check_fingerprint(fingerprint: str | None) -> None:
    if fingerprint and not _FINGERPRINT.fullmatch(fingerprint.strip()):
        raise UsageError(f"{fingerprint!r} is not a key fingerprint; give it as 'chaperone init' prints it "
                         "(SHA256: and 43 characters).")


def _one_bundle(given: list[str]) -> str:
    """The one bundle ``verify`` checks; several, or a folder of bundles, are a job for ``review``."""
    if len(given) > 1:
        shown = " ".join(shlex.quote(g) for g in given[:3]) + (" …" if len(given) > 3 else "")
        raise UsageError(f"verify checks one bundle and was given {len(given)}; to check many at once, run "
                         f"'chaperone review {text.escape(shown)}'.")
    path = Path(given[0])
    if path.is_dir() and not (path / SUMS).exists() and not (path / JOURNAL).exists():
        raise UsageError(f"{text.escape(given[0])} is a folder, not a bundle; to check the bundles in it, run "
                         f"'chaperone review {text.escape(shlex.quote(given[0]))}'.")
    return given[0]


def run_verify(args) -> int:
    _check_fingerprint(args.fingerprint)
    args.bundle = _one_bundle(args.bundle)
    if args.max_lag <= 0:
        raise UsageError("--max-lag takes a number of seconds above 0.")
    try:
        verdict = verify_bundle(args.bundle, args.fingerprint, witnesses=args.witness, origin=args.origin,
                                max_lag=args.max_lag)
    except NoteError as exc:
        raise UsageError(f"A --witness key cannot be used: {str(exc).rstrip('.')}; give the witness's verifier "
                         "key as 'chaperone witness init' prints it.") from None
    if args.json:
        print(json.dumps(verdict.to_json(), ensure_ascii=False))
    elif verdict.genuine:
        # A verdict's reason can name files and records of the bundle: hostile text, printed escaped so
        # that no escape sequence in a member name can paint a bad bundle as a good one.
        print(text.escape(verdict.reason))
        if verdict.pinned:
            print(f"The signing key matches the pinned fingerprint {text.escape(verdict.fingerprint or '')}.")
        else:
            print(f"The key was not pinned: compare {text.escape(verdict.fingerprint or '')} with the device's "
                  f"fingerprint ('chaperone init' on that device prints it), or pass --fingerprint.")
        # The witnesses' names come from the bundle: escaped like the reason.
        print(text.escape(_witness_sentence(verdict.witness, args.max_lag)))
        print(text.escape(mode_sentence(verdict.mode, verdict.key_account)))  # the account name is the journal's
    elif verdict.readable:
        print(f"NOT GENUINE: {text.escape(verdict.reason)}")
    else:
        print(f"chaperone: {text.escape(verdict.reason)}", file=sys.stderr)
    return verdict.exit_code


def _witness_sentence(report: dict | None, max_lag: float) -> str:
    """What the ledger evidence says, for a genuine bundle."""
    if not report or not report["present"]:
        return ("Not witnessed: the bundle has no ledger proof, so nothing shows its records left the machine; "
                "whoever holds the device key could have rebuilt it.")
    if report["checked"]:
        return (f"Witnessed by {', '.join(report['checked'])}: every checkpoint and the seal were cosigned within "
                f"{max_lag:.0f} s of being written, so no record was changed afterwards. Records can still have "
                "been falsified as they were written, by whoever held the device key then.")
    if report["cosigners"]:
        return (f"The ledger proof claims cosignatures by {', '.join(report['cosigners'])} (not checked: pass "
                "--witness with each witness's verifier key, from its operator).")
    return ("Not yet witnessed: the seal is in the device's ledger, but no witness had cosigned it when the bundle "
            "was exported; whoever holds the device key could have rebuilt it.")


def run_report(args) -> int:
    _check_fingerprint(args.fingerprint)
    out = Path(args.output)
    try:
        # one read of the bundle for the verdict and the report: a bundle swapped between the two would
        # otherwise get the verdict of the genuine one printed over its own records
        with snapshot(Path(args.bundle)) as bundle, bundle.open(KEEP) as source:
            verdict = verify_bundle(source, args.fingerprint)
            if not verdict.readable:
                raise ChaperoneError(verdict.reason)
            if JOURNAL not in source.names:
                raise ChaperoneError(f"The bundle {args.bundle} has no {JOURNAL} to report on.")

            def journal_lines():
                with source.open(JOURNAL) as stream:
                    yield from iter_lines(stream)

            with replacing(out, None) as fd, open(fd, "w", encoding="utf-8", closefd=False) as html:
                write_report(html, journal_lines, check=ReportCheck(verdict.genuine, verdict.reason,
                                                                    verdict.fingerprint, verdict.pinned,
                                                                    witnesses=witness_sentence(verdict.witness)))
    except Unreadable as exc:
        raise ChaperoneError(str(exc)) from None
    except (Unexpected, LineTooLong) as exc:
        raise ChaperoneError(f"Cannot read the journal of {args.bundle}: {exc}.") from None
    except OSError as exc:
        raise ChaperoneError(f"Cannot write the report {out}: {exc.strerror or exc}.") from None
    if verdict.genuine:
        print(f"Wrote the report to {text.escape(str(out))}; the bundle is genuine: {text.escape(verdict.reason)}")
        return 0
    print(f"Wrote the report to {text.escape(str(out))}; the bundle is NOT GENUINE: {text.escape(verdict.reason)}")
    return 1


def witness_sentence(witness: dict | None) -> str | None:
    """What the bundle's ledger evidence says, for the report's banner."""
    if not witness or not witness.get("present"):
        return "No ledger evidence: nothing shows this session's record left the device (no witness cosigned it)."
    cosigners = ", ".join(witness.get("cosigners") or [])
    if cosigners:
        return f"The seal is in a ledger head cosigned by {cosigners} (not checked against any witness key here)."
    return "The bundle carries ledger evidence, but no witness cosigned the seal's head."


def run_sessions(args) -> int:
    with History(home_of(args), readonly=True) as history:
        sessions = history.list()
    if args.json:
        print(json.dumps(sessions, ensure_ascii=False))
        return 0
    if not sessions:
        print("No sessions yet.")
        return 0
    rows = [[title for title, _ in _TABLE]]
    rows += [[text.escape(str(s.get(key) or "-")) for _, key in _TABLE] for s in sessions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
