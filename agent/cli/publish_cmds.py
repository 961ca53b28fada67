"""``chaperone publish [--status] [--wait]``: the publish spool (what waits to leave the machine), and flushing it."""

from __future__ import annotations

import time

from agent.cli import home_of
from agent.errors import UsageError
from agent.text import escape


def register(subparsers, common) -> None:
    p = subparsers.add_parser("publish", parents=[common],
                              help="publish sealed sessions to the fleet store now: 0 done, 1 something waits")
    p.add_argument("--status", action="store_true", help="only say what is waiting, and why")
    p.add_argument("--wait", action="store_true", help="keep trying (with back-off) until everything is published")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="with --wait: give up after this long (default 600)")
    p.set_defaults(func=run_publish)


def run_publish(args) -> int:
    # imported here: boto3 takes ~0.3 s to load, and every other command (ssh-authorize too) would pay it
    from agent.publish.publisher import Publisher

    home = home_of(args)
    home.require()
    publisher = Publisher(home)
    try:
        if not publisher.enabled:
            waiting = len(publisher.spool.waiting())
            print("Publishing is off: set publish.url in settings.json (see docs/SETTINGS.md)"
                  + (f"; {waiting} item(s) wait in the spool." if waiting else "; nothing leaves this machine."))
            return 0 if args.status or not waiting else 1
        if args.status:
            return _status(publisher)
        if args.timeout <= 0:
            raise UsageError("--timeout takes a number of seconds above 0.")
        spooled = publisher.catch_up()
        if spooled:
            print(f"Spooled {len(spooled)} sealed session(s).")
        deadline = time.monotonic() + args.timeout
        result = publisher.flush(everything=True)
        while args.wait and result.waiting and time.monotonic() < deadline:
            items = publisher.spool.waiting()
            next_try = min(i.next_try for i in items) if items else time.time()
            time.sleep(max(0.2, min(next_try - time.time(), deadline - time.monotonic(), 30.0)))
            later = publisher.flush(deadline=deadline)
            result.published += later.published
            result.failed = later.failed or result.failed
            result.waiting = later.waiting
        for name in result.published:
            print(f"Published {escape(name)}.")
        if result.waiting:
            why = result.failed[-1][1] if result.failed else "not tried yet"
            print(f"{result.waiting} item(s) still wait to be published: {why}")
            return 1
        print(f"Everything is published to {publisher.store.where if publisher.store else ''}.")
        return 0
    finally:
        publisher.close()


def _status(publisher) -> int:
    waiting = publisher.spool.waiting()
    done = publisher.spool.published_items()
    where = publisher.store.where if publisher.store else ""
    print(f"Publishing to {where}: {len(done)} published, {len(waiting)} waiting.")
    now = time.time()
    for item in waiting[:50]:
        when = "now" if item.next_try <= now else f"in {int(item.next_try - now)} s"
        error = f"; last error: {item.last_error}" if item.last_error else ""
        print(f"  {escape(item.name)}: {item.size} bytes, spooled {item.added}, {item.attempts} attempt(s), next "
              f"{when}{error}")
    if len(waiting) > 50:
        print(f"  … and {len(waiting) - 50} more.")
    return 0
