"""Files: which are secrets as a whole, which are worth diffing, and credential formats read by their shape.

- ``is_secret_file``: keys, keystores, password stores, browser credential
  databases, ``shadow``, ``.netrc``, mail relays' password maps (postfix
  ``sasl_passwd``, exim ``passwd.client``), OpenVPN ``auth-user-pass``
  files… get hashes only, never a diff.
- ``profile_of``: a file whose format says that *values* are secrets even
  under neutral key names: ``.env`` files (``VALUE_1=<token>``), judged by
  the value's shape and entropy.
- ``credentials_in``: the passwords of the secret formats, read so that a
  Redactor can remember them (``learn``) without the file ever being
  diffed: when the technician later types one, it is hidden.
"""

from __future__ import annotations

import re
from pathlib import PurePath, PurePosixPath, PureWindowsPath

from agent.redact.spans import Span
from agent.redact.tokens import entropy

_SECRET_NAMES = frozenset({
    ".netrc", "_netrc", ".pgpass", ".git-credentials", ".my.cnf.secret", ".htpasswd", "htpasswd",
    "shadow", "gshadow", "shadow-", "gshadow-", "opasswd", "chap-secrets", "pap-secrets",
    "login data", "login data for account", "web data", "cookies", "local state", "logins.json",
    "key3.db", "key4.db", "cookies.sqlite", "signons.sqlite", "logins-backup.json",
    "credentials", "credentials.json", "credentials.db", "access_tokens.db", "accesstokens.json",
    "application_default_credentials.json", "msal_token_cache.json", "msal_token_cache.bin",
    "service_principal_entries.json", "sasl_passwd", "sasl_passwd.db", "sasl_password", "relay_passwd",
    "passwd.client", "smtp_auth", "secring.gpg", "identity", "keystore", ".keystore",
    "secrets.yml.key", "master.key", "credentials.yml.enc", "vault-token", ".vault-token",
    "auth-user-pass", "userpass", "userpass.txt", "ipsec.secrets", "cifs-credentials", ".smbcredentials",
    "smbcredentials", "davfs2-secrets", "secrets", ".pypirc", ".s3cfg-secret",
})
_SECRET_SUFFIXES = (
    ".pem", ".key", ".p12", ".pfx", ".ppk", ".kdbx", ".kdb", ".keytab", ".jks", ".keystore",
    ".keyring", ".kwl", ".keychain", ".keychain-db", ".gpg", ".pgp", ".psafe3", ".p8", ".der",
    ".asc.key", ".age", ".credentials", ".creds", ".secret", ".secrets",
)
_SECRET_DIRS = ("private-keys-v1.d", "keyrings", "legacy_credentials", ".password-store", "ssl/private", "kwalletd")
# OpenVPN keeps auth-user-pass files beside its configurations, under any name:
# in its folders, anything that is not a configuration, a certificate or a script.
_OPENVPN_DIRS = ("openvpn", "openvpn/client", "openvpn/server")
_OPENVPN_PUBLIC = (".conf", ".ovpn", ".crt", ".cer", ".csr", ".sh", ".up", ".down", ".log", ".status", ".txt.sample")
_OPENVPN_SECRET_NAMES = re.compile(
    r"(?:.*[._-])?(?:auth|pass|passwd|password|login|creds?|credentials|userpass|secret)(?:[._-].*)?"
)


def _path(path: str) -> PurePath:
    windows = "\\" in path and "/" not in path
    return PureWindowsPath(path) if windows else PurePosixPath(path)


def is_secret_file(path: str) -> bool:
    """Whether the file is a secret as a whole: record its hashes, never its content."""
    p = _path(path)
    name = p.name.lower()
    if name.startswith("id_") and not name.endswith(".pub"):
        return True
    if re.fullmatch(r"ssh_host_\w+_key", name):
        return True
    if name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES):
        return True
    if name.startswith("client_secret") and name.endswith(".json"):
        return True
    parts = [part.lower() for part in p.parts]
    joined = "/".join(parts)
    if any(f"/{d}/" in f"/{joined}" for d in _SECRET_DIRS):
        return True
    folder = "/".join(parts[-3:-1])
    in_openvpn = any(folder.endswith(d) for d in _OPENVPN_DIRS)
    return in_openvpn and not name.endswith(_OPENVPN_PUBLIC) and _OPENVPN_SECRET_NAMES.fullmatch(name) is not None


_NOT_CONFIG = (
    ".log", ".csv", ".tsv", ".md", ".rst", ".html", ".htm", ".svg", ".map", ".min.js", ".min.css",
    ".sqlite", ".db", ".journal", ".pyc", ".lock", ".sum", ".po", ".mo",
)


