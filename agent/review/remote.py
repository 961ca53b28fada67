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

from agent.publish.store import S3Store, StoreError
from agent.review.sources import Found, SourceError
from agent.text import escape

#: The largest object fetched as a bundle.
MAX_OBJECT = 1 << 30


def s3_bundles(url: str, skipped: list[str], cache: Path, endpoint_url: str | None = None,
               store: S3Store | None = None) -> Iterator[Found]:
    store = store or S3Store(url, endpoint_url, read_timeout=60.0)
    try:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        objects = [o for o in store.list() if o.key.lower().endswith(".zip")]
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
