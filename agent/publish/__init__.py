"""Publishing to the fleet store: S3-compatible storage with Object Lock, from a spool in the home; retention.

Modules: ``store`` (boto3: imported only by what publishes or reads the store, since boto3 costs ~0.3 s and
~30 MB to load), ``spool``, ``publisher`` (``Publisher``, ``PublishWorker``), ``ledger_files``, ``retention``,
``status``. See "Fleet store and the client's review" in ../shared/DESIGN.md and docs/ARCHITECTURE.md
("Publish and retention").
"""
