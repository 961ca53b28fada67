"""Redaction: hide secrets in configuration text, diffs and command lines.

Pure functions. A hidden value is replaced by a marker that shows *that* it
changed without revealing it: ``[redacted: sha256 1a2b3c4d]``, the first 8
hex digits of an HMAC-SHA256 of the value under a random key made when the
process starts and never stored. Within one run of the agent the same secret
always gets the same marker (so a diff shows whether it changed, and the
same password in two files is visible as such), but a marker cannot be used
to test guesses of the secret offline, as a bare hash of a weak password could.

How it works: independent rules each find the spans of a line that hold a
secret (values of secret-named keys in any common syntax, known token
formats, URL credentials, Authorization headers, PEM bodies, password
hashes, long high-entropy strings, secret options of known programs). The
spans are merged and every merged span becomes one marker, so the text
around a secret stays exactly as it was. ``redact_text`` adds the few
constructs that span lines (PEM and PuTTY keys, YAML block scalars,
multi-line quoted strings, XML elements).

The rules err towards hiding: a leaked password is worse than an unreadable
line. The only values of secret-named keys left visible are ones that cannot
be secrets: file paths (``/etc/ssl/private/site.key``), whole-value variable
references (``${DB_PASSWORD}``, ``{{ vault_pw }}``), YAML block indicators
and markers already in place; and keys whose name says they hold something
*about* a secret (``PasswordAuthentication``, ``max_password_age``,
``key_size``).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import hmac
import math
import re
import secrets
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import PurePath, PurePosixPath, PureWindowsPath

MARKER_RE = re.compile(r"\[redacted: sha256 [0-9a-f]{8}\]")
MAX_LINE = 100_000  # longer lines are hidden whole rather than scanned
MAX_ARGS = 256  # words of a shell line read as one command's arguments

Span = tuple[int, int]


_MARKER_KEY = secrets.token_bytes(32)


def marker(value: str) -> str:
    """The marker that stands for ``value`` (keyed; see the module's docstring)."""
    digest = hmac.new(_MARKER_KEY, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"[redacted: sha256 {digest[:8]}]"


# --------------------------------------------------------------------------
# Which key names hold secrets


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
    "check", "checking", "scheme", "schemes", "usage", "identifier", "encryption",
})
_META_FIRST = frozenset({
    "permit", "allow", "max", "min", "num", "no", "without", "ask", "prompt", "require", "is", "has", "use",
    "prevent", "handle", "meta",
})
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _segments(name: str) -> list[str]:
    return [m.group(0).lower() for part in re.split(r"[^A-Za-z0-9]+", name) for m in _CAMEL.finditer(part)]


@functools.lru_cache(maxsize=8192)
def is_secret_key(name: str) -> bool:
    """Whether a key, option or header of this name holds a secret value."""
    segs = _segments(name)
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
_HARMLESS_VALUE = re.compile(
    r"(?:~|\.\.?)?/[\w.@+-]+(?:/[\w.@+-]+)+/?"  # a file path
    r"|\$\{[A-Za-z_]\w*\}"                       # ${VAR}
    r"|\{\{\s*[\w.]+\s*\}\}"                     # {{ var }}
    r"|[|>][-+]?\d?|[|>]\d[-+]"                  # a YAML block indicator
    r"|(?i:on|off|yes|no|true|false|none|null|enabled|disabled)[;,]?"  # a switch, not a secret
    r"|\d{1,5}/(?:tcp|udp|sctp|ddp)"              # a port (/etc/services)
    r"|(?:(?:files|systemd|compat|sss|ldap|nis|nisplus|db|dns|winbind|mymachines|myhostname|resolve|usrfiles"
    r"|altfiles|cache|extrausers|wins|mdns4?(?:_minimal)?|hesiod|\[[!A-Za-z= ]+\])[ \t]*)+"  # nsswitch sources
    r"|" + MARKER_RE.pattern
)


def _harmless(value: str) -> bool:
    value = value.strip()
    return not value or _HARMLESS_VALUE.fullmatch(value) is not None


# --------------------------------------------------------------------------
# Multi-line state: what a line leaves open for the next ones


@dataclass(frozen=True)
class _Open:
    """A secret that continues on the following lines."""

    kind: str  # quote | triple | yaml | xml | next-element | pem | putty
    until: str = ""  # the closing quote, delimiter or tag
    indent: int = 0  # yaml: lines indented deeper belong to the block
    lines: int = 0  # lines hidden so far


# An unclosed quote or tag stops hiding after this many lines: no real secret is
# longer, and a stray quote must not hide the rest of a file.
MAX_OPEN_LINES = 200


# --------------------------------------------------------------------------
# Line rules: each returns spans of the line to hide


