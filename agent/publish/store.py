"""The fleet store: S3-compatible object storage with Object Lock, through boto3.

``S3Store`` puts each object once (``If-None-Match: *``, so nothing is ever
overwritten) with Object Lock retention (COMPLIANCE by default) and its
SHA-256 in the object's metadata; lists and fetches objects for the review.
Credentials come from boto3's standard chain (environment, shared config
and credentials files, instance roles). Every call has short time-outs, so a
store that hangs costs seconds, not the agent. Errors become ``StoreError``
with one sentence (what is wrong, what to do) and whether retrying may help.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectTimeoutError as BotoConnectTimeout

from agent.errors import ChaperoneError
from agent.text import escape

_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?")
_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
            "AuthorizationHeaderMalformed", "InvalidClientTokenId", "Forbidden", "403"}


class StoreError(ChaperoneError):
    """The store refused or could not be reached; ``transient`` says whether trying later may help, and
    ``store_wide`` whether it is about the store as a whole (so the next object would fail the same way)."""

    def __init__(self, sentence: str, *, transient: bool, store_wide: bool = True) -> None:
        super().__init__(sentence)
        self.transient = transient
        self.store_wide = store_wide


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at its ends) of ``s3://bucket/prefix``."""
    match = _URL.fullmatch(url.strip())
    if not match:
        raise StoreError(f"{escape(url)} is not an s3://bucket/prefix URL.", transient=False)
    return match.group(1), (match.group(2) or "").strip("/")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str
    modified: str = ""  # set by the store at each write: an overwrite with a colliding MD5 ETag still changes it


