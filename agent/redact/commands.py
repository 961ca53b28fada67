"""Command lines: secret options and arguments of the programs technicians use.

``argv_spans`` reads one command's arguments (a process's argv); ``shell_spans``
finds commands inside a shell line (a script, ``sh -c``, a config's
``ExecStart=``) and reads each; secrets sent to a password reader's standard
input (``echo pw | passwd --stdin bob``, ``<<< pw``) are found too, and
``heredoc_opens`` says whether a line starts a here-document whose body is
such input.
"""

from __future__ import annotations

import itertools
import re

from agent.redact.keys import harmless, is_secret_key
from agent.redact.programs import (
    ATTACHED_ONLY,
    FREERDP,
    KEY_VALUE_PROGRAMS,
    KNOWN_PROGRAMS,
    LOGIN_SUBCOMMAND,
    NO_ATTACHED,
    ORACLE,
    POSITIONAL,
    SECRET_OPTIONS,
    STDIN_OPTIONS,
    STDIN_READERS,
    STDIN_SUBCOMMANDS,
    USER_PASS_OPTIONS,
)
from agent.redact.spans import Open, Span

MAX_ARGS = 256  # words of a shell line read as one command's arguments
ArgSpan = tuple[int, int, int]  # argument index, start, end

_ORACLE_LOGIN = re.compile(r"(?:userid=)?[A-Za-z_$#][\w$#]*/([^@\s/][^@\s]*)(?:@\S*)?", re.IGNORECASE)
_LFTP_OPEN = re.compile(r"(?:^|\s)(?:-u|--user)\s*[^\s,]+,([^\s;\"']+)")
_DASHED_SECRET = re.compile(r"-{1,2}[A-Za-z][\w.-]+")
_SHORT_FLAGS_WITH_B = re.compile(r"-[a-zA-Z]*b[a-zA-Z]*")


def program(arg0: str) -> str:
    """The program's name from argv[0]: no folder, no ``.exe``, lower case."""
    name = re.split(r"[/\\]", arg0)[-1].lower()
    return name.removesuffix(".exe")


def argv_spans(argv: list[str]) -> list[ArgSpan]:
    """Secret parts of a command's arguments, by option name and by program."""
    spans: list[ArgSpan] = []
    prog = program(argv[0]) if argv else ""

    values: set[int] = set()  # arguments already taken as an option's secret value

    def whole(i: int) -> None:
        if 0 < i < len(argv) and argv[i]:
            spans.append((i, 0, len(argv[i])))
            values.add(i)

    secret_opts = SECRET_OPTIONS.get(prog, ())
    if prog in LOGIN_SUBCOMMAND and "login" in argv[1:3]:
        secret_opts = ("-p",)
    userpass = USER_PASS_OPTIONS.get(prog)
    for i, arg in enumerate(argv[1:], start=1):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if i in values:
            continue
        if userpass:
            attached = next((o for o in userpass[0] if arg.startswith(o) and len(arg) > len(o)), None)
            if attached and (len(attached) == 2 or arg[len(attached)] == "="):
                value_at = len(attached) + (arg[len(attached)] == "=")
                sep = arg.find(userpass[1], value_at)
                if sep >= 0:
                    spans.append((i, sep + 1, len(arg)))  # curl -uuser:pw, --user=user:pw
                continue
            if arg in userpass[0] and nxt is not None:
                if userpass[1] in nxt:
                    spans.append((i + 1, nxt.index(userpass[1]) + 1, len(nxt)))
                values.add(i + 1)
                continue
        if arg.startswith("-") and "=" in arg:
            key, value = arg.split("=", 1)
            if (is_secret_key(key.lstrip("-")) or key in secret_opts) and not harmless(value):
                spans.append((i, len(key) + 1, len(arg)))
            continue
        if arg in secret_opts:
            whole(i + 1)
            continue
        attached = None if prog in NO_ATTACHED else next(
            (o for o in secret_opts if len(o) == 2 and arg.startswith(o) and len(arg) > 2), None)
        if attached or (prog in ATTACHED_ONLY and arg.startswith(ATTACHED_ONLY[prog]) and len(arg) > 2):
            spans.append((i, 2, len(arg)))
            continue
        if prog in FREERDP:
            low = arg.lower()
            for prefix in ("/p:", "/password:", "/gp:", "/gatewaypassword:"):
                if low.startswith(prefix):
                    spans.append((i, len(prefix), len(arg)))
            continue
        if _DASHED_SECRET.fullmatch(arg) and is_secret_key(arg.lstrip("-")):
            if nxt is not None and not nxt.startswith("-") and not harmless(nxt):
                whole(i + 1)
            continue
        if prog in KEY_VALUE_PROGRAMS and not arg.startswith("-") and is_secret_key(arg) and nxt is not None:
            whole(i + 1)  # nmcli … wifi-sec.psk X, password X; redis-cli CONFIG SET requirepass X
        if prog in ORACLE:
            m = _ORACLE_LOGIN.fullmatch(arg)
            if m and not arg.startswith("/"):
                spans.append((i, m.start(1), m.end(1)))  # sqlplus scott/tiger@db
        if prog == "lftp":
            for m in _LFTP_OPEN.finditer(arg):
                spans.append((i, m.start(1), m.end(1)))  # lftp -e 'open -u user,pw host'
    spans.extend(_by_program(prog, argv))
    return spans


