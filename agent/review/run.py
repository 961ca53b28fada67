"""``review``: verify and index many bundles at once, on every core, and find what is wrong across them.

1. Find the bundles under each source (folders, zips, ``s3://bucket/prefix``).
2. Recognise the ones the index has seen: an S3 object with the same ETag
   is not even read again; any other bundle is hashed by a worker process
   (one per core), which examines it only if the index does not hold its
   digest: verify, summarise, and write the session's own report when an
   output folder is given. One pass over the files, so a first review reads
   each bundle once.
3. Judge them together: not genuine, unreadable, from an unknown device,
   unwitnessed, with gaps; and what the devices' ledgers say is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from agent.bundle.source import Unreadable, snapshot
from agent.review.examine import examine
from agent.review.index import ReviewIndex
from agent.review.ledgers import DeviceLedger, read_export
from agent.review.ledgers import check as ledger_check
from agent.review.sources import Found, SourceError, local_bundles
from agent.text import escape

#: The fields of one bundle in ``review --json`` (a contract: ../shared/DESIGN.md).
BUNDLE_FIELDS = ("file", "session", "device", "genuine", "witnessed", "technician", "org", "ticket", "started",
                 "ended", "ways_back_in", "alarms")
PROBLEM_KINDS = ("not-genuine", "unknown-device", "missing", "pruned", "unwitnessed", "fork", "gap", "unreadable")


@dataclass
class Review:
    """What a review found. ``bundles``: one entry per bundle file (``BUNDLE_FIELDS`` and more);
    ``problems``: ``{"kind", "session", "device", "file", "detail"}``; ``unreadable_sources``: sources that
    could not be read at all (the review is incomplete: exit 2)."""

    bundles: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unreadable_sources: list[str] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # known fingerprint -> its name in --devices
    witnesses: tuple[str, ...] = ()
    examined: int = 0  # how many bundles were verified this time (the rest came from the index)
    ledgers: list[DeviceLedger] = field(default_factory=list)  # the devices' ledgers found in the sources

    @property
    def exit_code(self) -> int:
        """2 a source cannot be read; 1 a problem (a session pruned by policy is not one); else 0."""
        if self.unreadable_sources:
            return 2
        return 1 if any(p["kind"] != "pruned" for p in self.problems) else 0

    def public(self) -> dict:
        """``review --json``: exactly the contract's fields."""
        return {"bundles": [{key: b.get(key) for key in BUNDLE_FIELDS} for b in self.bundles],
                "problems": [{key: p.get(key) for key in ("kind", "session", "device", "file", "detail")}
                             for p in self.problems]}


#: Finds the bundles of a source that is not a local path (``s3://``): ``(url, skipped, ledgers)``, adding the
#: devices' ledgers it finds to ``ledgers``.
RemoteSource = Callable[[str, list[str], list[DeviceLedger]], Iterable[Found]]


#: The digests the index holds entries for (this review's variant), set in each worker before it starts: a
#: worker that hashes a bundle it finds there does not examine it again.
_KNOWN: frozenset[str] = frozenset()


def _know(digests: frozenset[str]) -> None:
    global _KNOWN
    _KNOWN = digests


Job = tuple[str, str | None, frozenset[str], tuple[str, ...]]  # path, reports, devices, witnesses


def _work(job: Job) -> tuple[str, dict | None]:
    """``(digest, entry)`` of one bundle, read once (``snapshot``); the entry is None when the index already
    holds it (and its report)."""
    path, reports, known, witnesses = job
    try:
        with snapshot(Path(path)) as bundle:
            report = str(Path(reports) / f"{bundle.digest[:24]}.html") if reports else None
            if bundle.digest in _KNOWN and (report is None or os.path.exists(report)):
                return bundle.digest, None
            return bundle.digest, examine(bundle, report, known, witnesses)
    except Unreadable as exc:
        return "", {"genuine": False, "readable": False, "reason": escape(str(exc))}