class S3Store:
    """One bucket and prefix on an S3-compatible endpoint (``endpoint_url`` None: AWS's)."""

    def __init__(self, url: str, endpoint_url: str | None = None, *, retain_days: int = 365,
                 mode: str = "COMPLIANCE", connect_timeout: float = 5.0, read_timeout: float = 20.0) -> None:
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.endpoint_url = endpoint_url
        self.retain_days = retain_days
        self.mode = mode
        self._config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                              retries={"max_attempts": 2, "mode": "standard"},
                              s3={"addressing_style": "path"})
        self._client: Any = None
        self._lock_checked = False

    # --- plumbing ---------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url,
                                                              config=self._config)
            except (BotoCoreError, ValueError) as exc:
                raise StoreError(f"Cannot set up the S3 client for {self.where} ({exc}).", transient=False) from None
        return self._client

    @property
    def where(self) -> str:
        return f"{self.url}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, exc: Exception, doing: str) -> StoreError:
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StoreError(f"No S3 credentials were found for {self.where}: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws, for the account that runs Chaperone.",
                              transient=False)
        if isinstance(exc, EndpointConnectionError | BotoConnectTimeout | ReadTimeoutError | ConnectionClosedError):
            return StoreError(f"Cannot reach the store {self.where} while {doing} ({type(exc).__name__}); "
                              "it will be tried again.", transient=True)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in ("NoSuchBucket", "404") and doing != "reading an object":
                return StoreError(f"The bucket {self.bucket} does not exist on {self.endpoint_url or 'AWS'}; create "
                                  "it with Object Lock enabled, or fix publish.url.", transient=False)
            if code in _REFUSED:
                return StoreError(f"The store {self.where} refused the credentials while {doing} ({code}); check "
                                  "the access key and its permissions.", transient=False)
            if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503"):
                return StoreError(f"The store {self.where} is busy or failing ({code}) while {doing}; it will be "
                                  "tried again.", transient=True)
            return StoreError(f"The store {self.where} answered {code} while {doing}: "
                              f"{escape(str(error.get('Message') or ''))[:200]}", transient=False)
        if isinstance(exc, BotoCoreError):
            return StoreError(f"The store {self.where} could not be used while {doing} ({exc}); it will be tried "
                              "again.", transient=True)
        return StoreError(f"The store {self.where} failed while {doing} ({type(exc).__name__}: {exc}).",
                          transient=True)

    # --- writing ----------------------------------------------------------------------------------
    def check_lock(self) -> None:
        """Refuse a bucket without Object Lock: what is published there could be deleted."""
        if self._lock_checked:
            return
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
                raise StoreError(f"The bucket {self.bucket} has no Object Lock, so what is published there could "
                                 "be deleted; create a bucket with Object Lock enabled.", transient=False) from None
            raise self._error(exc, "checking Object Lock") from None
        except BotoCoreError as exc:
            raise self._error(exc, "checking Object Lock") from None
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise StoreError(f"The bucket {self.bucket} has no Object Lock enabled; create a bucket with Object Lock.",
                             transient=False)
        self._lock_checked = True

    def put_locked(self, name: str, path: Path, sha256: str) -> str:
        """Upload ``path`` as ``name`` once, locked until ``retain_days`` from now; its version id.
        An object already there with the same SHA-256 (an upload whose answer was lost) counts as done."""
        self.check_lock()
        key = self.key(name)
        until = datetime.now(UTC) + timedelta(days=self.retain_days)
        try:
            with open(path, "rb") as body:
                answer = self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ObjectLockMode=self.mode,
                    ObjectLockRetainUntilDate=until, Metadata={"sha256": sha256}, ChecksumAlgorithm="SHA256")
            return str(answer.get("VersionId") or "")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return self._already_there(key, sha256)
            raise self._error(exc, f"uploading {name}") from None
        except OSError as exc:
            raise StoreError(f"Cannot read the spooled file {path}: {exc.strerror or exc}.", transient=False,
                             store_wide=False) from None
        except BotoCoreError as exc:
            raise self._error(exc, f"uploading {name}") from None

    def _already_there(self, key: str, sha256: str) -> str:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:  # each becomes one sentence
            raise self._error(exc, f"checking {key}") from None
        if head.get("Metadata", {}).get("sha256") == sha256:
            return str(head.get("VersionId") or "")
        raise StoreError(f"Another object is already published as {key} with different content; it is left as it "
                         "is (published objects are never overwritten).", transient=False, store_wide=False)

    # --- reading (the review) ---------------------------------------------------------------------
    def list(self, under: str = "") -> Iterator[StoredObject]:
        prefix = self.key(under) if under else (self.prefix + "/" if self.prefix else "")
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(str(item["Key"]), int(item.get("Size", 0)), str(item.get("ETag", "")),
                                       str(item.get("LastModified", "")))
        except StoreError:
            raise
        except (BotoCoreError, ClientError) as exc:  # each becomes one sentence
            raise self._error(exc, "listing the bucket") from None

    def read(self, key: str, max_bytes: int) -> bytes:
        """A small object's bytes (at most ``max_bytes``)."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            data = body.read(max_bytes + 1)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "reading an object") from None
        if len(data) > max_bytes:
            raise StoreError(f"s3://{self.bucket}/{escape(key)} is larger than {max_bytes} bytes.", transient=False,
                             store_wide=False)
        return bytes(data)

    def fetch(self, key: str, dest: Path, max_bytes: int) -> str:
        """Download ``key`` to ``dest`` (at most ``max_bytes``); its SHA-256."""
        temp = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            size = 0
            with open(temp, "wb") as out:
                while chunk := body.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise StoreError(f"s3://{self.bucket}/{escape(key)} is larger than {max_bytes} bytes, more "
                                         "than a bundle may be; it is not read.", transient=False, store_wide=False)
                    digest.update(chunk)
                    out.write(chunk)
            temp.replace(dest)
            return digest.hexdigest()
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"Cannot write {dest}: {exc.strerror or exc}.", transient=False) from None
        except (BotoCoreError, ClientError) as exc:  # each becomes one sentence
            raise self._error(exc, "reading an object") from None
        finally:
            temp.unlink(missing_ok=True)
