"""Bundles in the fleet store: ``s3://bucket/prefix``, listed and fetched into a local cache for review.

Every ``*.zip`` under the prefix is a bundle. Each is fetched once into the
cache folder (named by a hash of its key, with its ETag beside it), so a
second review fetches only what is new or changed. An object larger than a
bundle may be is not fetched (it is listed as skipped). A bucket that does not
exist, refused credentials or a store that does not answer make the source
unreadable (the review exits 2), with the store's sentence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from agent.publish.store import S3Store, StoredObject, StoreError
from agent.review.ledgers import DeviceLedger
from agent.review.sources import Found, SourceError
from agent.text import escape

#: The largest object fetched as a bundle.
MAX_OBJECT = 1 << 30


def s3_bundles(url: str, skipped: list[str], cache: Path, endpoint_url: str | None = None,
               store: S3Store | None = None, ledgers: list[DeviceLedger] | None = None) -> Iterator[Found]:
    store = store or S3Store(url, endpoint_url, read_timeout=60.0)
    try:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        listed = list(store.list())
        objects = [o for o in listed if o.key.lower().endswith(".zip")]
        if ledgers is not None:
            ledgers.extend(_ledgers(store, [o for o in listed if "/ledger/" in o.key], skipped))
    except StoreError as exc:
        raise SourceError(str(exc)) from None
    except OSError as exc:
        raise SourceError(f"Cannot make the review's cache folder {cache}: {exc.strerror}.") from None
    for obj in objects:
        label = f"s3://{store.bucket}/{obj.key}"
        if obj.size > MAX_OBJECT:
            skipped.append(f"{escape(label)}: {obj.size} bytes, more than a bundle may be")
            continue
        name = hashlib.sha256(f"{store.bucket}/{obj.key}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
        path = cache / f"{name}.zip"
        stamp_file = cache / f"{name}.etag"
        stamp = f"{obj.etag}:{obj.size}:{obj.modified}"
        try:
            known = stamp_file.read_text() if stamp_file.exists() and path.exists() else None
            if known != stamp:
                store.fetch(obj.key, path, MAX_OBJECT)
                stamp_file.write_text(stamp)
        except OSError as exc:
            raise SourceError(f"Cannot use the review's cache folder {cache}: {exc.strerror}.") from None
        except StoreError as exc:
            if exc.transient or exc.store_wide:
                raise SourceError(str(exc)) from None
            skipped.append(f"{escape(label)}: {exc}")
            continue
        yield Found(label, path, f"s3:{store.bucket}/{obj.key}", stamp, trust_stamp=True)


#: The largest ledger piece fetched.
MAX_PIECE = 256 << 20


def _ledgers(store: S3Store, objects: list[StoredObject], skipped: list[str]) -> list[DeviceLedger]:
    """Each device's ledger from its published pieces (``agent.publish.ledger_files``), read into memory."""
    by_device: dict[str, list[StoredObject]] = {}
    for obj in objects:
        by_device.setdefault(obj.key.split("/ledger/", 1)[0], []).append(obj)
    out = []
    for device, pieces in sorted(by_device.items()):
        ledger = DeviceLedger(f"s3://{store.bucket}/{device}/ledger/")
        entries: list[tuple[int, int, bytes]] = []
        try:
            for obj in sorted(pieces, key=lambda o: o.key):
                name = obj.key.split("/ledger/", 1)[1]
                if obj.size > MAX_PIECE:
                    skipped.append(f"s3://{store.bucket}/{escape(obj.key)}: too large for a ledger piece")
                    continue
                data = store.read(obj.key, MAX_PIECE)
                if name == "origin":
                    ledger.origin = data.decode("utf-8").strip()
                elif name == "vkey":
                    ledger.vkey = data.decode("utf-8").strip()
                elif name.startswith(("checkpoints/", "cosigned/")):
                    ledger.heads.append(data)
                elif name.startswith("entries/"):
                    first, last = (int(x) for x in name.split("/", 1)[1].split("-", 1))
                    entries.append((first, last, data))
        except (StoreError, ValueError, UnicodeDecodeError) as exc:
            ledger.problem = f"its published pieces cannot be read ({exc})"
        expected = 0
        for first, last, data in sorted(entries):
            lines = data.splitlines()
            if first != expected or last - first != len(lines):
                ledger.problem = (f"its published entries are not contiguous (a piece from {first} to {last} after "
                                  f"{expected})")
                break
            ledger.entries.extend(lines)
            expected = last
        out.append(ledger)
    return out
