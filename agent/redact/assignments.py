"""Values after assignment and option syntax: when the key names a secret, and when the value is a key itself.

Forms: ``k=v``, ``k: v``, ``k => v``, ``k := v``, ``k ?= v``, ``k ::= v``,
``"k": "v"``, ``k v`` (a directive: nginx, Apache, redis, sshd), ``--k v``,
``define('K', 'v')``, quotes and backticks, triple quotes, ``export``,
``set``, ``declare``, ``const``/``let``/``var`` before the key; JSON, YAML,
TOML, INI, Java properties, shell, systemd. Plus ``Authorization`` headers.
"""

from __future__ import annotations

import re

from agent.redact.keys import harmless, is_secret_key, segments
from agent.redact.markup import NAMING_ATTRS, is_identifier
from agent.redact.spans import Open, Span, close_quote
from agent.redact.tokens import random_value

_STMT = re.compile(
    r"[ \t]*(?:(?:[#;]+|//)[ \t]*)?"
    r"(?:(?:export|set|setenv|declare(?:[ \t]+-\w+)*|local|readonly|typeset|env|const|let|var|my|our|val)[ \t]+)?"
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
_SECTION = re.compile(r"""[ \t]*\[[\w .-]+(?:[ \t]+"[^"]*")?\][ \t]*(?:[#;](?P<comment>.*))?$""")
_COMMENT = re.compile(r"[ \t]*(?:[#;]|//)")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_TWO_CHAR_SEPARATORS = ("=>", ":=", "?=", "||", "+=")
# Commands that commonly follow an environment assignment on a shell line
# (``PGPASSWORD=x psql -h db``): only the value is hidden, the command stays readable.
_COMMANDS_AFTER_ENV = frozenset({
    "psql", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "createdb", "dropdb", "vacuumdb",
    "mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "redis-cli", "mongosh", "mongo",
    "mongodump", "mongorestore", "curl", "wget", "ssh", "scp", "rsync", "git", "docker", "podman", "kubectl",
    "helm", "aws", "az", "gcloud", "vault", "terraform", "ansible", "ansible-playbook", "python", "python3",
    "node", "npm", "npx", "yarn", "pip", "pip3", "bash", "sh", "zsh", "make", "exec", "sudo", "env", "java",
    "restic", "borg", "rclone", "s3cmd", "lftp", "sqlplus", "sqlcmd", "smbclient", "php", "ruby", "perl",
    "go", "cargo", "dotnet", "systemctl", "service", "openssl", "gpg", "duplicity", "sshpass",
})


def _command_follows(line: str, at: int) -> bool:
    """Whether the words from ``at`` on start a command (``psql …``, ``./run``, ``OTHER=1 cmd``)."""
    rest = line[at:].lstrip(" \t")
    word = rest.split(None, 1)[0] if rest.strip() else ""
    name = word.rsplit("/", 1)[-1]
    another_assignment = "=" in word and _ENV_NAME.fullmatch(word.split("=", 1)[0]) is not None
    return bool(word) and (name in _COMMANDS_AFTER_ENV or word.startswith(("./", "/")) or another_assignment)


def kv_spans(line: str) -> tuple[list[Span], Open | None]:
    """Values of secret-named keys: ``k=v``, ``k: v``, ``"k": "v"``, ``k v``, ``--k v``."""
    spans: list[Span] = []
    opened: Open | None = None
    section = _SECTION.match(line)
    if section:  # [credential "https://host"]: an INI section names, it holds nothing; its comment may
        at = section.start("comment")
        if at < 0:
            return [], None
        inner, _ = kv_spans(line[at:])
        return [(at + s, at + e) for s, e in inner], None
    stmt = _STMT.match(line)
    stmt_end = stmt.end() if stmt else 0
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
        if not name or not is_secret_key(name) or segments(name)[-1] == "authorization":
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
        elif line.startswith("::=", p):
            p, sep_is_space = p + 3, False
        elif line.startswith(_TWO_CHAR_SEPARATORS, p):
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
                opened = opened or Open("triple", line[p : p + 3])
            else:
                spans.append((p + 3, end))
            continue
        if c in "\"'`":
            end = close_quote(line, p + 1, c)
            naming = name.lower() in NAMING_ATTRS and end > 0 and is_identifier(line[p + 1 : end])
            if naming and line.rfind("<", 0, start) > line.rfind(">", 0, start):
                continue  # key="DbPassword" in a tag names a setting; the value="…" beside it is judged by that name
            if end < 0:
                spans.append((p + 1, n))
                opened = opened or Open("quote", c)
            elif at_stmt and not _TRAILER.match(line, end + 1) and not _command_follows(line, end + 1):
                spans.append((p, len(line.rstrip())))
            elif not harmless(line[p + 1 : end]):
                spans.append((p + 1, end))
            continue
        bare = sep_is_space and not (dashed or at_stmt)
        if bare and (name.lower() not in _BARE_SECRET_WORDS or comment or netrc_from is None or netrc_from > start):
            continue  # prose ("# the password expires", "SET PASSWORD FOR"), not "login bob password pw"
        if sep_is_space and c == "-" and (dashed or bare):
            continue  # "--no-password -h host": the next word is another option
        if c == "{" and not sep_is_space:
            continue  # "auth": {"type": …}: an object, whose members are judged by their own keys
        if at_stmt and not sep_is_space and not quoted_key:
            end = len(line.rstrip())
            word = _NON_SPACE.match(line, p)
            if word and _ENV_NAME.fullmatch(name) and _command_follows(line, word.end()):
                end = word.end()  # PGPASSWORD=x psql -h db: the value, not the command after it
        elif at_stmt and sep_is_space and not dashed:
            word = _NON_SPACE.match(line, p)
            if not word or not _DIRECTIVE_TAIL.match(line, word.end()):
                continue  # "password required pam_unix.so": a list of words, not a value
            end = word.end()
        else:
            stop = _EMBEDDED_END.search(line, p)
            end = stop.start() if stop else n
        if end > p and not harmless(line[p:end]):
            spans.append((p, end))
    return spans, opened


# Any key, then a value that is itself a key (random-looking, 20+ characters).
_ANY_ASSIGNMENT = re.compile(
    r"""(?:^|(?<=[\s;,{(\[]))["']?[A-Za-z_][\w.-]*["']?[ \t]*(?:=>|:=|\?=|=|:)[ \t]*["'`]?([A-Za-z0-9+/_.~=-]{20,})"""
)


def random_value_spans(line: str) -> list[Span]:
    """Values after any key that look like keys themselves (``VALUE_1=<a random token>``)."""
    spans = []
    for m in _ANY_ASSIGNMENT.finditer(line):
        if random_value(m.group(1)):
            spans.append((m.start(1), m.end(1)))
    return spans


_AUTH_HEADER = re.compile(
    r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:basic|bearer|digest|token|negotiate|ntlm|aws4-hmac-sha256|sharedkey|ssws|apikey|key)[ \t]+)?"
)


def auth_header_spans(line: str) -> list[Span]:
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
