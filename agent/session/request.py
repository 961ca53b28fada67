"""Session requests: what a technician asks for, validated.

A request names the technician (name and email), the organisation, the
ticket, the reason, the duration, the capabilities asked for and the paths to
watch. Everything in it is untrusted: :meth:`SessionRequest.from_fields`
checks types, sizes and ranges and gives one plain sentence for the first
problem. How a request is signed into a file and verified is
``agent.session.request_file``; ``Verification`` is what that check found.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agent.canonical import canonical_bytes
from agent.clock import parse_rfc3339
from agent.errors import RequestError, UsageError
from agent.text import escape, show

NAMESPACE = "chaperone-request"
FILE_FORMAT = "chaperone-request/1"
FILE_MAX_BYTES = 64 * 1024
FILE_LIFETIME = timedelta(hours=24)

CAPABILITIES = ("files", "shell", "admin")
DEFAULT_CAPABILITIES = ("files", "shell")
DEFAULT_DURATION_S = 30 * 60
MAX_DURATION_S = 8 * 3600
MIN_DURATION_S = 60
# Test-only: lets end-to-end tests run sessions of a few seconds.
MIN_DURATION_ENV = "CHAPERONE_MIN_DURATION"

_LIMITS = {"technician": 128, "email": 254, "org": 128, "ticket": 64, "reason": 1000}
MAX_WATCH_PATHS = 32
MAX_PATH_CHARS = 4096
_SSH_FIELDS = ("user", "key_fingerprint", "key_type")
_SSH_OPTIONAL = {"key": (str,), "principal": (str,), "via_ca": (bool,), "ca_fingerprint": (str,), "key_id": (str,),
                 "request_file": (str,)}
_SSH_TEXT_LIMIT = 16384
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_TECHNICIAN = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>]+)>\s*$")
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time from a request; ``RequestError`` for anything else."""
    try:
        return parse_rfc3339(text)
    except UsageError as exc:
        raise RequestError(str(exc)) from None


def min_duration_s() -> int:
    """The shortest session allowed: 60 s, or less when tests set CHAPERONE_MIN_DURATION."""
    raw = os.environ.get(MIN_DURATION_ENV)
    if raw and raw.isdigit() and int(raw) >= 1:
        return min(int(raw), MIN_DURATION_S)
    return MIN_DURATION_S


def parse_duration(text: str) -> int:
    """Seconds from ``"30m"``, ``"1h30m"``, ``"90s"`` or a bare number of minutes."""
    raw = text.strip().lower()
    if raw.isdigit():
        return int(raw) * 60
    match = _DURATION.match(raw)
    if not raw or not match:
        raise RequestError(f"The duration '{escape(text)[:40]}' is not understood; write it like 30m, 2h or 1h30m.")
    return int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)


def parse_technician(text: str) -> tuple[str, str | None]:
    """``"Alice Example <alice@example.com>"`` -> (name, email); a bare name has no email."""
    match = _TECHNICIAN.match(text)
    if match:
        return match["name"], match["email"].strip()
    return text.strip(), None


def format_duration(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h} h" if h else "", f"{m} min" if m else "", f"{s} s" if s else ""]
    return " ".join(p for p in parts if p) or "0 s"


def _text(data: dict, name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise RequestError(f"The request has no {name}; give one.")
        return None
    if not isinstance(value, str):
        raise RequestError(f"The request's {name} must be text.")
    _require_valid_unicode(value, name)
    limit = _LIMITS[name]
    if len(value) > limit:
        raise RequestError(f"The request's {name} is {len(value)} characters long; the limit is {limit}.")
    if not value.strip():
        raise RequestError(f"The request's {name} is blank; give one.")
    return value


def _required(data: dict, name: str) -> str:
    value = _text(data, name)
    assert value is not None  # _text raises for a missing required field
    return value


def _require_valid_unicode(value: str, name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"The request's {name} is not valid text (it holds a lone surrogate).") from None


def _duration(data: dict, minimum: int) -> int:
    value = data.get("duration_s", DEFAULT_DURATION_S)
    if value is None:
        value = DEFAULT_DURATION_S
    if type(value) is not int:
        raise RequestError("The request's duration_s must be a whole number of seconds.")
    if not minimum <= value <= MAX_DURATION_S:
        raise RequestError(
            f"The duration {format_duration(value) if value > 0 else value} is out of range; "
            f"ask for between {format_duration(minimum)} and {format_duration(MAX_DURATION_S)}."
        )
    return value


def _capabilities(data: dict) -> tuple[str, ...]:
    value = data.get("capabilities") or list(DEFAULT_CAPABILITIES)
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise RequestError("The request's capabilities must be a list of names.")
    unknown = [c for c in value if c not in CAPABILITIES]
    if unknown:
        raise RequestError(
            f"Unknown capability '{escape(unknown[0])[:40]}'; choose from {', '.join(CAPABILITIES)}."
        )
    return tuple(c for c in CAPABILITIES if c in value)


def _watch(data: dict) -> tuple[str, ...]:
    value = data.get("watch") or []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise RequestError("The request's watch paths must be a list of paths.")
    if len(value) > MAX_WATCH_PATHS:
        raise RequestError(f"The request names {len(value)} watch paths; the limit is {MAX_WATCH_PATHS}.")
    paths: list[str] = []
    for p in value:
        _require_valid_unicode(p, "watch path")
        if "\x00" in p or len(p) > MAX_PATH_CHARS:
            raise RequestError(f"The watch path '{escape(p)[:80]}' is not a usable path.")
        if not os.path.isabs(p):
            raise RequestError(f"The watch path '{escape(p)[:80]}' is relative; give an absolute path.")
        norm = os.path.normpath(p)
        if norm not in paths:
            paths.append(norm)
    return tuple(paths)


def _ssh(data: dict) -> dict | None:
    """The SSH login behind a request (from ssh-authorize): required and optional details."""
    value = data.get("ssh")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in _SSH_FIELDS):
        raise RequestError("The request's ssh details must give user, key_fingerprint and key_type as text.")
    out = {}
    for name, kinds in {**{k: (str,) for k in _SSH_FIELDS}, **_SSH_OPTIONAL}.items():
        item = value.get(name)
        if item is None:
            continue
        if not isinstance(item, kinds) or isinstance(item, str) and len(item) > _SSH_TEXT_LIMIT:
            raise RequestError(f"The request's ssh {name} is not usable.")
        if isinstance(item, str):
            _require_valid_unicode(item, f"ssh {name}")
        out[name] = item
    return out