def _by_program(prog: str, argv: list[str]) -> list[ArgSpan]:
    """Positional secrets that depend on the program and its subcommand."""
    spans: list[ArgSpan] = []
    n = len(argv)

    def whole(i: int) -> None:
        if 0 < i < n and argv[i]:
            spans.append((i, 0, len(argv[i])))

    words = [a.lower() for a in argv]
    if prog == "htpasswd" and any(_SHORT_FLAGS_WITH_B.fullmatch(a) for a in argv[1:]) and n > 3:
        whole(n - 1)
    if prog == "net" and n >= 4 and words[1] == "user" and not argv[3].startswith("/"):
        whole(3)
    if prog == "net" and n >= 3 and words[1] == "use":
        share = next((i for i, a in enumerate(argv) if a.startswith("\\\\")), None)
        for i in range(share + 1 if share is not None else n, n):
            if not argv[i].startswith("/") and argv[i] != "*":
                whole(i)  # net use X: \\server\share PASSWORD /user:bob
    if prog in ("mysqladmin", "mariadb-admin"):
        for i in range(1, n - 1):
            if words[i] == "password":
                whole(i + 1)
    if prog == "smbclient":
        service = next((i for i, a in enumerate(argv) if a.startswith(("//", "\\\\"))), None)
        if service is not None and service + 1 < n and not argv[service + 1].startswith("-"):
            whole(service + 1)  # smbclient //host/share PASSWORD
    if prog == "vault" and n >= 3 and words[1] == "login":
        for i in range(2, n):
            if not argv[i].startswith("-") and "=" not in argv[i]:
                whole(i)  # vault login TOKEN
                break
    if prog == "aws" and n >= 5 and words[1:3] == ["configure", "set"] and is_secret_key(argv[3].split(".")[-1]):
        whole(4)  # aws configure set aws_secret_access_key X
    if prog == "redis-cli":
        for i in range(1, n):
            if words[i] == "auth" and i + 1 < n:
                whole(n - 1 if n - 1 > i else i + 1)  # AUTH [user] password
                break
    if prog == "rabbitmqctl" and n >= 4 and words[1] in ("add_user", "change_password"):
        whole(3)
    if prog in POSITIONAL:
        positional = [i for i in range(1, n) if not argv[i].startswith("-")]
        at = POSITIONAL[prog]
        if positional and -len(positional) <= at < len(positional) + 1 and at != 0:
            whole(positional[at] if at < 0 else positional[at - 1])
    return spans


SHELL_WORD = re.compile(r"""'[^']*'|"(?:[^"\\]|\\.)*"|<<<|[^\s'";|&]+|[;|&]+""")
_PROGRAM_IN_LINE = re.compile(
    r"(?<![\w.-])(?:"
    + "|".join(sorted((re.escape(p) for p in KNOWN_PROGRAMS), key=len, reverse=True))
    + r")(?![\w.-])",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"[;|&]+")
_PIPED_SECRET = re.compile(
    r"(?<![\w.-])(?:" + "|".join(sorted(STDIN_READERS, key=len, reverse=True)) + r")(?![\w.-])"
    r"|--password-stdin|--with-token|\bsudo\b[^|;&]*\s-S\b|<<<|\bvault\s+login\s+-(?!\S)",
    re.IGNORECASE,
)
_HEREDOC = re.compile(r"<<(-?)[ \t]*(['\"]?)([A-Za-z_][\w-]*)\2")
_ECHO = frozenset({"echo", "printf"})


