"""SSH authorized_keys: a pure parser. Items name a key by fingerprint, never by its raw line."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from agent.redact import redact_line
from agent.sshkeys import fingerprint

KEY_TYPE = re.compile(
    r"(?:ssh-(?:rsa|dss|ed25519|ed448|xmss@openssh\.com)|ecdsa-sha2-nistp\d+"
    r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com|[\w.@-]+-cert-v01@openssh\.com|x509v3-[\w.@-]+)"
)
_WORD = re.compile(r'(?:[^\s"]|"(?:[^"\\]|\\.)*"?)+')


def _key(type_: str, data: str) -> str | None:
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return fingerprint(blob) if blob else None


def parse_authorized_keys(text: str) -> list[dict]:
    """Keys: type, fingerprint (``SHA256:…``), options and comment (secrets redacted).

    A line that is not a comment but not a key either is kept as type
    ``unrecognised`` with a hash of the line, so that it still shows up.
    """
    keys = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = [m.group(0) for m in _WORD.finditer(line)]
        options = ""
        if words and not KEY_TYPE.fullmatch(words[0]):
            options, words = words[0], words[1:]
        fp = _key(words[0], words[1]) if len(words) >= 2 and KEY_TYPE.fullmatch(words[0]) else None
        if fp is None:
            digest = hashlib.sha256(line.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            keys.append({"type": "unrecognised", "fingerprint": f"line-sha256:{digest}", "options": "", "comment": ""})
            continue
        keys.append({
            "type": words[0],
            "fingerprint": fp,
            "options": redact_line(options),
            "comment": redact_line(" ".join(words[2:])),
        })
    return keys


DEFAULT_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")


def parse_authorized_keys_files(sshd_config: str) -> list[str]:
    """Every ``AuthorizedKeysFile`` pattern in an sshd_config text (in any Match block), or the defaults."""
    patterns: list[str] = []
    for raw in sshd_config.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0].lower() == "authorizedkeysfile":
            patterns.extend(w for w in words[1:] if w.lower() != "none")
    return list(dict.fromkeys(patterns or DEFAULT_FILES))


def expand_keys_file(pattern: str, user: str, home: str, uid: int | None = None) -> str:
    """A pattern with ``%h``, ``%u``, ``%U`` and ``%%`` expanded; relative paths are under the home."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern):
            out.append({"h": home, "u": user, "U": "" if uid is None else str(uid), "%": "%"}.get(pattern[i + 1], ""))
            i += 2
            continue
        out.append(pattern[i])
        i += 1
    path = "".join(out)
    if path.startswith("~/"):
        path = home.rstrip("/") + path[1:]
    return path if path.startswith("/") else home.rstrip("/") + "/" + path
