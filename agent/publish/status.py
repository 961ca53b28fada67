"""What the customer's "This device" view shows: the mode, the keys to give the client, where the record goes.

``device_status(home, mode)`` reads only the home's public files and settings
(never a private key) and the publish spool's counts; it never contacts the
store. ``ledger`` is filled by the ledger when there is one (origin and
verifier key).
"""

from __future__ import annotations

from agent.errors import ChaperoneError
from agent.home import Home
from agent.publish.spool import Spool
from agent.sshkeys import KeyFormatError, fingerprint, line_to_blob


def device_status(home: Home, mode: str, ledger: dict | None = None) -> dict:
    status: dict = {"mode": mode, "home": str(home.path), "settings_file": str(home.settings_path),
                    "settings_exists": home.settings_path.exists(), "fingerprint": None, "principal": None,
                    "ledger": ledger, "settings_error": None}
    try:
        parts = home.pub_path.read_text(encoding="ascii").split()
        status["fingerprint"] = fingerprint(line_to_blob(" ".join(parts[:2])))
        status["principal"] = parts[2] if len(parts) > 2 else None
    except (OSError, UnicodeDecodeError, KeyFormatError, IndexError):
        pass
    try:
        settings = home.settings()
    except ChaperoneError as exc:
        status["settings_error"] = str(exc)
        return status
    status["witness"] = {"witnesses": [{"url": w.url, "vkey": w.vkey} for w in settings.witness.witnesses],
                         "quorum": settings.witness.quorum, "max_lag_s": settings.witness.max_lag_s,
                         "on_lag": settings.witness.on_lag}
    status["retention"] = {"keep_days": settings.retention.keep_days}
    publish: dict = {"url": settings.publish.url, "endpoint_url": settings.publish.endpoint_url,
                     "retain_days": settings.publish.retain_days, "mode": settings.publish.mode}
    if settings.publish.url:
        try:
            spool = Spool(home)
            try:
                waiting = spool.waiting()
                publish.update(waiting=len(waiting), published=len(spool.published_items()),
                               last_error=next((i.last_error for i in reversed(waiting) if i.last_error), None),
                               oldest_waiting=waiting[0].added if waiting else None)
            finally:
                spool.close()
        except ChaperoneError as exc:
            publish["last_error"] = str(exc)
    status["publish"] = publish
    return status
