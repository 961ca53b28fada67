"""Which key names hold secrets, and which values cannot be secrets even under such a key.

The rules err towards hiding: a leaked password is worse than an unreadable
line. The only values of secret-named keys left visible are ones that cannot
be secrets: file paths (``/etc/ssl/private/site.key``, ``$dir/ca.pem``) and
file names with a key's or configuration's extension (``server.key``),
whole-value variable references (``${DB_PASSWORD}``, ``{{ vault_pw }}``,
``$(command)``), printf placeholders (``%a``), ``<placeholders>``, a key's
own name in lower case (``key: password`` in a Kubernetes secretKeyRef),
YAML block indicators, single digits, switches (``yes``, ``disabled``) and
markers already in place; and keys whose
name says they hold something *about* a secret (``PasswordAuthentication``,
``max_password_age``, ``key_size``).
"""

from __future__ import annotations

import functools
import re

from agent.redact.spans import MARKER_RE_TEXT

_SECRET_SUBSTRINGS = (
    "password", "passwd", "passphrase", "secret", "token", "apikey",
    "credential", "privatekey", "accesskey", "secretkey", "authkey",
    "signingkey", "encryptionkey", "masterkey", "accountkey", "sharedkey",
    "licensekey", "sessionkey", "clientkey", "hmackey", "appkey",
)
_SECRET_SEGMENTS = frozenset({
    "key", "pass", "pw", "pwd", "psk", "auth", "authorization", "cookie",
    "cookies", "sig", "signature", "salt", "bearer", "jwt", "otp", "private",
    "creds", "passin", "passout", "sas", "dsn",
})
_NOT_PASS = frozenset({"bypass", "compass", "encompass", "surpass", "overpass", "underpass", "trespass", "preauth"})
_NOT_SECRET_NAMES = frozenset({"nmtoken", "nmtokens"})  # XML DTD types
# A key whose last word is one of these holds something *about* a secret.
_META_LAST = frozenset({
    "length", "len", "size", "bits", "type", "types", "file", "files", "path",
    "paths", "dir", "directory", "format", "algorithm", "algorithms", "alg",
    "policy", "expiry", "expiration", "expires", "expire", "ttl", "timeout",
    "lifetime", "age", "count", "min", "max", "minimum", "maximum", "enabled",
    "enable", "disable", "disabled", "required", "require", "prompt", "mode",
    "method", "methods", "authentication", "name", "url", "uri", "endpoint",
    "helper", "command", "cmd", "env", "provider", "strength", "complexity",
    "hint", "retries", "attempts", "location", "flags", "header", "label",
    "validity", "days", "interval", "regex", "pattern", "quality", "history",
    "chars", "server", "servers", "host", "port", "backend", "store", "cache", "stdin", "sock", "socket",
    "check", "checking", "scheme", "schemes", "usage", "identifier", "encryption", "mgmt", "management",
    "limit", "limits", "filter", "config", "conf", "hashes",
})
_META_FIRST = frozenset({
    "permit", "allow", "max", "min", "num", "no", "without", "ask", "prompt", "require", "is", "has", "use",
    "prevent", "handle", "meta",
})
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def segments(name: str) -> list[str]:
    """The words of a key name, lower case: ``dbPassword_2`` -> ``['db', 'password', '2']``."""
    return [m.group(0).lower() for part in _SPLIT.split(name) for m in _CAMEL.finditer(part)]


@functools.lru_cache(maxsize=8192)
def is_secret_key(name: str) -> bool:
    """Whether a key, option or header of this name holds a secret value."""
    segs = segments(name)
    if not segs:
        return False
    compact = "".join(segs)
    if compact in _NOT_SECRET_NAMES:
        return False
    secret = any(s in compact for s in _SECRET_SUBSTRINGS) or any(
        s in _SECRET_SEGMENTS
        or (s.endswith(("pass", "pwd", "pw", "auth")) and s not in _NOT_PASS)
        for s in segs
    )
    if not secret:
        return False
    meta = (segs[-1] in _META_LAST or segs[0] in _META_FIRST) and len(segs) > 1
    return not meta


# Values that cannot be secrets even under a secret-named key.
HARMLESS_VALUE = re.compile(
    r"(?:~|\.\.?|\$\w+|\$\{\w+\})?/[\w.@+-]+(?:/[\w.@+-]+)+/?;?"  # a file path ($dir/private/ca.pem too)
    # a file name with a key's or a configuration's extension (openssl -key server.key)
    r"|[A-Za-z][\w.-]*\.(?:key|pem|crt|cer|der|csr|p12|pfx|jks|keystore|kdbx|gpg|asc|pub|json|conf|cfg|ini|ya?ml|txt)"
    r"|password|passwd|secret|token|key|api[_-]?key|private[_-]?key|client[_-]?secret|credentials"  # a key's name
    r"|\$\{[A-Za-z_]\w*\}"                       # ${VAR}
    r"|\{\{\s*[\w.]+\s*\}\}"                     # {{ var }}
    r"|\$[A-Za-z_][\w]*(?:::\w+)?"                # $VAR, $section::name (openssl.cnf)
    r"|\$\([^()]*\)|`[^`]*`"                      # a command substitution: computed, not written here
    r"|%[-#+ 0-9.]*[a-zA-Z]|%\(\w+\)[sd]|\{\d*\}"  # printf-style placeholders (%a, %(pw)s, {0})
    r"|<[\w-]+>"                                   # <keystore-password>: a placeholder
    r"|\d"                                        # a single digit: a count or a switch
    r"|[|>][-+]?\d?|[|>]\d[-+]"                  # a YAML block indicator
    r"|(?i:on|off|yes|no|true|false|none|null|enabled|disabled)[;,]?"  # a switch, not a secret
    r"|\d{1,5}/(?:tcp|udp|sctp|ddp)"              # a port (/etc/services)
    r"|(?:(?:files|systemd|compat|sss|ldap|nis|nisplus|db|dns|winbind|mymachines|myhostname|resolve|usrfiles"
    r"|altfiles|cache|extrausers|wins|mdns4?(?:_minimal)?|hesiod|\[[!A-Za-z= ]+\])[ \t]*)+"  # nsswitch sources
    r"|" + MARKER_RE_TEXT
)


_TRAILING_COMMENT = re.compile(r"(?:\s+|(?<=\.pem)|(?<=\.key)|(?<=\.crt))#.*$")


def harmless(value: str) -> bool:
    """Whether a value cannot be a secret (see ``HARMLESS_VALUE``); a trailing ``# comment`` is not part of it."""
    value = value.strip()
    if not value or HARMLESS_VALUE.fullmatch(value) is not None:
        return True
    bare = _TRAILING_COMMENT.sub("", value).strip()
    return bare != value and bool(bare) and HARMLESS_VALUE.fullmatch(bare) is not None