_STMT = re.compile(
    r"[ \t]*(?:(?:[#;]+|//)[ \t]*)?"
    r"(?:(?:export|set|setenv|declare(?:[ \t]+-\w+)*|local|readonly|typeset|env)[ \t]+)?"
    r"(?:-[ \t]+)?[$@]?"
)
_KEY = re.compile(r"(?<![\w.-])-{0,2}[A-Za-z_][\w.-]*")
_KEY_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9_. \t-]*")  # "Database Password = …": a key of several words
# Secret words that may stand before their value with only a space between, after
# another such pair (``machine h login bob password abc`` in a netrc-style line).
_BARE_SECRET_WORDS = frozenset({"password", "passphrase", "secret", "token", "apikey"})
_NETRC_BEFORE = re.compile(r"\b(?:machine|login|user|username|account)[ \t]+\S+[ \t]+")
_EMBEDDED_END = re.compile(r"""[\s;&,)}\]>"'<|]""")
_CALL_ARGUMENT = re.compile(r"[ \t]*,[ \t]*(?=[\"'])")
_TRAILER = re.compile(r"[ \t]*[,;]?[ \t]*(?:(?:#|//).*)?$")
_DIRECTIVE_TAIL = re.compile(r"[ \t]*(?:#.*)?$")
_NON_SPACE = re.compile(r"\S+")
_SECTION = re.compile(r"""[ \t]*\[[\w .-]+(?:[ \t]+"[^"]*")?\][ \t]*(?:[#;].*)?$""")
_COMMENT = re.compile(r"[ \t]*(?:[#;]|//)")


def _close_quote(line: str, start: int, q: str) -> int:
    """Index of the quote closing one opened just before ``start``, or -1."""
    i = start
    while i < len(line):
        c = line[i]
        if c == "\\" and q != "'":
            i += 2
            continue
        if c == q:
            return i
        i += 1
    return -1


def _kv_spans(line: str) -> tuple[list[Span], _Open | None]:
    """Values of secret-named keys: ``k=v``, ``k: v``, ``"k": "v"``, ``k v``, ``--k v``."""
    spans: list[Span] = []
    opened: _Open | None = None
    if _SECTION.match(line):
        return [], None  # [credential "https://host"]: an INI section names, it holds nothing
    stmt_end = _STMT.match(line).end()
    comment = _COMMENT.match(line) is not None
    netrc = _NETRC_BEFORE.search(line)
    netrc_from = netrc.end() if netrc else None
    words = _KEY_WORDS.match(line, stmt_end)
    words_end = words.end() if words else stmt_end
    n = len(line)
    for m in _KEY.finditer(line):
        token = m.group(0).rstrip(".-")
        start, pos = m.start(), m.start() + len(token)
        name = token.lstrip("-")
        dashed = token.startswith("-")
        if not name or not is_secret_key(name) or _segments(name)[-1] == "authorization":
            continue
        if line.endswith("://", 0, start):
            continue  # a URL's user name; the URL rule judges it
        if line.endswith(("<", "</"), 0, start):
            continue  # an XML tag; the XML rule judges it
        quoted_key = start > 0 and line[start - 1] in "\"'" and pos < n and line[pos] == line[start - 1]
        if quoted_key:
            pos += 1
        at_stmt = start == stmt_end or (start == stmt_end + 1 and line[stmt_end] in "\"'")
        several_words = (  # "Database Password = …"; only with an explicit separator, below
            stmt_end < start <= words_end and line[start - 1] in " \t" and line.count(" ", stmt_end, start) <= 3
        )
        p = pos
        while p < n and line[p] in " \t":
            p += 1
        in_call = quoted_key and line[max(0, start - 40) : start - 1].rstrip().endswith("(")
        call = _CALL_ARGUMENT.match(line, pos) if in_call else None
        if call:  # define('DB_PASSWORD', 'value'), config.set("token", "value")
            p, sep_is_space = call.end(), False
        elif line.startswith(("=>", ":="), p):
            p, sep_is_space = p + 2, False
        elif p < n and line[p] in "=:" and not line.startswith("://", p):
            p, sep_is_space = p + 1, False
        elif p > pos:
            sep_is_space = True
        else:
            continue
        while p < n and line[p] in " \t":
            p += 1
        if p >= n:
            continue
        at_stmt = at_stmt or (several_words and not sep_is_space)
        c = line[p]
        if line.startswith(('"""', "'''"), p):
            end = line.find(line[p : p + 3], p + 3)
            if end < 0:
                spans.append((p + 3, n))
                opened = opened or _Open("triple", line[p : p + 3])
            else:
                spans.append((p + 3, end))
            continue
        if c in "\"'`":
            end = _close_quote(line, p + 1, c)
            if name.lower() in _NAMING_ATTRS and end > 0 and _is_identifier(line[p + 1 : end]):
                if line.rfind("<", 0, start) > line.rfind(">", 0, start):
                    continue  # key="DbPassword" in a tag names a setting; the value="…" beside it is judged by that name
            if end < 0:
                spans.append((p + 1, n))
                opened = opened or _Open("quote", c)
            elif at_stmt and not _TRAILER.match(line, end + 1):
                spans.append((p, len(line.rstrip())))
            elif not _harmless(line[p + 1 : end]):
                spans.append((p + 1, end))
            continue
        bare = sep_is_space and not (dashed or at_stmt)
        if bare and (name.lower() not in _BARE_SECRET_WORDS or comment or netrc_from is None or netrc_from > start):
            continue  # prose ("# the password expires", "SET PASSWORD FOR"), not "login bob password pw"
        if sep_is_space and c == "-" and (dashed or bare):
            continue  # "--no-password -h host": the next word is another option
        if at_stmt and not sep_is_space and not quoted_key:
            end = len(line.rstrip())
        elif at_stmt and sep_is_space and not dashed:
            word = _NON_SPACE.match(line, p)
            if not _DIRECTIVE_TAIL.match(line, word.end()):
                continue  # "password required pam_unix.so": a list of words, not a value
            end = word.end()
        else:
            stop = _EMBEDDED_END.search(line, p)
            end = stop.start() if stop else n
        if end > p and not _harmless(line[p:end]):
            spans.append((p, end))
    return spans, opened


