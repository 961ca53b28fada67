"""Benchmark: redaction's speed, its precision on this machine's /etc, and the capture burst's CPU before and after.

Prints one JSON line:

- ``lines_per_s``: lines through ``agent.redact.redact_line`` on a realistic
  mix (every non-empty line of the text configuration files under ``/etc``,
  plus the token corpus ``tests/data/redact/tokens.tsv``);
  ``baseline_lines_per_s``: the same lines through one compiled alternation
  of the same token formats with ``re`` (``sub`` with the marker), in the same run.
- ``etc_lines``, ``etc_changed`` (``etc_changed_pct``): every non-empty line
  of every text configuration file under ``/etc`` (as capture judges them:
  ``is_text_config``, UTF-8), public-key armor (PEM blocks) excluded and
  counted in ``etc_armor_lines``; a line counts as changed when
  ``redact_text(file)`` changes it. ``--changed FILE`` writes those lines.
- ``corpus_rows``, ``corpus_survived``: the token corpus, by family in
  ``corpus_missed_by_family``.
- ``capture_cpu_before_s``, ``capture_cpu_after_s``: ``bench/capture.py``'s
  burst (``chaperone_cpu_s``), run alternately from a copy of the tree before
  redaction moved to ``agent/redact`` (``--before REF``, default: the parent
  of the commit that deleted ``agent/capture/redact.py``) and from this tree.
- ``scrub_us_per_record``: what the session sink adds to each record (hiding
  known secrets), with a Redactor that learned this machine's ``/etc``
  (``etc_known`` values), over 50,000 file records of a burst.

    python bench/redact.py                          # everything (about a minute)
    python bench/redact.py --no-capture --changed /tmp/changed.txt
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.redact import (  # noqa: E402 - after sys.path
    Redactor,
    default_redactor,
    is_text_config,
    redact_line,
    redact_text,
)
from agent.redact.tokens import FORMATS  # noqa: E402 - after sys.path

CORPUS = ROOT / "tests" / "data" / "redact" / "tokens.tsv"
_BEGIN = re.compile(r"-----BEGIN [A-Za-z0-9 ]+-----")
_END = re.compile(r"-----END [A-Za-z0-9 ]+-----")


def etc_files(top: str) -> list[tuple[str, str]]:
    """(path, text) of every text configuration file under ``top`` (no symlinks followed)."""
    found = []
    for folder, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in sorted(names):
            path = os.path.join(folder, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read(4 << 20)
                if not is_text_config(path, data[:4096]):
                    continue
                found.append((path, data.decode("utf-8")))
            except (OSError, UnicodeDecodeError):
                continue
    return found


def precision(files: list[tuple[str, str]]) -> dict:
    lines = changed = armor = 0
    changes: list[str] = []
    for path, text in files:
        out = redact_text(text, path).split("\n")
        inside = False
        for before, after in zip(text.split("\n"), out, strict=True):
            if _BEGIN.search(before):
                inside = True
            if inside:
                armor += bool(before.strip())
                inside = not _END.search(before)
                continue
            if not before.strip():
                continue
            lines += 1
            if before != after:
                changed += 1
                changes.append(f"{path}: {before.strip()}  ->  {after.strip()}")
    return {"etc_lines": lines, "etc_changed": changed, "etc_armor_lines": armor,
            "etc_changed_pct": round(100 * changed / lines, 3) if lines else None, "changes": changes}


def _baseline_regex() -> re.Pattern[str]:
    parts = []
    for f in FORMATS:
        p = f.regex.pattern
        parts.append(f"(?i:{p[4:]})" if p.startswith("(?i)") else f"(?:{p})")
    return re.compile("|".join(parts))


def throughput(lines: list[str], min_s: float = 2.0) -> tuple[float, float]:
    marker = default_redactor().marker
    big = _baseline_regex()

    def ours() -> None:
        for line in lines:
            redact_line(line)

    def baseline() -> None:
        for line in lines:
            big.sub(lambda m: marker(m.group(0)), line)

    rates: dict[str, list[float]] = {"ours": [], "baseline": []}
    for _ in range(3):  # alternate, so both see the same load
        for name, fn in (("ours", ours), ("baseline", baseline)):
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < min_s / 3:
                fn()
                n += len(lines)
            rates[name].append(n / (time.perf_counter() - start))
    return max(rates["ours"]), max(rates["baseline"])


def scrub_cost(files: list[tuple[str, str]], records: int = 50_000) -> dict:
    """µs a record for SessionSink's scrub, with a session Redactor that learned this machine's /etc."""
    r = Redactor()
    for path, text in files:
        r.learn(text, path)
    burst = [{"op": "created", "path": f"/srv/data/d{i // 1000:04d}/n{i:07d}.dat", "kind": "file", "size": 3,
              "sha256_after": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
              "attribution": {"pid": 4242, "exe": "/usr/bin/python3", "user": "root", "how": "fanotify"}}
             for i in range(records)]
    start = time.process_time()
    for data in burst:
        r.scrub(data)
    return {"scrub_us_per_record": round((time.process_time() - start) / records * 1e6, 2), "etc_known": r.known}


def corpus() -> tuple[list[str], dict]:
    rows = [r.split("\t") for r in CORPUS.read_text().splitlines() if not r.startswith("#")]
    missed = Counter(r[1] for r in rows if r[4] in redact_line(r[3]))
    return [r[3] for r in rows], {"corpus_rows": len(rows), "corpus_survived": sum(missed.values()),
                                  "corpus_families": len({r[1] for r in rows}),
                                  "corpus_missed_by_family": dict(missed)}


def before_ref() -> str:
    deleting = subprocess.run(["git", "-C", str(ROOT), "rev-list", "-1", "HEAD", "--", "agent/capture/redact.py"],
                              capture_output=True, text=True, check=True).stdout.strip()
    return f"{deleting}^"


def capture_cpu(tree: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, str(tree / "bench" / "capture.py"), "--files", str(args.capture_files),
           "--creates", str(args.capture_ops), "--modifies", str(args.capture_ops)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    if result.get("lost_ops"):
        raise SystemExit(f"capture lost {result['lost_ops']} operations in {tree}")
    return float(result["chaperone_cpu_s"])


def capture_before_after(args: argparse.Namespace) -> dict:
    ref = args.before or before_ref()
    with tempfile.TemporaryDirectory(prefix="chaperone-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref],
                                 capture_output=True, check=True).stdout
        tar_path = Path(tmp) / "before.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(Path(tmp) / "tree", filter="data")
        before, after = [], []
        for _ in range(args.capture_rounds):
            before.append(capture_cpu(Path(tmp) / "tree", args))
            after.append(capture_cpu(ROOT, args))
    b, a = sorted(before)[len(before) // 2], sorted(after)[len(after) // 2]
    return {"capture_before_ref": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                                                 capture_output=True, text=True, check=True).stdout.strip(),
            "capture_ops": 2 * args.capture_ops, "capture_rounds": args.capture_rounds,
            "capture_cpu_before_s": round(b, 2), "capture_cpu_after_s": round(a, 2),
            "capture_cpu_ratio": round(a / b, 3) if b else None,
            "capture_cpu_before_runs": before, "capture_cpu_after_runs": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--etc", default="/etc")
    parser.add_argument("--changed", help="write the /etc lines that change to this file")
    parser.add_argument("--no-capture", action="store_true", help="skip the capture burst before and after")
    parser.add_argument("--before", help="the git revision to measure capture before (default: see above)")
    parser.add_argument("--capture-files", type=int, default=20_000)
    parser.add_argument("--capture-ops", type=int, default=20_000, help="creations, and as many appends")
    parser.add_argument("--capture-rounds", type=int, default=3)
    args = parser.parse_args()

    files = etc_files(args.etc)
    prec = precision(files)
    changes = prec.pop("changes")
    if args.changed:
        Path(args.changed).write_text("".join(c + "\n" for c in changes))
    corpus_lines, corpus_figures = corpus()
    etc_lines = [line for _, text in files for line in text.split("\n") if line.strip()]
    mix = etc_lines + corpus_lines
    ours, baseline = throughput(mix)
    result = {"lines_per_s": round(ours), "baseline_lines_per_s": round(baseline),
              "ratio": round(ours / baseline, 3), "mix_lines": len(mix), "etc_files": len(files), **prec,
              **corpus_figures, "formats": len(FORMATS), **scrub_cost(files)}
    if not args.no_capture:
        result.update(capture_before_after(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
