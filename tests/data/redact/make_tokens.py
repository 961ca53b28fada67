"""Write tokens.tsv: one example line per format and context, with the exact secret that must not survive.

The examples follow each format's own definition, as gitleaks makes its own
test cases (``secrets.NewSecret`` draws a string from the rule's regex): a
seeded generator draws the secret from the format's regex (its secret group),
so the corpus holds no live secret. Deterministic; rerun after changing
``agent/redact/formats.py``:

    python tests/data/redact/make_tokens.py > tests/data/redact/tokens.tsv

Columns: format id, family, context, line, secret.
"""

from __future__ import annotations

import random
import re
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import re._constants as C
import re._parser as P

from agent.redact.formats import KEYED, OURS, PREFIXED
from agent.redact.tokens import FORMATS, entropy

BY_ID = {f.id: f for f in FORMATS}

_CATEGORIES = {
    C.CATEGORY_DIGIT: string.digits,
    C.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    C.CATEGORY_SPACE: " ",
    C.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits,
}


def _charset(items, rnd: random.Random) -> str:
    chars: list[str] = []
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            chars.append(chr(av))
        elif op is C.RANGE:
            chars.extend(chr(c) for c in range(av[0], av[1] + 1))
        elif op is C.CATEGORY:
            chars.extend(_CATEGORIES.get(av, string.ascii_letters))
    if negate:
        pool = [c for c in string.ascii_letters + string.digits + " ;." if c not in chars] or [" "]
        return rnd.choice(pool)
    return rnd.choice([c for c in chars if c.isprintable() and c not in "\t\n\r\x0b\x0c"] or chars)


def draw(tree, rnd: random.Random, groups: dict | None = None) -> str:
    """A string that ``tree`` matches; each numbered group's text goes into ``groups``."""
    groups = {} if groups is None else groups
    out = []
    for op, av in tree:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op is C.NOT_LITERAL:
            out.append(rnd.choice([c for c in string.ascii_letters if ord(c) != av]))
        elif op is C.ANY:
            out.append(".")  # gitleaks writes hooks.slack.com with bare dots
        elif op is C.IN:
            out.append(_charset(av, rnd))
        elif op is C.BRANCH:
            out.append(draw(rnd.choice(av[1]), rnd, groups))
        elif op is C.SUBPATTERN:
            text = draw(av[3], rnd, groups)
            if av[0] is not None:
                groups[av[0]] = text
            out.append(text)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            lo, hi, sub = av
            hi = lo + 8 if hi is C.MAXREPEAT else hi
            out.extend(draw(sub, rnd, groups) for _ in range(rnd.randint(lo, hi)))
        elif op is C.CATEGORY:
            out.append(rnd.choice(_CATEGORIES.get(av, string.ascii_letters)))
        # AT, ASSERT, ASSERT_NOT: no text
    return "".join(out)


_TAIL = r"""(?:[\x60'"\s;]|\\[nr]|$)"""


def example_for(pattern: str, group: int, minimum: float | None, rnd: random.Random) -> tuple[str, str]:
    """(the whole match, the secret in it) drawn from ``pattern``."""
    tree = P.parse(pattern.replace(_TAIL, ""))
    compiled = re.compile(pattern)
    for _ in range(500):
        groups: dict[int, str] = {}
        whole = draw(tree, rnd, groups).strip()
        s = whole if group == 0 else groups.get(group, "")
        if len(s) < 6 or (minimum is not None and entropy(s) < minimum + 0.3) or "\\" in whole:
            continue
        m = compiled.search(f"rotated {whole} today")
        if m and s in (m.group(group) or ""):  # the format itself matches its example, in a line
            return whole, s
    raise ValueError(f"no example for {pattern!r}")


def main() -> None:
    rnd = random.Random(20261122)
    rows = []
    for fid, family, rx, _kw, ent, group in (*PREFIXED, *OURS):
        m, s = example_for(rx, group, ent, rnd)
        rows.append((fid, family, "alone", f"rotated {m} today", s))
        rows.append((fid, family, "neutral-key", f"VALUE_1={m}", s))
        rows.append((fid, family, "json", f'{{"value": "{m}", "n": 1}}', s))
    for fid, family, key, keywords, value, ent in KEYED:
        word = next((k for k in keywords if re.fullmatch(f"(?i:{key})", k)), None) or draw(P.parse(key), rnd)
        compiled = BY_ID[fid].regex
        while True:  # the value must also be what gitleaks' template takes (not eaten by its separator)
            _, s = example_for(f"(?i:{value})", 0, ent, rnd)
            m = compiled.search(f"{word}_value = {s}")
            if m and m.group(BY_ID[fid].group) == s:
                break
        rows.append((fid, family, "vendor-key", f"{word}_value = {s}", s))
        rows.append((fid, family, "vendor-json", f'"{word}": "{s}",', s))
    print("# format\tfamily\tcontext\tline\tsecret  (made by make_tokens.py; do not edit by hand)")
    for row in rows:
        assert all("\t" not in c and "\n" not in c for c in row), row
        print("\t".join(row))


if __name__ == "__main__":
    main()