def _word_span(start: int, word: str) -> Span:
    """The span of a shell word without its quotes."""
    if len(word) >= 2 and word[0] in "'\"" and word[-1] == word[0]:
        return start + 1, start + len(word) - 1
    return start, start + len(word)


def reads_secret_on_stdin(argv: list[str]) -> bool:
    """Whether this command reads a password or token on its standard input."""
    if not argv:
        return False
    prog = program(argv[0])
    if prog == "sudo" and "-S" in argv[1:]:
        return True
    if prog == "sudo":
        rest = [a for a in argv[1:] if not a.startswith("-")]
        return reads_secret_on_stdin(rest)
    sub = STDIN_SUBCOMMANDS.get(prog)
    if sub and [a.lower() for a in argv[1:3]] == list(sub):
        return True
    return prog in STDIN_READERS or any(a in STDIN_OPTIONS for a in argv[1:])


def _commands(words: list[tuple[int, str]]) -> list[tuple[str, list[tuple[int, str]]]]:
    """The words of a shell line split into commands, each with the separator before it."""
    commands: list[tuple[str, list[tuple[int, str]]]] = []
    sep = ""
    current: list[tuple[int, str]] = []
    for start, w in words:
        if _SEPARATOR.fullmatch(w):
            commands.append((sep, current))
            sep, current = w, []
        else:
            current.append((start, w))
    commands.append((sep, current))
    return commands


def _piped_secret_spans(words: list[tuple[int, str]]) -> list[Span]:
    """``echo 'pw' | passwd --stdin bob``, ``… | docker login --password-stdin``, ``chpasswd <<< 'bob:pw'``."""
    commands = _commands(words)
    spans: list[Span] = []
    for i, (sep, cmd) in enumerate(commands):
        argv = [w.strip("'\"") for _, w in cmd]
        if not reads_secret_on_stdin(argv):
            continue
        for (_, w), (start, following) in itertools.pairwise(cmd):
            if w == "<<<":
                spans.append(_word_span(start, following))
        previous = commands[i - 1][1] if i > 0 else []
        if sep == "|" and previous and program(previous[0][1]) in _ECHO:
            spans.extend(_word_span(start, w) for start, w in previous[1:] if not re.fullmatch(r"-[neE]+", w))
    return spans


def shell_words(line: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group(0)) for m in SHELL_WORD.finditer(line)]


def shell_spans(line: str) -> list[Span]:
    """Secret options of known programs inside a shell line (``mysql -uroot -pS3cret``)."""
    words = None
    spans: list[Span] = []
    if _PIPED_SECRET.search(line):
        words = shell_words(line)
        spans.extend(_piped_secret_spans(words))
    if not _PROGRAM_IN_LINE.search(line):
        return spans
    if words is None:
        words = shell_words(line)
    for i, (_, word) in enumerate(words):
        if program(word.strip("'\"")) not in KNOWN_PROGRAMS:
            continue
        argv: list[str] = []
        offsets: list[int] = []
        for start, w in words[i : i + MAX_ARGS]:
            if argv and (_SEPARATOR.fullmatch(w) or program(w.strip("'\"")) in KNOWN_PROGRAMS):
                break  # the end of this command, or the start of the next one
            quoted = len(w) >= 2 and w[0] in "'\"" and w[-1] == w[0]
            argv.append(w[1:-1] if quoted else w)
            offsets.append(start + (1 if quoted else 0))
        spans.extend((offsets[j] + s, offsets[j] + e) for j, s, e in argv_spans(argv))
    return spans


def heredoc_opens(line: str) -> Open | None:
    """A here-document started on this line whose body is a password reader's input (hidden whole)."""
    m = _HEREDOC.search(line)
    if not m or "<<<" in line[m.start() : m.start() + 3]:
        return None
    words = shell_words(line[: m.start()])
    commands = _commands(words)
    argv = [w.strip("'\"") for _, w in commands[-1][1]] if commands else []
    if not reads_secret_on_stdin(argv):
        return None
    return Open("heredoc", m.group(3), indent=1 if m.group(1) else 0)
