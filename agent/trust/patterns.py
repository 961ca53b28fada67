"""OpenSSH pattern lists (ssh_config(5), PATTERNS), as ``match.c`` implements them.

A pattern is a string where ``*`` matches any run of characters and ``?``
exactly one; every other character matches itself, case-sensitively. A
pattern list is comma-separated; a pattern preceded by ``!`` is a negation,
and a negated match rejects the string whatever else matches.
"""

from __future__ import annotations

NEGATED = -1
NO_MATCH = 0
MATCH = 1


def match_pattern(text: str, pattern: str) -> bool:
    """Glob match with ``*`` and ``?`` only.

    Iterative with one backtrack point (the last ``*``), so it runs in
    O(len(text) * len(pattern)) whatever the input, unlike a naive regex.
    """
    t = p = 0
    star_p = -1
    star_t = 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star_p, star_t = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            t += 1
            p += 1
        elif star_p >= 0:
            star_t += 1
            t = star_t
            p = star_p + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def match_pattern_list(text: str, pattern_list: str) -> int:
    """``MATCH`` if a positive pattern matches and no negated one does,
    ``NEGATED`` if a negated pattern matches, ``NO_MATCH`` otherwise."""
    result = NO_MATCH
    for sub in pattern_list.split(","):
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        if match_pattern(text, sub):
            if negated:
                return NEGATED
            result = MATCH
    return result


def literal_names(pattern_list: str) -> list[str]:
    """The positive entries of a pattern list that contain no wildcard."""
    return [
        sub for sub in pattern_list.split(",")
        if sub and not sub.startswith("!") and "*" not in sub and "?" not in sub
    ]