def review(sources: list[str], *, devices: dict[str, str] | None = None, witnesses: tuple[str, ...] = (),
           index: ReviewIndex, reports: Path | None = None, jobs: int | None = None,
           remote: RemoteSource | None = None) -> Review:
    result = Review(devices=dict(devices or {}), witnesses=tuple(witnesses))
    found: list[Found] = []
    for source in sources:
        try:
            if source.startswith("s3://"):
                if remote is None:
                    raise SourceError(f"{escape(source)}: reading s3:// sources is not available here.")
                found.extend(remote(source, result.skipped, result.ledgers))
            else:
                exports: list[Path] = []
                found.extend(local_bundles(source, result.skipped, exports))
                result.ledgers.extend(read_export(folder) for folder in exports)
        except SourceError as exc:
            result.unreadable_sources.append(str(exc))
    if reports is not None:
        reports.mkdir(parents=True, exist_ok=True)
    variant = "witnesses:" + ",".join(sorted(witnesses)) if witnesses else ""
    # A bundle whose place and stamp the index trusts (an S3 object's ETag) is not even read; any other is
    # hashed by the worker that would examine it, which skips it if the index knows its digest.
    digests: dict[int, str] = {}
    known_places = index.places()
    for i, item in enumerate(found):
        stamp, digest = known_places.get(item.place, ("", ""))
        if digest and stamp == item.stamp and item.trust_stamp:
            digests[i] = digest
    cached = index.entries(sorted(set(digests.values())), variant)
    todo: dict[str, int] = {}  # one job per distinct bundle, as far as is known before it is hashed
    for i, item in enumerate(found):
        at = digests.get(i)
        report_missing = reports is not None and at is not None and not (reports / f"{at[:24]}.html").exists()
        if at is None or at not in cached or report_missing:
            todo.setdefault(at or f"path:{item.path}", i)
    places = list(todo.values())
    jobs_list: list[Job] = [(str(found[i].path), str(reports) if reports else None, frozenset(result.devices),
                             tuple(witnesses)) for i in places]
    known = index.digests(variant) if any(i not in digests for i in places) else frozenset()
    workers = max(1, jobs or os.cpu_count() or 1)
    fresh: dict[str, dict] = {}
    recognised: list[str] = []
    with ExitStack() as stack:
        if workers == 1 or len(jobs_list) < 4:
            _know(known)
            stack.callback(_know, frozenset())
            results: Iterable[tuple[str, dict | None]] = map(_work, jobs_list)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, initializer=_know,
                                                           initargs=(known,)))
            results = pool.map(_work, jobs_list, chunksize=max(1, min(64, len(jobs_list) // (workers * 8))))
        for i, (digest, entry) in zip(places, results, strict=True):
            if entry is None:
                digests[i] = digest
                recognised.append(digest)
            else:
                _keep(i, digest, entry, digests, fresh)
    cached.update(index.entries(sorted(set(recognised) - cached.keys()), variant))
    result.examined = len(fresh)
    index.remember([(found[i].place, found[i].stamp, d) for i, d in digests.items() if d],
                   {d: e for d, e in fresh.items() if d}, variant)
    entries = {**cached, **fresh}
    for i, item in enumerate(found):
        digest = digests.get(i, "")
        entry = dict(entries.get(digest) or {"genuine": False, "readable": False, "reason": "It could not be read."})
        entry.update(file=item.label, digest=digest,
                     report=f"{digest[:24]}.html" if reports is not None and digest else None)
        result.bundles.append(entry)
    result.bundles.sort(key=lambda b: (b.get("started") or b.get("requested") or "~", b["file"]))
    result.problems = judge(result) + ledger_check(result.ledgers, result.bundles, tuple(witnesses))
    return result


def _keep(i: int, digest: str, entry: dict, digests: dict[int, str], fresh: dict[str, dict]) -> None:
    if digest:
        digests[i] = digest
        fresh[digest] = entry
    else:
        fresh[f"unread:{i}"] = entry
        digests[i] = f"unread:{i}"


def judge(result: Review) -> list[dict]:
    """The problems of each bundle on its own (the ledger's are added by ``ledgers.check``)."""
    problems: list[dict] = []

    def add(kind: str, b: dict, detail: str) -> None:
        problems.append({"kind": kind, "session": b.get("session"), "device": b.get("device"), "file": b["file"],
                         "detail": detail})

    for b in result.bundles:
        if not b.get("readable"):
            add("unreadable", b, b.get("reason") or "It cannot be read.")
            continue
        if not b.get("genuine"):
            add("not-genuine", b, b.get("reason") or "It is not genuine.")
            continue
        if result.devices and b.get("device") not in result.devices:
            add("unknown-device", b, f"It is signed by the key {b.get('device')}, which is not in the list of "
                                     "known devices.")
        if result.witnesses and b.get("witnessed") is not True:
            add("unwitnessed", b, b.get("witness_problem") or "It carries no ledger evidence cosigned by the "
                                  "required witnesses.")
        if b.get("gaps"):
            add("gap", b, f"{b['gaps']} gap{'s' if b['gaps'] != 1 else ''} in recording (a restart of the agent, "
                          "an overflow, a capture error or unsealed records); see its report.")
    return problems
