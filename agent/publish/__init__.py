"""Publishing to the fleet store: S3-compatible storage with Object Lock, from a spool in the home.

See "Fleet store and the client's review" in ../shared/DESIGN.md and docs/ARCHITECTURE.md ("Publish").
"""

from agent.publish.publisher import (
           FlushResult,
           Publisher,
           PublishWorker,
           bundle_name,
           device_id,
           home_device_id,
)
from agent.publish.spool import Item, Spool, SpoolError
from agent.publish.store import S3Store, StoredObject, StoreError, parse_url

__all__ = ["FlushResult", "Item", "PublishWorker", "Publisher", "S3Store", "Spool", "SpoolError", "StoreError",
           "StoredObject", "bundle_name", "device_id", "home_device_id", "parse_url"]