def is_text_config(path: str, sample: bytes) -> bool:
    """Whether a file is worth diffing: UTF-8 text without NULs that looks like configuration."""
    if b"\0" in sample or is_secret_file(path):
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3 or exc.reason != "unexpected end of data":
            return False  # not just a character cut at the end of the sample
    name = re.split(r"[/\\]", path)[-1].lower()
    if name.endswith(_NOT_CONFIG) or re.search(r"\.log\.\d+$", name):
        return False
    return all(len(line) <= 10_000 for line in sample.split(b"\n"))


# -- .env files: values are judged by their shape, whatever the key's name -------------

_ENV_NAME = re.compile(r"(?:\.env|\.env\..+|.+\.env|env\.(?:local|production|development|staging|test))")
_ENV_LINE = re.compile(r"""[ \t]*(?:export[ \t]+)?[A-Za-z_][\w.-]*[ \t]*=[ \t]*(["']?)(.*?)\1[ \t]*(?:[ \t]#.*)?$""")
_NOT_A_SECRET = re.compile(
    r"-?\d+(?:\.\d+)*[a-z]{0,2}"                      # numbers, versions, 30s, 10MB
    r"|(?i:true|false|yes|no|on|off|null|none|debug|info|warn|warning|error|local|production|development|staging|test)"
    r"|[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*\.[a-z]{2,}(?::\d+)?"    # host names
    r"|(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?|\[?[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}\]?(?::\d+)?"  # addresses
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"                   # e-mail addresses
    r"|[A-Za-z][A-Za-z_]*(?:/[A-Za-z_]+)+"             # Europe/Berlin, text/html
    r"|[a-z]+(?:[_ -][a-z]+)*"                          # words in lower case
    r"|[A-Z][a-z]+(?: [A-Z]?[a-z]+)*"                   # Words Like This
    r"|[a-z][\w+.-]*://[^\s:@/]+(?::\d+)?(?:/\S*)?"     # a URL without credentials
    r"|[~.]?/\S*|\$\{?\w+\}?"                           # paths, references
)


def profile_of(path: str | None) -> str | None:
    """``"env"`` for .env files (values judged by shape), else None."""
    if not path:
        return None
    name = _path(path).name.lower()
    return "env" if _ENV_NAME.fullmatch(name) else None


def env_value_looks_secret(value: str) -> bool:
    """In a .env file: a value that is not a number, switch, host, address, e-mail, word, URL or path."""
    if len(value) < 8 or _NOT_A_SECRET.fullmatch(value):
        return False
    letters, digits = re.search(r"[A-Za-z]", value), re.search(r"\d", value)
    return bool(letters and digits) or entropy(value) >= 3.0 or len(value) >= 16


def env_spans(line: str) -> list[Span]:
    m = _ENV_LINE.match(line)
    if not m or not m.group(2) or not env_value_looks_secret(m.group(2)):
        return []
    return [(m.start(2), m.end(2))]


# -- passwords of the secret formats, for learning ----------------------------------

_COLON_FIELDS = {  # file name -> the field (0-based, ":"-separated) that holds the password
    "passwd.client": 2,   # exim: host:user:password
    ".pgpass": 4,         # host:port:db:user:password
    "chap-secrets": None, "pap-secrets": None,  # client server secret IP (white space)
}
_SASL = frozenset({"sasl_passwd", "sasl_password", "relay_passwd", "smtp_auth"})
_NETRC = frozenset({".netrc", "_netrc"})
_NETRC_PASSWORD = re.compile(r"\b(?:password|passwd)[ \t]+(\S+)")
_URL_PASSWORD = re.compile(r"://[^\s:/@]*:([^\s@/]+)@")


def credentials_in(path: str, text: str) -> list[str]:
    """The passwords a secret file holds, when its format is known (for ``Redactor.learn``)."""
    name = _path(path).name.lower()
    found: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if name in ("passwd.client", ".pgpass"):
            fields = line.split(":")
            at = _COLON_FIELDS[name]
            if at is not None and len(fields) > at:
                found.append(":".join(fields[at:]))
        elif name in ("chap-secrets", "pap-secrets"):
            fields = line.split()
            if len(fields) >= 3:
                found.append(fields[2].strip("\"'"))
        elif name in _SASL:
            fields = line.split(None, 1)
            if len(fields) == 2 and ":" in fields[1]:
                found.append(fields[1].split(":", 1)[1])
        elif name in _NETRC:
            found += _NETRC_PASSWORD.findall(line)
        elif name == ".git-credentials":
            found += _URL_PASSWORD.findall(line)
        elif name in ("htpasswd", ".htpasswd", "shadow", "gshadow"):
            continue  # hashes, not passwords a technician could type
    if is_secret_file(path) and not found and name not in ("shadow", "gshadow", "htpasswd", ".htpasswd"):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(lines) == 2 and all(" " not in ln for ln in lines):
            found.append(lines[1])  # an OpenVPN auth-user-pass file: user, then password
    return found
