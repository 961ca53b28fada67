"""``chaperone prune [--dry-run]``: remove sessions older than ``retention.keep_days`` (each prune on the record)."""

from __future__ import annotations

from agent.cli import home_of
from agent.publish.retention import Retention
from agent.text import escape


def register(subparsers, common) -> None:
    p = subparsers.add_parser("prune", parents=[common],
                              help="remove sessions older than retention.keep_days (once published, when on)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=run_prune)


def run_prune(args) -> int:
    home = home_of(args)
    home.require()
    retention = Retention(home)
    due = retention.due()
    kept = [d for d in due if d.why_kept]
    gone = retention.prune(dry_run=args.dry_run)
    verb = "Would remove" if args.dry_run else "Removed"
    policy = f"older than {retention.keep_days} days" + (", once published" if retention.publishing else "")
    if not gone:
        print(f"Nothing to remove: no finished session is {policy}.")
    for item in gone:
        print(f"{verb} session {escape(item.session)} ({item.state}, ended {item.ended}).")
    for item in kept:
        print(f"Kept session {escape(item.session)} (ended {item.ended}): {item.why_kept}.")
    if gone and not args.dry_run:
        print(f"Each removal is recorded in {home.path / 'prunes' / 'prunes.jsonl'}.")
    return 0