@dataclass(frozen=True)
class SessionRequest:
    """A validated request. Its text fields are raw (evidence); display them via agent.text."""

    technician: str
    email: str | None
    org: str
    ticket: str
    reason: str
    duration_s: int = DEFAULT_DURATION_S
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    watch: tuple[str, ...] = ()
    created: str | None = None
    expires: str | None = None
    device: str | None = None  # a request file: the fingerprint of the one computer it is for
    nonce: str | None = None   # a request file: its own random id, so each file is used once
    ssh: dict | None = field(default=None, compare=False)

    @classmethod
    def from_fields(cls, data: object, *, minimum_duration_s: int | None = None) -> SessionRequest:
        """Validate untrusted fields (a JSON object); raise RequestError with one sentence."""
        if not isinstance(data, dict):
            raise RequestError("The request must be a JSON object of fields.")
        email = _text(data, "email", required=False)
        if email is not None and not _EMAIL.match(email):
            raise RequestError(f"The email '{escape(email)[:80]}' is not an email address.")
        created, expires = data.get("created"), data.get("expires")
        device, nonce = data.get("device"), data.get("nonce")
        if device is not None and (not isinstance(device, str) or not _FINGERPRINT.match(device)):
            raise RequestError("The request's device must be a key fingerprint such as SHA256:AbC…")
        if nonce is not None and (not isinstance(nonce, str) or not _NONCE.match(nonce)):
            raise RequestError("The request's nonce is malformed; ask the technician for a new request file.")
        for name, value in (("created", created), ("expires", expires)):
            if value is not None:
                if not isinstance(value, str):
                    raise RequestError(f"The request's {name} must be an RFC 3339 time.")
                parse_time(value)
        return cls(
            technician=_required(data, "technician"),
            email=email,
            org=_required(data, "org"),
            ticket=_required(data, "ticket"),
            reason=_required(data, "reason"),
            duration_s=_duration(data, min_duration_s() if minimum_duration_s is None else minimum_duration_s),
            capabilities=_capabilities(data),
            watch=_watch(data),
            created=created,
            expires=expires,
            device=device,
            nonce=nonce,
            ssh=_ssh(data),
        )

    def fields(self) -> dict:
        """The JSON fields (what is signed in a request file, and sent to the agent)."""
        out: dict[str, object] = {
            "technician": self.technician,
            "email": self.email,
            "org": self.org,
            "ticket": self.ticket,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "capabilities": list(self.capabilities),
            "watch": list(self.watch),
        }
        if self.created:
            out["created"] = self.created
        if self.expires:
            out["expires"] = self.expires
        if self.device:
            out["device"] = self.device
        if self.nonce:
            out["nonce"] = self.nonce
        if self.ssh:
            out["ssh"] = dict(self.ssh)
        return out

    def signed_bytes(self) -> bytes:
        return canonical_bytes(self.fields())

    def text_flags(self) -> list[str]:
        """"<field> contains unusual characters (…)" for each hostile-looking field."""
        flags = []
        for name in ("technician", "email", "org", "ticket", "reason"):
            value = getattr(self, name)
            if value:
                flag = show(value).flag(name)
                if flag:
                    flags.append(flag)
        for path in self.watch:
            flag = show(path).flag(f"watch path {escape(path)}")
            if flag:
                flags.append(flag)
        return flags

    def display_name(self) -> str:
        """``Alice Example (Acme IT)``, escaped."""
        return f"{escape(self.technician)} ({escape(self.org)})"


def watch_flags(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Flags for watch paths the agent cannot watch (kept in the request; the customer sees why)."""
    flags = []
    for p in paths:
        if not os.path.lexists(p):
            flags.append(f"watch path {escape(p)} does not exist")
        elif not os.access(p, os.R_OK):
            flags.append(f"watch path {escape(p)} cannot be read by the agent")
    return flags


# --- verification ------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    verified: bool
    principal: str | None
    fingerprint: str | None
    detail: str

    def to_dict(self) -> dict:
        return {"verified": self.verified, "principal": self.principal,
                "fingerprint": self.fingerprint, "detail": self.detail}


def unverified(why: str, principal: str | None = None, fingerprint: str | None = None) -> Verification:
    return Verification(False, principal, fingerprint, f"NOT VERIFIED: {why}")
