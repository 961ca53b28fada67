"""``chaperone review``: verify and index many bundles (folders, zips, s3://bucket/prefix) at once."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from agent.atomic import replacing
from agent.bundle.verify import witness_verifiers
from agent.errors import ChaperoneError, NoteError, UsageError
from agent.text import escape


def default_index() -> Path:
    import platformdirs  # imported here: only review needs the platform's cache folder

    return Path(platformdirs.user_cache_dir("chaperone", appauthor=False)) / "review.sqlite3"


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "review", parents=[common],
        help="verify and index many bundles: 0 all genuine and complete, 1 a problem found, 2 cannot read")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="folders or zips of bundles, or s3://bucket/prefix")
    p.add_argument("--devices", metavar="FILE", help="the known devices, in allowed_signers format")
    p.add_argument("--witness", action="append", default=[], metavar="VKEY",
                   help="require a cosignature by this witness (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE.html", help="write the review page (and each session's report "
                   "in FILE.reports/ beside it)")
    p.add_argument("--json", action="store_true", help="print the bundles and problems as JSON")
    p.add_argument("--csv", metavar="FILE", help="write one row per bundle as CSV")
    p.add_argument("--index", metavar="FILE", help="the review's index (default: in the user's cache folder)")
    p.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: one per core)")
    p.add_argument("--endpoint-url", metavar="URL", help="the S3 endpoint for s3:// sources (default: AWS's, or "
                   "$AWS_ENDPOINT_URL)")
    p.set_defaults(func=run_review)


def _atomic_text(path: Path, write) -> None:
    try:
        with replacing(path, None) as fd, open(fd, "w", encoding="utf-8", newline="", closefd=False) as stream:
            write(stream)
    except OSError as exc:
        raise ChaperoneError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def run_review(args) -> int:
    # imported here: every command builds the whole parser, so the review's machinery loads only for review
    from agent.review import ReviewIndex, load_devices, review, write_csv, write_json, write_page

    if args.jobs is not None and not 1 <= args.jobs <= 256:
        raise UsageError("--jobs takes a number of worker processes between 1 and 256.")
    try:
        witness_verifiers(args.witness)
    except NoteError as exc:
        raise UsageError(f"A --witness key cannot be used: {str(exc).rstrip('.')}; give the witness's verifier key "
                         "as 'chaperone witness init' prints it.") from None
    devices = load_devices(Path(args.devices)) if args.devices else None
    out = Path(args.output) if args.output else None
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"The folder {out.parent} does not exist; create it or choose another -o.")
    reports = out.with_name(out.name.removesuffix(".html") + ".reports") if out else None
    index = ReviewIndex(Path(args.index) if args.index else default_index())
    cache = index.path.with_name(index.path.name + ".s3-cache")

    def remote(url: str, skipped: list[str], ledgers: list):
        from agent.review.remote import s3_bundles  # here: boto3 takes a second to load; only s3:// needs it

        return s3_bundles(url, skipped, cache, endpoint_url=args.endpoint_url, ledgers=ledgers)

    try:
        result = review(args.sources, devices=devices, witnesses=tuple(args.witness), index=index, reports=reports,
                        jobs=args.jobs, remote=remote)
    finally:
        index.close()
    if out is not None and reports is not None:
        _atomic_text(out, lambda s: write_page(s, result, reports_href=reports.name, sources=args.sources))
    if args.csv:
        _atomic_text(Path(args.csv), lambda s: write_csv(s, result))
    if args.json:
        write_json(sys.stdout, result)
    else:
        _print_summary(result, out)
    for sentence in result.unreadable_sources:
        print(f"chaperone: {sentence}", file=sys.stderr)
    return result.exit_code


def _print_summary(result, out: Path | None) -> None:
    genuine = sum(1 for b in result.bundles if b.get("genuine"))
    print(f"Reviewed {len(result.bundles)} bundle(s) ({result.examined} verified now, the rest known from the "
          f"index): {genuine} genuine.")
    if result.problems:
        kinds = Counter(p["kind"] for p in result.problems)
        print(f"{len(result.problems)} problem(s): " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ".")
        for p in result.problems[:50]:
            print(f"  {p['kind']}: {escape(p.get('file') or p.get('session') or '')}: {escape(p.get('detail') or '')}")
        if len(result.problems) > 50:
            print(f"  … and {len(result.problems) - 50} more (see the page, --json or --csv).")
    elif not result.unreadable_sources:
        print("No problem: every bundle is genuine and complete.")
    if out is not None:
        print(f"Wrote the review to {out}.")