_AUTH_HEADER = re.compile(
    r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:basic|bearer|digest|token|negotiate|ntlm|aws4-hmac-sha256|sharedkey|ssws|apikey|key)[ \t]+)?"
)


def _auth_header_spans(line: str) -> list[Span]:
    """Credentials of Authorization headers; the scheme (Basic, Bearer…) stays readable."""
    spans = []
    for m in _AUTH_HEADER.finditer(line):
        before = line[m.start() - 1] if m.start() > 0 else ""
        if before in ("'", '"'):  # inside a quoted argument: up to its closing quote
            end = line.find(before, m.end())
            end = len(line) if end < 0 else end
        else:
            end = len(line.rstrip())
        spans.append((m.end(), end))
    return spans


# Known token formats: (what, regex); group 1 is the secret when present.
TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (what, re.compile(rx))
    for what, rx in (
        ("AWS access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"),
        ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
        ("GitHub fine-grained token", r"\bgithub_pat_[A-Za-z0-9_]{22,}"),
        ("GitLab token", r"\bgl(?:pat|dt|rt|ptt|cbt|oas|ft|imt|soat|agent)-[A-Za-z0-9_-]{20,}"),
        ("GitLab runner token", r"\bGR1348941[A-Za-z0-9_-]{20,}"),
        ("Slack token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
        ("Slack app token", r"\bxapp-\d-[A-Za-z0-9-]{10,}"),
        ("Slack webhook", r"hooks\.slack\.com/(?:services|workflows)/([A-Za-z0-9/_-]+)"),
        ("Discord webhook", r"discord(?:app)?\.com/api/webhooks/([0-9]+/[A-Za-z0-9_-]+)"),
        ("Stripe key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"),
        ("Stripe webhook secret", r"\bwhsec_[A-Za-z0-9]{20,}"),
        ("SendGrid key", r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),
        ("Twilio API key", r"\bSK[0-9a-fA-F]{32}\b"),
        ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
        ("PyPI token", r"\bpypi-[A-Za-z0-9_-]{50,}"),
        ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}"),
        ("Google OAuth client secret", r"\bGOCSPX-[A-Za-z0-9_-]{20,}"),
        ("Google OAuth access token", r"\bya29\.[A-Za-z0-9_-]{20,}"),
        ("Google OAuth refresh token", r"\b1//0[A-Za-z0-9_-]{30,}"),
        ("Heroku API key", r"\bHRKU-[A-Za-z0-9_-]{20,}"),
        ("OpenAI key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        ("Anthropic key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
        ("Mailgun key", r"\bkey-[0-9a-f]{32}\b"),
        ("Mailchimp key", r"\b[0-9a-f]{32}-us\d{1,2}\b"),
        ("DigitalOcean token", r"\bdo[opr]_v1_[a-f0-9]{64}\b"),
        ("Shopify token", r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b"),
        ("Atlassian token", r"\bATATT3[A-Za-z0-9_=-]{20,}"),
        ("Vault token", r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"),
        ("Terraform Cloud token", r"\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_-]{40,}"),
        ("Databricks token", r"\bdapi[0-9a-f]{32}\b"),
        ("New Relic key", r"\bNRAK-[A-Z0-9]{27}\b"),
        ("Telegram bot token", r"(?<!\d)\d{8,10}:AA[A-Za-z0-9_-]{33}\b"),
        ("Square token", r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{22,}"),
        ("Linear key", r"\blin_api_[A-Za-z0-9]{40}\b"),
        ("Grafana token", r"\bgl(?:c|sa)_[A-Za-z0-9+/_=-]{32,}"),
        ("Postman key", r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b"),
        ("age secret key", r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b"),
        ("Azure storage key", r"\b[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"),
        ("JWT", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        ("Bearer token", r"\b[Bb]earer[ \t]+([A-Za-z0-9._~+/=-]{8,})"),
        ("Basic credentials", r"\bBasic[ \t]+(?![A-Z]?[a-z]+\b)([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])"),
        ("SQL password", r"(?i:\b(?:identified(?:\s+with\s+\S+)?\s+by(?:\s+password)?|password\s*\())\s*'((?:[^'\\]|\\.|'')*)'"),
        ("password hash", r"\$(?:1|2[abxy]?|5|6|7|y|gy|sha1|md5|apr1|argon2(?:id|i|d)|pbkdf2(?:-sha\d+)?|scrypt)\$[./A-Za-z0-9$=,+-]{8,}"),
        ("LDAP password hash", r"\{(?:SSHA|SHA|SMD5|MD5|CRYPT|SSHA256|SSHA512|PBKDF2[\w-]*|ARGON2)\}[A-Za-z0-9+/=.$-]{8,}"),
        ("GRUB password hash", r"\bgrub\.pbkdf2\.sha512\.\d+\.[0-9A-Fa-f.]+"),
        ("PEM block inline", r"(?:-----BEGIN [A-Z0-9 ]+?-----|---- BEGIN [A-Z0-9 ]+? ----)(.+?)(?=-----END |---- END |$)"),
    )
)

_URL_USERINFO = re.compile(r"\b[A-Za-z][\w+.-]*://([^\s:/@\"'<>]*):([^\s@/\"'<>]*)@")
_URL_TOKEN_USER = re.compile(r"\b[A-Za-z][\w+.-]*://([A-Za-z0-9_.~-]{20,})@")
_LONG_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{40,}={0,2}(?![\w+/=-])")
_SSH_PUBKEY_BEFORE = re.compile(r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+@openssh\.com|\S+-cert-v01@openssh\.com)[ \t]+$")


# One pass finds whether any known format occurs at all (most lines hold none).
_ANY_TOKEN = re.compile("|".join(f"(?:{rx.pattern})" for _, rx in TOKEN_PATTERNS))


def _token_spans(line: str) -> list[Span]:
    spans = []
    for _what, rx in TOKEN_PATTERNS if _ANY_TOKEN.search(line) else ():
        for m in rx.finditer(line):
            g = 1 if rx.groups else 0
            if m.start(g) >= 0 and m.end(g) > m.start(g):
                spans.append((m.start(g), m.end(g)))
    for m in _URL_USERINFO.finditer(line):
        if m.end(2) > m.start(2):
            spans.append((m.start(2), m.end(2)))
    for m in _URL_TOKEN_USER.finditer(line):
        spans.append((m.start(1), m.end(1)))
    return spans


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def _high_entropy_spans(line: str) -> list[Span]:
    """Long random-looking strings (keys, secrets) that no other rule named."""
    spans = []
    for m in _LONG_TOKEN.finditer(line):
        word_start = max(line.rfind(" ", 0, m.start()), line.rfind("\t", 0, m.start())) + 1
        if "://" in line[word_start : m.start()]:  # in a URL: judge each path segment alone
            pieces, offset = [], m.start()
            for piece in m.group(0).split("/"):
                pieces.append((offset, piece))
                offset += len(piece) + 1
        else:
            pieces = [(m.start(), m.group(0))]
        for start, s in pieces:
            if _looks_random(s) and not _SSH_PUBKEY_BEFORE.search(line[max(0, start - 120) : start]):
                spans.append((start, start + len(s)))
    return spans


_WORD_SHAPE = re.compile(r"[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")


def _looks_random(s: str) -> bool:
    if len(s) < 40 or not (re.search(r"[A-Z]", s) and re.search(r"[a-z]", s) and re.search(r"\d", s)):
        return False
    if s.startswith("/") or s.count("/") * 12 > len(s) or s.count("-") * 8 > len(s):
        return False  # a path or a slug
    pieces = [p for p in re.split(r"[_./+-]", s) if p]
    if len(pieces) >= 3 and sum(bool(_WORD_SHAPE.fullmatch(p)) for p in pieces) * 4 >= len(pieces) * 3:
        return False  # Words_Joined_Like_This_CA_2: a name, not a key
    return _entropy(s) >= 4.0


_ELEMENT = re.compile(
    r"<([A-Za-z_][\w.:-]*)((?:\s[^<>]*?)?)(/?)>((?:<!\[CDATA\[.*?\]\]>|[^<])*)(</\1\s*>)?"
)
_ATTR = re.compile(r"""([\w.:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_NAMING_ATTRS = frozenset({"key", "name", "id", "property", "param", "parameter", "setting"})
_NEXT_ELEMENT = re.compile(r"<([A-Za-z_][\w.:-]*)(?:\s[^<>]*)?>((?:<!\[CDATA\[.*?\]\]>|[^<])*)")


def _is_identifier(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z][\w. -]{0,63}", text) is not None and (
        not re.search(r"\d", text) or len(text) <= 20
    )


def _value_attr_spans(element: re.Match) -> list[Span]:
    """The ``value="…"`` (or ``content``, ``val``) attribute of an element."""
    spans = []
    for a in _ATTR.finditer(element.group(2)):
        if a.group(1).lower() in ("value", "content", "val"):
            g = 2 if a.group(2) is not None else 3
            if a.group(g) and not _harmless(a.group(g)):
                spans.append((element.start(2) + a.start(g), element.start(2) + a.end(g)))
    return spans


def _xml_spans(line: str) -> tuple[list[Span], _Open | None]:
    """Secret elements, ``<add key="Password" value="…"/>`` and ``<name>password</name><value>…``."""
    spans: list[Span] = []
    opened: _Open | None = None
    for m in _ELEMENT.finditer(line):
        tag, attrs, selfclosing, text, close = m.groups()
        local = tag.rsplit(":", 1)[-1]
        text_span = (m.start(4), m.end(4))
        if local.lower() in ("key", "name") and not selfclosing:
            inner = text.strip()
            if inner and is_secret_key(inner) and close:
                nxt = _NEXT_ELEMENT.search(line, m.end())
                if nxt:
                    if not _harmless(nxt.group(2)):
                        spans.append((nxt.start(2), nxt.end(2)))
                else:
                    opened = opened or _Open("next-element")
            if local.lower() == "key" and _is_identifier(inner):
                continue  # a plist key names a value; it is not one
        if is_secret_key(local) and not (local.lower() == "key" and not close and text.strip()):
            # (an unclosed <Key>q: Quit() is an X resources key binding)
            spans.extend(_value_attr_spans(m))  # <Password value="…"/>
            if selfclosing:
                continue
            if text.strip() and not _harmless(text):
                spans.append(text_span)
            if not close and m.end(4) == len(line) and line.lstrip().startswith("<"):
                opened = opened or _Open("xml", tag)
            continue
        names_secret = any(
            a.group(1).lower() in _NAMING_ATTRS and is_secret_key(a.group(2) or a.group(3) or "")
            for a in _ATTR.finditer(attrs)
        )
        if names_secret:
            spans.extend(_value_attr_spans(m))
            if text.strip() and not selfclosing:
                spans.append(text_span)
    return spans, opened


# --------------------------------------------------------------------------
# Programs whose options carry secrets (used for argv and for shell lines)


_MYSQL = ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump",
          "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-import", "mariadb-check")
_LDAP = ("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapmodrdn", "ldappasswd", "ldapwhoami", "ldapcompare", "ldapexop")
_MONGO = ("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat", "mongotop")
# program -> options whose value (attached "-pX" or the next word) is a secret
_SECRET_OPTIONS: dict[str, tuple[str, ...]] = {
    "sshpass": ("-p",),
    "redis-cli": ("-a",),
    "sqlcmd": ("-P",),
    "bcp": ("-P",),
    "useradd": ("-p",),
    "usermod": ("-p",),
    "rdesktop": ("-p",),
    "plink": ("-pw",),
    "pscp": ("-pw",),
    "psftp": ("-pw",),
    "ssh-keygen": ("-N", "-P"),
    "zip": ("-P",),
    "unzip": ("-P",),
    "openssl": ("-k", "-pass", "-passin", "-passout"),
    **{p: ("-w",) for p in _LDAP},
    **{p: ("-p",) for p in _MONGO},
}
_ATTACHED_ONLY = {**{p: "-p" for p in _MYSQL}, "7z": "-p", "7za": "-p", "7zz": "-p", "rar": "-p", "unrar": "-p"}
_USER_PASS_OPTIONS = {  # program -> (options, separator between user and password)
    "curl": (("-u", "--user", "-U", "--proxy-user"), ":"),
    "smbclient": (("-U", "--user"), "%"),
    "rpcclient": (("-U", "--user"), "%"),
    "smbcacls": (("-U", "--user"), "%"),
    "net": (("-U", "--user"), "%"),
    "mount.cifs": (("-o",), None),
}
_LOGIN_SUBCOMMAND = ("docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras", "crane")
_FREERDP = ("xfreerdp", "wlfreerdp", "sdl-freerdp", "xfreerdp3", "sdl-freerdp3", "wfreerdp")
KNOWN_PROGRAMS = frozenset(
    [*_SECRET_OPTIONS, *_ATTACHED_ONLY, *_USER_PASS_OPTIONS, *_LOGIN_SUBCOMMAND, *_FREERDP, "htpasswd", "net", "mysqladmin"]
)
ArgSpan = tuple[int, int, int]  # argument index, start, end


def _program(arg0: str) -> str:
    name = re.split(r"[/\\]", arg0)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


def _argv_spans(argv: list[str]) -> list[ArgSpan]:
    """Secret parts of a command's arguments, by option name and by program."""
    spans: list[ArgSpan] = []
    prog = _program(argv[0]) if argv else ""

    def whole(i: int) -> None:
        if i < len(argv) and argv[i]:
            spans.append((i, 0, len(argv[i])))

    secret_opts = _SECRET_OPTIONS.get(prog, ())
    if prog in _LOGIN_SUBCOMMAND and "login" in argv[1:3]:
        secret_opts = ("-p",)
    userpass = _USER_PASS_OPTIONS.get(prog)
    for i, arg in enumerate(argv[1:], start=1):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-") and "=" in arg:
            key, value = arg.split("=", 1)
            if is_secret_key(key.lstrip("-")) and not _harmless(value):
                spans.append((i, len(key) + 1, len(arg)))
            continue
        if arg in secret_opts:
            whole(i + 1)
            continue
        attached = next((o for o in secret_opts if len(o) == 2 and arg.startswith(o) and len(arg) > 2), None)
        if attached or (prog in _ATTACHED_ONLY and arg.startswith(_ATTACHED_ONLY[prog]) and len(arg) > 2):
            spans.append((i, 2, len(arg)))
            continue
        if userpass and arg in userpass[0] and nxt is not None:
            sep = userpass[1]
            if sep and sep in nxt:
                spans.append((i + 1, nxt.index(sep) + 1, len(nxt)))
            continue
        if prog in _FREERDP:
            low = arg.lower()
            for prefix in ("/p:", "/password:", "/gp:", "/gatewaypassword:"):
                if low.startswith(prefix):
                    spans.append((i, len(prefix), len(arg)))
            continue
        if re.fullmatch(r"-{1,2}[A-Za-z][\w.-]+", arg) and is_secret_key(arg.lstrip("-")):
            if nxt is not None and not nxt.startswith("-") and not _harmless(nxt):
                whole(i + 1)
    if prog == "htpasswd" and any(re.fullmatch(r"-[a-zA-Z]*b[a-zA-Z]*", a) for a in argv[1:]) and len(argv) > 3:
        whole(len(argv) - 1)
    if prog == "net" and len(argv) >= 4 and argv[1].lower() == "user" and not argv[3].startswith("/"):
        whole(3)
    if prog == "net" and len(argv) >= 3 and argv[1].lower() == "use":
        share = next((i for i, a in enumerate(argv) if a.startswith("\\\\")), None)
        for i in range(share + 1 if share is not None else len(argv), len(argv)):
            if not argv[i].startswith("/") and argv[i] != "*":
                whole(i)  # net use X: \\server\share PASSWORD /user:bob
    if prog in ("mysqladmin", "mariadb-admin"):
        for i, arg in enumerate(argv[1:-1], start=1):
            if arg == "password":
                whole(i + 1)
    return spans


_SHELL_WORD = re.compile(r"""'[^']*'|"(?:[^"\\]|\\.)*"|[^\s'";|&]+|[;|&]+""")
_PROGRAM_IN_LINE = re.compile(
    r"(?<![\w.-])(?:" + "|".join(sorted((re.escape(p) for p in KNOWN_PROGRAMS), key=len, reverse=True)) + r")(?![\w.-])",
    re.IGNORECASE,
)


# Programs that read a password from their standard input.
_STDIN_READERS = frozenset({"passwd", "chpasswd", "vncpasswd", "x11vnc", "smbpasswd", "cryptsetup", "kinit", "htpasswd"})
_STDIN_OPTIONS = frozenset({"--password-stdin", "--stdin", "-S", "--passphrase-fd"})
_SEPARATOR = re.compile(r"[;|&]+")
_PIPED_SECRET = re.compile(
    r"(?<![\w.-])(?:" + "|".join(sorted(_STDIN_READERS, key=len, reverse=True)) + r")(?![\w.-])|--password-stdin|\bsudo\b[^|;&]*\s-S\b|<<<",
    re.IGNORECASE,
)


def _word_span(start: int, word: str) -> Span:
    """The span of a shell word without its quotes."""
    if len(word) >= 2 and word[0] in "'\"" and word[-1] == word[0]:
        return start + 1, start + len(word) - 1
    return start, start + len(word)


def _piped_secret_spans(words: list[tuple[int, str]]) -> list[Span]:
    """``echo 'pw' | passwd --stdin bob``, ``… | docker login --password-stdin``, ``chpasswd <<< 'bob:pw'``."""
    commands: list[tuple[str, list[tuple[int, str]]]] = []
    sep, current = "", []
    for start, w in words:
        if _SEPARATOR.fullmatch(w):
            commands.append((sep, current))
            sep, current = w, []
        else:
            current.append((start, w))
    commands.append((sep, current))
    spans: list[Span] = []
    for i, (sep, cmd) in enumerate(commands):
        argv = [w.strip("'\"") for _, w in cmd]
        if not argv or not (_program(argv[0]) in _STDIN_READERS or any(a in _STDIN_OPTIONS for a in argv[1:])):
            continue
        for (_, w), (start, following) in zip(cmd, cmd[1:]):
            if w == "<<<":
                spans.append(_word_span(start, following))
        previous = commands[i - 1][1] if i > 0 else []
        if sep == "|" and previous and _program(previous[0][1]) in ("echo", "printf"):
            spans.extend(_word_span(start, w) for start, w in previous[1:] if not re.fullmatch(r"-[neE]+", w))
    return spans


def _shell_spans(line: str) -> list[Span]:
    """Secret options of known programs inside a shell line (``mysql -uroot -pS3cret``)."""
    words = None
    spans: list[Span] = []
    if _PIPED_SECRET.search(line):
        words = [(m.start(), m.group(0)) for m in _SHELL_WORD.finditer(line)]
        spans.extend(_piped_secret_spans(words))
    if not _PROGRAM_IN_LINE.search(line):
        return spans
    if words is None:
        words = [(m.start(), m.group(0)) for m in _SHELL_WORD.finditer(line)]
    for i, (_, word) in enumerate(words):
        if _program(word.strip("'\"")) not in KNOWN_PROGRAMS:
            continue
        argv, offsets = [], []
        for start, w in words[i : i + MAX_ARGS]:
            if argv and (_SEPARATOR.fullmatch(w) or _program(w.strip("'\"")) in KNOWN_PROGRAMS):
                break  # the end of this command, or the start of the next one
            quoted = len(w) >= 2 and w[0] in "'\"" and w[-1] == w[0]
            argv.append(w[1:-1] if quoted else w)
            offsets.append(start + (1 if quoted else 0))
        spans.extend((offsets[j] + s, offsets[j] + e) for j, s, e in _argv_spans(argv))
    return spans


# --------------------------------------------------------------------------
# Putting the rules together


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for s, e in sorted(sp for sp in spans if sp[1] > sp[0]):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _apply(line: str, spans: list[Span]) -> str:
    out, last = [], 0
    for s, e in _merge(spans):
        out.append(line[last:s])
        out.append(marker(line[s:e]))
        last = e
    out.append(line[last:])
    return "".join(out)


_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]+?-----|---- BEGIN [A-Z0-9 ]+? ----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]+?-----|---- END [A-Z0-9 ]+? ----")
_PEM_BODY = re.compile(r"\S*|[A-Za-z][\w-]*: .*")  # base64 (perhaps quoted), "Proc-Type: …" headers


def _scan_line(line: str) -> tuple[str, _Open | None]:
    """One line redacted, and what it leaves open for the next lines."""
    if len(line) > MAX_LINE:
        return marker(line), None
    kv, kv_open = _kv_spans(line)
    xml, xml_open = _xml_spans(line)
    spans = kv + xml + _auth_header_spans(line) + _token_spans(line) + _high_entropy_spans(line) + _shell_spans(line)
    opened = kv_open or xml_open
    if opened is None:
        begin = _PEM_BEGIN.match(line.strip(" \t\"'"))
        if begin and not line.strip(" \t\"'")[begin.end() :].strip():
            opened = _Open("pem")
        elif line.startswith("PuTTY-User-Key-File-"):
            opened = _Open("putty")
        else:
            block = re.match(r"([ \t]*)(?:-[ \t]+)?([\w.\"'-]+)[ \t]*:[ \t]*[|>][-+0-9]*[ \t]*(?:#.*)?$", line)
            if block and is_secret_key(block.group(2).strip("\"'")):
                opened = _Open("yaml", indent=len(block.group(1)))
    return _apply(line, spans), opened


def redact_line(line: str) -> str:
    """One line of configuration, environment, INI, YAML, JSON, TOML, XML or shell, secrets hidden."""
    if "\n" in line:
        return redact_text(line)
    return _scan_line(line)[0]


_PUTTY_HEADERS = re.compile(
    r"(?:PuTTY-User-Key-File-\d+|Encryption|Comment|Public-Lines|Private-Lines|Key-Derivation|Argon2-Memory|Argon2-Passes|Argon2-Parallelism):"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _whole(line: str) -> str:
    """A line inside a secret block: its indentation, then one marker."""
    body = line.strip()
    return line[: _indent(line)] + marker(body) if body else line


def _continue(line: str, opened: _Open) -> tuple[str, _Open | None, bool]:
    """A line inside an open secret: (output, still open, rescan the rest normally)."""
    kind = opened.kind
    if kind in ("quote", "triple", "xml") and opened.lines >= MAX_OPEN_LINES:
        return line, None, True
    if kind in ("quote", "triple"):
        end = line.find(opened.until) if kind == "triple" else _close_quote(line, 0, opened.until)
        if end < 0:
            return _whole(line), replace(opened, lines=opened.lines + 1), False
        rest, _ = _scan_line(line[end:])
        return (_apply(line[:end], [(0, end)]) if end else "") + rest, None, False
    if kind == "xml":
        end = line.find(f"</{opened.until}")
        if end < 0:
            return _whole(line), replace(opened, lines=opened.lines + 1), False
        head = line[:end]
        stripped = head.strip()
        out = head[: _indent(head)] + marker(stripped) + head[len(head.rstrip()) :] if stripped else head
        return out + _scan_line(line[end:])[0], None, False
    if kind == "yaml":
        if not line.strip() or _indent(line) > opened.indent:
            return _whole(line), opened, False
        return line, None, True
    if kind == "pem":
        if _PEM_END.search(line) or not _PEM_BODY.fullmatch(line.strip()):
            return line, None, True  # the end, or not a key after all
        return _whole(line), opened, False
    if kind == "putty":
        if line.startswith("Private-MAC:") or line.startswith("Private-Hash:"):
            name, _, value = line.partition(":")
            return f"{name}: {marker(value.strip())}", None, False
        if _PUTTY_HEADERS.match(line):
            return line, opened, True
        return _whole(line), opened, False
    # next-element: the value that follows <name>password</name>
    if not line.strip():
        return line, opened, False
    m = _NEXT_ELEMENT.search(line)
    if m and m.group(2) and not _harmless(m.group(2)):
        return _apply(line, [(m.start(2), m.end(2))]), None, False
    return line, None, True


def _split_lines(text: str) -> list[str]:
    """Lines with their ``\n``. Only ``\n`` ends a line: str.splitlines would also split
    at form feeds and other separators that config files treat as ordinary characters,
    and cut a secret in two."""
    lines = text.split("\n")
    last = lines.pop()
    return [line + "\n" for line in lines] + ([last] if last else [])


def redact_text(text: str) -> str:
    """Many lines, secrets hidden; line structure and line endings are kept."""
    out: list[str] = []
    opened: _Open | None = None
    for raw in _split_lines(text):
        content = raw.removesuffix("\n").removesuffix("\r")
        ending = raw[len(content) :]
        if opened is None:
            line, opened = _scan_line(content)
        else:
            line, still_open, rescan = _continue(content, opened)
            if rescan:
                line, found = _scan_line(content)
                still_open = still_open or found
            opened = still_open
        out.append(line + ending)
    return "".join(out)


# --------------------------------------------------------------------------
# Command lines, diffs, files


def redact_cmdline(argv: list[str]) -> list[str]:
    """A command line with secret arguments hidden, argument by argument."""
    argv = [str(a) for a in argv]
    per_arg: dict[int, list[Span]] = {}
    for i, s, e in _argv_spans(argv):
        per_arg.setdefault(i, []).append((s, e))
    out = []
    for i, arg in enumerate(argv):
        if len(arg) > MAX_LINE:
            out.append(marker(arg))
            continue
        lines = arg.split("\n")
        if len(lines) > 1:  # a script passed as one argument
            redacted = redact_text(arg)
            spans = per_arg.get(i)
            out.append(_apply(redacted, spans) if spans and redacted == arg else redacted)
            continue
        kv, _ = _kv_spans(arg)
        xml, _ = _xml_spans(arg)
        spans = per_arg.get(i, []) + kv + xml + _auth_header_spans(arg) + _token_spans(arg)
        spans += _high_entropy_spans(arg) + _shell_spans(arg)
        out.append(_apply(arg, spans))
    return out


def _diff_lines(text: str | None) -> list[str]:
    if text is None:
        return []
    lines = _split_lines(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def redact_diff(path: str, before: str | None, after: str | None, context: int = 3) -> str | None:
    """A unified diff of the redacted texts, or None for a file that is a secret as a whole.

    ``None`` for ``before`` means the file was created, for ``after`` that it
    was deleted. Identical texts give an empty string.
    """
    if is_secret_file(path):
        return None
    a = _diff_lines(None if before is None else redact_text(before))
    b = _diff_lines(None if after is None else redact_text(after))
    diff = difflib.unified_diff(
        a, b,
        fromfile=path if before is not None else "/dev/null",
        tofile=path if after is not None else "/dev/null",
        n=context,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff)


_SECRET_NAMES = frozenset({
    ".netrc", "_netrc", ".pgpass", ".git-credentials", ".my.cnf.secret", ".htpasswd", "htpasswd",
    "shadow", "gshadow", "shadow-", "gshadow-", "opasswd", "chap-secrets", "pap-secrets",
    "login data", "login data for account", "web data", "cookies", "local state", "logins.json",
    "key3.db", "key4.db", "cookies.sqlite", "signons.sqlite", "logins-backup.json",
    "credentials", "credentials.json", "credentials.db", "access_tokens.db", "accesstokens.json",
    "application_default_credentials.json", "msal_token_cache.json", "msal_token_cache.bin",
    "service_principal_entries.json", "sasl_passwd", "secring.gpg", "identity", "keystore", ".keystore",
    "secrets.yml.key", "master.key", "credentials.yml.enc", "vault-token", ".vault-token",
})
_SECRET_SUFFIXES = (
    ".pem", ".key", ".p12", ".pfx", ".ppk", ".kdbx", ".kdb", ".keytab", ".jks", ".keystore",
    ".keyring", ".kwl", ".keychain", ".keychain-db", ".gpg", ".pgp", ".psafe3", ".p8", ".der",
    ".asc.key", ".age", ".credentials",
)
_SECRET_DIRS = ("private-keys-v1.d", "keyrings", "legacy_credentials", ".password-store", "ssl/private", "kwalletd")


def is_secret_file(path: str) -> bool:
    """Whether the file is a secret as a whole: record its hashes, never its content."""
    windows = "\\" in path and "/" not in path
    p: PurePath = PureWindowsPath(path) if windows else PurePosixPath(path)
    name = p.name.lower()
    if name.startswith("id_") and not name.endswith(".pub"):
        return True
    if re.fullmatch(r"ssh_host_\w+_key", name):
        return True
    if name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES):
        return True
    if name.startswith("client_secret") and name.endswith(".json"):
        return True
    parts = "/".join(part.lower() for part in p.parts)
    return any(f"/{d}/" in f"/{parts}" for d in _SECRET_DIRS)


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
