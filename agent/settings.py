"""``settings.json``: one schema, read and validated in one place into one typed object.

The schema is the dataclasses below: each section is a frozen dataclass and
each key a field made with :func:`setting` (its default, how a value is read,
what it means). ``load_settings`` reads the file once; a value of the wrong
kind is a :class:`SettingsError` naming the key and what was expected, and an
unknown key is one too (a typo in a security setting must not be ignored).
``docs/SETTINGS.md`` is generated from this module (``python -m
agent.settings``) and a test keeps the two equal.

To add a setting: add a field to its section (or a new section to
``Settings``), regenerate the document, and read it as
``home.settings().section.key``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from agent.errors import SettingsError

Parser = Callable[[Any], Any]


def setting(default: Any, parse: Parser, meaning: str, expected: str, items: type | None = None) -> Any:
    """A key of the schema: its default, its parser (raises ValueError), what it means, what it takes,
    and for a list of objects, the section each item is read as (for the document)."""
    return field(default=default,
                 metadata={"parse": parse, "meaning": meaning, "expected": expected, "items": items})


# --- value parsers: each returns the value as the program uses it, or raises ValueError ----------------

def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError
    return float(value)


def seconds(low: float, high: float, *, zero_ok: bool = False) -> Parser:
    def parse(value: Any) -> float:
        number = _number(value)
        if not (low < number <= high or (zero_ok and number == 0)):
            raise ValueError
        return number
    return parse


def whole(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value
    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError
    return value


def one_of(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError
        return str(value)
    return parse


def text(pattern: str | None = None, *, max_len: int = 4096) -> Parser:
    compiled = re.compile(pattern) if pattern else None

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value or len(value) > max_len:
            raise ValueError
        if compiled and not compiled.fullmatch(value):
            raise ValueError
        return value
    return parse


def optional(inner: Parser) -> Parser:
    def parse(value: Any) -> Any:
        return None if value is None else inner(value)
    return parse


def text_list(item: Parser | None = None, *, allow_empty: bool = True) -> Parser:
    check = item or text()

    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise ValueError
        return tuple(check(v) for v in value)
    return parse


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def duration(value: Any) -> int:
    """``"30m"``, ``"1h30m"``, ``"90s"`` or a whole number of seconds, as seconds (> 0)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    match = _DURATION.fullmatch(value.strip().lower())
    if not match:
        raise ValueError
    h, m, s = (int(g or 0) for g in match.groups())
    total = h * 3600 + m * 60 + s
    if total <= 0:
        raise ValueError
    return total


def object_list(value: Any) -> list:
    """A list (its items are read as the field's ``items`` section by the loader)."""
    if not isinstance(value, list):
        raise ValueError
    return value


# --- the schema ------------------------------------------------------------------------------------------

_USER = r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}\$?"
_SSHD_PATTERN = r"[A-Za-z0-9.:*?!/,_-]+"  # sshd pattern-list characters only: nothing that could close a quote


@dataclass(frozen=True)
class ConsentSettings:
    customers: tuple[str, ...] | None = setting(
        None, optional(text_list(text(_USER))),
        "The accounts that may allow, refuse and end sessions (the customer at the machine). "
        "Default: the users with a local graphical or console session. A technician's process never may.",
        "a list of account names, or null")
    require_verified: bool = setting(
        False, boolean,
        "Refuse at once (by policy) every request whose technician is not verified by a trusted key "
        "or certificate.",
        "true or false")


@dataclass(frozen=True)
class SSHSettings:
    consent_wait_s: float = setting(
        100.0, seconds(0, 3600),
        "How long an SSH login waits for the customer's answer; keep it under sshd's LoginGraceTime "
        "(default 120 s).",
        "a number of seconds between 0 and 3600")
    from_pattern: str | None = setting(
        None, optional(text(_SSHD_PATTERN, max_len=1024)),
        "An sshd `from=` pattern list that technicians' logins must come from.",
        'an sshd pattern list such as "10.0.0.0/8,*.example.com"')
    users: tuple[str, ...] | None = setting(
        None, optional(text_list(text(_USER))),
        "The only accounts technicians may log in to over SSH (default: any).",
        "a list of account names, or null")
    on_session_end: str = setting(
        "end", one_of("end", "warn"),
        'At the end of a session, "end" the technician\'s live connections or only "warn" the customer.',
        '"end" or "warn"')
    duration_s: int | None = setting(
        None, optional(duration),
        "The session length an SSH login asks for (default 30 minutes).",
        'a duration such as "30m" or "1h30m"')
    capabilities: tuple[str, ...] | None = setting(
        None, optional(text_list(one_of("files", "shell", "admin"), allow_empty=False)),
        "What an SSH login asks for (default files and shell).",
        'a list of "files", "shell", "admin"')
    watch: tuple[str, ...] | None = setting(
        None, optional(text_list(text(r"/.*"))),
        "The folders an SSH login's session watches (default: the customer's home and /etc).",
        "a list of absolute paths")


