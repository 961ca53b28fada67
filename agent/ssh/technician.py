"""What an SSH login asks the customer: who, for which ticket, why, for how long.

The technician's identity comes from ``trusted_technicians`` (``Identity``).
The ticket and the reason come, in this order, from:

1. a signed request file the technician sent before, saved by the customer
   in ``HOME/ssh/requests/`` (any name ending in ``.json``) and signed by the
   key that logs in (``chaperone request … --sign-key KEY -o FILE``);
2. the OpenSSH certificate's extensions ``ticket@chaperone``,
   ``reason@chaperone`` (and optionally ``name@chaperone``, ``org@chaperone``),
   issued with ``ssh-keygen -s CA -O extension:ticket@chaperone=T-123 …``;
3. the certificate's key id, as ``;``-separated ``name=value`` parts after the
   technician, e.g. ``-I "alice@acme.example;ticket=T-123;reason=disk full"``;
4. otherwise the ticket reads "not given" and the reason "SSH login as USER".
"""

from __future__ import annotations

from pathlib import Path

from agent.errors import ChaperoneError
from agent.home import Home
from agent.session.request import NAMESPACE
from agent.session.request_file import parse_request_file
from agent.settings import SSHSettings
from agent.trust import Identity, TrustStore

TICKET_EXT = "ticket@chaperone"
REASON_EXT = "reason@chaperone"
NAME_EXT = "name@chaperone"
ORG_EXT = "org@chaperone"
NO_TICKET = "not given"
MAX_REQUEST_FILES = 64
# The agent's limits on request fields (agent.session.request); longer values are cut, not refused.
_LIMITS = {"technician": 128, "org": 128, "ticket": 64, "reason": 1000}


def requests_dir(home: Home) -> Path:
    return home.path / "ssh" / "requests"


def key_id_details(key_id: str | None) -> dict[str, str]:
    """``"alice@acme.example;ticket=T-123;reason=disk full"`` -> {"ticket": "T-123", "reason": "disk full"}."""
    details: dict[str, str] = {}
    for part in (key_id or "").split(";")[1:]:
        name, sep, value = part.partition("=")
        if sep and name.strip() and value.strip():
            details.setdefault(name.strip().lower(), value.strip())
    return details


def _cut(name: str, value: str) -> str:
    limit = _LIMITS[name]
    return value if len(value) <= limit else value[: limit - 1] + "…"


def signed_request_for(home: Home, store: TrustStore, fingerprint: str, now: float | None = None) -> dict | None:
    """The fields of the newest valid request file in ``HOME/ssh/requests`` signed by this key, if any."""
    try:
        files = sorted(requests_dir(home).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for path in files[:MAX_REQUEST_FILES]:
        try:
            parsed = parse_request_file(path.read_text(encoding="utf-8"))
            if not parsed.signature or not parsed.request.email:
                continue
            ident = store.verify_signature(parsed.signature, NAMESPACE, parsed.signed_bytes,
                                           parsed.request.email, now=now)
        except (OSError, ValueError, ChaperoneError):  # a file that is bad, expired or untrusted is skipped
            continue
        if ident.fingerprint == fingerprint:
            fields = parsed.request.fields()
            fields.pop("created", None)
            fields.pop("expires", None)
            fields["request_file"] = path.name
            return fields
    return None


def login_request(identity: Identity, user: str, key_type: str, key_b64: str,
                  settings: SSHSettings, signed: dict | None = None) -> dict:
    """The ``request`` fields ssh-authorize sends to the agent for this login."""
    ext = identity.extensions
    from_id = key_id_details(identity.key_id)
    email = identity.principal if "@" in identity.principal else None
    org = ext.get(ORG_EXT) or from_id.get("org") or (email.split("@", 1)[1] if email else "") or "unknown organisation"
    fields: dict[str, object] = {
        "technician": ext.get(NAME_EXT) or from_id.get("name") or identity.principal,
        "email": email,
        "org": org,
        "ticket": ext.get(TICKET_EXT) or from_id.get("ticket") or NO_TICKET,
        "reason": ext.get(REASON_EXT) or from_id.get("reason") or f"SSH login as {user}",
        "capabilities": list(settings.capabilities or (("files", "shell", "admin") if user == "root"
                                                       else ("files", "shell"))),
    }
    if settings.duration_s:
        fields["duration_s"] = settings.duration_s
    if settings.watch:
        fields["watch"] = list(settings.watch)
    if signed:
        for name in ("technician", "email", "org", "ticket", "reason", "duration_s", "capabilities", "watch"):
            if signed.get(name):
                fields[name] = signed[name]
    for name in _LIMITS:
        fields[name] = _cut(name, str(fields[name]))
    fields["ssh"] = {
        "user": user,
        "key_fingerprint": identity.fingerprint,
        "key_type": key_type,
        "key": key_b64,
        "principal": identity.principal,
        "via_ca": identity.via_ca,
        "ca_fingerprint": identity.ca_fingerprint,
        "key_id": identity.key_id,
        "request_file": signed.get("request_file") if signed else None,
    }
    return fields
