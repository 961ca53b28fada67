"""``chaperone prune [--dry-run]``: remove sessions older than ``retention.keep_days`` (each prune on the record)."""

from __future__ import annotations

from agent.cli import home_of
from agent.errors import LedgerError, UsageError
from agent.text import escape


def register(subparsers, common) -> None:
    p = subparsers.add_parser("prune", parents=[common],
                              help="remove sessions older than retention.keep_days (once published, when on)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=run_prune)


def run_prune(args) -> int:
    # imported here: every command builds the whole parser; retention and the ledger load only for prune
    from agent.ledger import Ledger
    from agent.publish.retention import Retention

    home = home_of(args)
    home.require()
    retention = Retention(home)
    due = retention.due()
    kept = [d for d in due if d.why_kept]
    if args.dry_run or not [d for d in due if not d.why_kept]:
        gone = retention.prune(dry_run=True)
    else:
        try:
            ledger = Ledger.open(home)  # each prune is a ledger entry; the agent holds the ledger while it runs
        except LedgerError as exc:
            raise UsageError(f"The device ledger cannot take the prunes now ({exc}); the running agent prunes by "
                             "itself every 6 hours ('chaperone prune --dry-run' says what it will remove).") from None
        with ledger:
            retention.ledger_hook = lambda line: ledger.append(line, sync=True)
            gone = retention.prune()
            ledger.sign_head()
    verb = "Would remove" if args.dry_run else "Removed"
    policy = f"older than {retention.keep_days} days" + (", once published" if retention.publishing else "")
    if not gone:
        print(f"Nothing to remove: no finished session is {policy}.")
    for item in gone:
        print(f"{verb} session {escape(item.session)} ({item.state}, ended {item.ended}).")
    for item in kept:
        print(f"Kept session {escape(item.session)} (ended {item.ended}): {item.why_kept}.")
    if gone and not args.dry_run:
        print(f"Each removal is recorded in {home.path / 'prunes' / 'prunes.jsonl'} and in the device ledger.")
    return 0