@dataclass(frozen=True)
class WitnessEntry:
    url: str = setting(None, text(r"https?://\S+", max_len=2048),
                       "The witness's address (C2SP tlog-witness).", "an http:// or https:// URL")
    vkey: str = setting(None, text(r"[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+", max_len=512),
                        "The witness's verifier key, as `chaperone witness init` prints it.",
                        "a C2SP verifier key (name+hash+base64)")


@dataclass(frozen=True)
class WitnessSettings:
    witnesses: tuple[WitnessEntry, ...] = setting(
        (), object_list,
        "The witnesses that cosign this device's ledger heads, each {\"url\", \"vkey\"}.",
        'a list of {"url": ..., "vkey": ...} objects', items=WitnessEntry)
    quorum: int = setting(1, whole(1, 64), "How many witnesses must cosign a head for it to count.",
                          "a whole number between 1 and 64")
    max_lag_s: float = setting(
        60.0, seconds(0, 86400),
        "The longest a session may run without a head cosigned by a quorum of witnesses.",
        "a number of seconds between 0 and 86400")
    on_lag: str = setting(
        "end", one_of("warn", "end"),
        'When no head was cosigned for max_lag_s: "warn" the customer, or "end" the session '
        "(and the technician's access with it).",
        '"warn" or "end"')


@dataclass(frozen=True)
class LedgerSettings:
    origin: str | None = setting(
        None, optional(text(r"[^\s+]+", max_len=255)),
        "The ledger's origin line (default `chaperone.local/device/<fingerprint>`).",
        "a name without spaces or '+'")


@dataclass(frozen=True)
class PublishSettings:
    url: str | None = setting(
        None, optional(text(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?", max_len=1024)),
        "Where sealed bundles, the ledger's entries and its cosigned heads go (nothing leaves the "
        "machine when unset).",
        "an s3://bucket/prefix URL, or null")
    endpoint_url: str | None = setting(
        None, optional(text(r"https?://\S+", max_len=2048)),
        "The S3 endpoint (default: AWS's, from the standard AWS configuration).",
        "an http:// or https:// URL, or null")
    retain_days: int = setting(
        365, whole(1, 36500), "Object Lock retention set on each published object, in days.",
        "a whole number of days between 1 and 36500")
    mode: str = setting("COMPLIANCE", one_of("COMPLIANCE", "GOVERNANCE"),
                        "The Object Lock mode: COMPLIANCE (no one can shorten it) or GOVERNANCE.",
                        '"COMPLIANCE" or "GOVERNANCE"')


@dataclass(frozen=True)
class RetentionSettings:
    keep_days: int = setting(
        90, whole(1, 36500),
        "Journals and history rows older than this are pruned (once published, when publishing is "
        "on); each prune is a ledger entry.",
        "a whole number of days between 1 and 36500")


@dataclass(frozen=True)
class GuardSettings:
    timeout_s: float = setting(
        5.0, seconds(1, 60),
        "How long the agent may send no heartbeat before its guard ends the technician's access (a hung "
        "agent; a killed one is noticed at once, a stopped one within a second). Read when the agent starts.",
        "a number of seconds between 1 and 60")


@dataclass(frozen=True)
class Settings:
    consent: ConsentSettings = ConsentSettings()
    ssh: SSHSettings = SSHSettings()
    witness: WitnessSettings = WitnessSettings()
    ledger: LedgerSettings = LedgerSettings()
    publish: PublishSettings = PublishSettings()
    retention: RetentionSettings = RetentionSettings()
    guard: GuardSettings = GuardSettings()
    remote_access_interval_s: float = setting(
        15.0, seconds(0, 86400, zero_ok=True),
        "Seconds between scans for remote-access tools while no session runs (0 turns it off; a scan "
        "costs 20-50 ms of CPU).",
        "a number of seconds between 0 and 86400")


# Keys whose name in the file differs from the field's (a Python keyword or a clearer name in code).
_FILE_NAMES = {"from_pattern": "from", "duration_s": "duration"}
# Old spellings still read, with the key they now live under.
_MOVED = {"require_verified": ("consent", "require_verified")}


def _file_name(name: str) -> str:
    return _FILE_NAMES.get(name, name)


def _read_section(section: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(f"settings.json: {where or 'the file'} must be a JSON object.")
    known = {_file_name(f.name): f for f in fields(section)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise SettingsError(
            f"settings.json: unknown key '{key[:80]}'; the keys are listed in docs/SETTINGS.md (fix or remove it).")
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        key = f"{where}.{name}" if where else name
        nested: type | None = type(f.default) if is_dataclass(f.default) else None
        if nested is not None:
            values[f.name] = _read_section(nested, raw[name], key)
            continue
        try:
            value = f.metadata["parse"](raw[name])
            if f.metadata["items"] is not None:
                value = tuple(_read_section(f.metadata["items"], item, f"{key}[{i}]") for i, item in enumerate(value))
            values[f.name] = value
        except ValueError:
            shown = json.dumps(raw[name])[:60]
            raise SettingsError(
                f"settings.json: {key} must be {f.metadata['expected']} (it is {shown}).") from None
    missing = [_file_name(f.name) for f in fields(section) if f.default is None and f.name not in values
               and "parse" in f.metadata and not _accepts_none(f)]
    if missing:
        raise SettingsError(f"settings.json: {where} needs the key '{missing[0]}'.")
    return section(**values)


def _accepts_none(f: Field) -> bool:
    try:
        return f.metadata["parse"](None) is None
    except (ValueError, TypeError):
        return False


def parse_settings(raw: Any) -> Settings:
    """The settings from a decoded ``settings.json`` value; ``SettingsError`` names the first bad key."""
    if isinstance(raw, dict):
        raw = dict(raw)
        for old, (section, key) in _MOVED.items():
            if old in raw:
                moved = dict(raw.get(section) or {})
                moved.setdefault(key, raw.pop(old))
                raw[section] = moved
    return _read_section(Settings, raw, "")


def load_settings(path: Path) -> Settings:
    """Read and validate ``settings.json``; the defaults when it does not exist."""
    try:
        data = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except UnicodeDecodeError:
        raise SettingsError(f"{path} is not UTF-8 text; fix or remove it.") from None
    except OSError as exc:
        raise SettingsError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise SettingsError(
            f"{path} is not valid JSON (line {getattr(exc, 'lineno', '?')}); fix or remove it.") from None
    try:
        return parse_settings(raw)
    except SettingsError as exc:
        raise SettingsError(str(exc).replace("settings.json", str(path), 1)) from None


# --- the document ----------------------------------------------------------------------------------------

def _rows(section: type, prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for f in fields(section):
        key = f"{prefix}{_file_name(f.name)}"
        if is_dataclass(f.default):
            rows += _rows(type(f.default), key + ".")
            continue
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        if isinstance(default, tuple):
            default = list(default)
        shown = "(required)" if default is None and not _accepts_none(f) else json.dumps(default)
        rows.append((key, meta["expected"], shown, meta["meaning"]))
        if meta["items"] is not None:
            rows += _rows(meta["items"], key + "[].")
    return rows


def document() -> str:
    """docs/SETTINGS.md, generated from the schema."""
    lines = [
        "# settings.json",
        "",
        "<!-- Generated by `python -m agent.settings > docs/SETTINGS.md`; a test keeps it equal to the schema"
        " in agent/settings.py. -->",
        "",
        "The home's `settings.json` is read once when the agent starts (and by `ssh-authorize` at each",
        "login). Every key is optional; a value of the wrong kind, or a key not listed here, stops the",
        "agent with one sentence naming the key and what it takes, so a typo never loosens a setting",
        "silently. `consent`, `witness`, `publish` and `retention` are contracts that scripts and",
        "installers rely on (`../shared/DESIGN.md`).",
        "",
        "```json",
        json.dumps({
            "consent": {"customers": ["alice"]},
            "witness": {"witnesses": [{"url": "http://127.0.0.1:7380", "vkey": "<C2SP verifier key>"}],
                        "quorum": 1, "max_lag_s": 60, "on_lag": "end"},
            "publish": {"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:8333",
                        "retain_days": 365, "mode": "COMPLIANCE"},
            "retention": {"keep_days": 90},
        }, indent=2),
        "```",
        "",
        "| key | takes | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, expected, default, meaning in _rows(Settings, ""):
        lines.append(f"| `{key}` | {expected} | `{default}` | {meaning} |")
    lines += ["", "`require_verified` at the top level (the old spelling) is read as `consent.require_verified`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(document())
