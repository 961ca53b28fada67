"""Review benchmark: 10,000 bundles from 10 devices, against an auditor's shell loop in the same run.

Prints one JSON line:

- ``bundles``: how many bundles were reviewed (``--bundles``, default 10,000);
- ``first_s``: the first ``chaperone review DIR -o review.html --index I`` (a child process; every bundle
  verified, summarised and given its own report, on all cores);
- ``first_json_s``: the same review with ``--json`` and no page (verification and the index only), on a
  fresh index;
- ``loop_s``: an auditor's loop over the same bundles, one at a time, as VERIFY.txt says:
  ``unzip``, ``ssh-keygen -Y verify``, ``sha256sum -c`` in a temporary folder. It is timed on a sample
  (``loop_sample`` bundles, spread over all of them) and scaled to all, as ``loop_scaled: true`` says;
- ``speedup`` = ``loop_s / first_s`` (target >= 10) and ``speedup_json`` = ``loop_s / first_json_s``;
- ``second_s``: the review again after 10 new bundles arrived (target <= 5 s);
- ``peak_rss_mb``: the first review's peak resident memory, the process and its workers together;
- ``*_cpu_s``: the CPU seconds of the same runs (the review's workers and the loop's programs included): on a
  shared machine the wall times above depend on the load (``load_before``); ``speedup_idle_estimate`` =
  ``loop_cpu_s / (first_cpu_s / cores)`` is what the speed-up would be with every core free for the review;
- ``html_open_s``: the review page of every session opening in headless Chromium (until its load event),
  ``first_paint_ms`` and ``filter_ms`` (typing a technician's name into the filter until the rows show).

Bundles are made in-process (``tests.samples.agent_session``): support sessions over SSH of 40 s to an
hour, as the agent writes them today: the technician's programs in full, the customer's 20 to 250
programs counted by name once a minute, a few configuration diffs, other files and ways back in, and
checkpoints at the journal writer's cadence (within 5 s of records, and after every 30 s of quiet: about
120 signed lines in an hour's session, each of which the review checks). Signed with each device's key as
``export_bundle`` signs them. Their ``report.html`` is one of 50 pre-rendered copies (the bundle's copy is
not read by the review, only hashed). ``--legacy`` makes the bundles of the earlier runs instead
(``realistic_session``: every program of the machine in full, but only 8 signed lines per session,
whatever its length), so figures can be compared with those.

    python bench/review.py [--bundles N] [--loop-sample N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.asymmetric import ed25519

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.bundle.layout import JOURNAL, REPORT, SIG, SIGNERS, SUMS, VERIFY, sums_text, verify_text  # noqa: E402
from agent.bundle.report import BundleCopy, render_report  # noqa: E402
from agent.devicekey import DeviceKey  # noqa: E402
from tests.samples import START, SyntheticJournal, agent_session, realistic_session  # noqa: E402

DEVICES = 10
TECHNICIANS = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov",
               "Donald Knuth", "Margaret Hamilton", "Ken Thompson"]


def _keys() -> list[DeviceKey]:
    rnd = random.Random(7)
    return [DeviceKey(ed25519.Ed25519PrivateKey.from_private_bytes(rnd.randbytes(32)), f"chaperone@pc-{i:02d}")
            for i in range(DEVICES)]


_REPORTS: list[bytes] = []
LEGACY = False  # --legacy: the earlier runs' bundles (see the docstring)


def _make(job: tuple[Path, int]) -> int:
    folder, n = job
    keys = _keys()
    key = keys[n % DEVICES]
    rnd = random.Random(n)
    from datetime import timedelta

    journal = SyntheticJournal(f"s-{n:06d}", key, START + timedelta(hours=n * 3))
    (realistic_session if LEGACY else agent_session)(
        journal, customer_processes=rnd.randint(20, 250), seed=n, technician=TECHNICIANS[n % len(TECHNICIANS)],
        ticket=f"INC-{20000 + n}", length_s=rnd.randint(40, 3600))
    data = journal.bytes()
    name = f"INC-{20000 + n}.zip"
    files = {JOURNAL: data, REPORT: _REPORTS[n % len(_REPORTS)],
             VERIFY: verify_text(f"s-{n:06d}", key.principal, key.fingerprint, name).encode(),
             SIGNERS: (key.allowed_signers_line() + "\n").encode()}
    sums = sums_text({k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    files[SUMS] = sums
    files[SIG] = key.sign(sums).encode()
    with zipfile.ZipFile(folder / f"pc-{n % DEVICES:02d}" / name, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, content in files.items():
            zf.writestr(member, content)
    return sum(1 for line in journal.lines if b'"type":"checkpoint"' in line or b'"type":"seal"' in line)


def _init_reports() -> None:
    keys = _keys()
    for n in range(50):
        journal = SyntheticJournal(f"s-template-{n}", keys[0])
        (realistic_session if LEGACY else agent_session)(journal, customer_processes=20 + n * 4, seed=n,
                                                         length_s=40 + n * 70)
        _REPORTS.append(render_report(journal.bytes().splitlines(keepends=True),
                                      copy=BundleCopy("bundle.zip", keys[0].fingerprint)).encode())


def make_bundles(folder: Path, first: int, count: int) -> list[int]:
    """Make the bundles; how many signed lines (checkpoints and seal) each journal has."""
    for i in range(DEVICES):
        (folder / f"pc-{i:02d}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1, initializer=_init_reports) as pool:
        return list(pool.imap_unordered(_make, [(folder, n) for n in range(first, first + count)], chunksize=50))


def devices_file(path: Path) -> None:
    path.write_text("".join(f"pc-{i:02d} {k.allowed_signers_line().split(' ', 1)[1]}\n"
                            for i, k in enumerate(_keys())))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_review(args: list[str]) -> tuple[float, float, float]:
    """(seconds, peak RSS in MB of the process tree, CPU seconds of the tree) of ``chaperone review ARGS``."""
    cpu = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "review", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT)
    peak = 0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    took = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"review failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return took, peak / 1e6, _children_cpu() - cpu


LOOP = r"""
set -e
for z in "$@"; do
  d=$(mktemp -d)
  unzip -q "$z" -d "$d"
  (cd "$d" && ssh-keygen -Y verify -f allowed_signers -I "$(cut -d' ' -f1 allowed_signers)" \
      -n chaperone-session -s SHA256SUMS.sig < SHA256SUMS > /dev/null && sha256sum -c --quiet SHA256SUMS)
  rm -rf "$d"
done
"""


def time_loop(zips: list[Path]) -> tuple[float, float]:
    """(seconds, CPU seconds of bash and every program it ran)."""
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(["bash", "-c", LOOP, "loop", *map(str, zips)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, _children_cpu() - cpu


def open_in_chromium(page: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or
                                                               "/usr/bin/chromedriver"))
    try:
        driver.set_page_load_timeout(300)
        started = time.perf_counter()
        driver.get(page.as_uri())
        opened = time.perf_counter() - started
        paint = driver.execute_script(
            "var p=performance.getEntriesByName('first-contentful-paint')[0];return p?p.startTime:null")
        filter_ms = driver.execute_script("""
            var box=document.getElementById('filter'),t=performance.now();
            box.value='grace';box.dispatchEvent(new Event('input'));
            var shown=document.getElementById('shown').textContent;
            return [performance.now()-t, shown];""")
        return {"html_open_s": round(opened, 2), "first_paint_ms": round(paint or 0), "filter_ms":
                round(filter_ms[0]), "filter_shown": int(filter_ms[1])}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=10_000)
    parser.add_argument("--loop-sample", type=int, default=300)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    parser.add_argument("--legacy", action="store_true", help="the earlier runs' bundles: 8 signed lines each")
    args = parser.parse_args()
    global LEGACY
    LEGACY = args.legacy
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-review-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bundles = work / "bundles"
        started = time.perf_counter()
        signed = make_bundles(bundles, 0, args.bundles)
        made_s = time.perf_counter() - started
        zips = sorted(bundles.rglob("*.zip"))
        sizes = [z.stat().st_size for z in zips]
        devices = work / "devices"
        devices_file(devices)
        os.sync()  # the 10,000 new files' write-back is the bench's own work, not the review's
        time.sleep(2)
        load_before = os.getloadavg()[0]

        first_s, peak, first_cpu = timed_review([str(bundles), "--devices", str(devices), "--index", str(work / "i1"),
                                      "-o", str(work / "review.html")])
        first_json_s, _, json_cpu = timed_review([str(bundles), "--devices", str(devices), "--index", str(work / "i2"),
                                        "--json"])
        step = max(1, len(zips) // args.loop_sample)
        sample = zips[::step][: args.loop_sample]
        loop_sample_s, loop_sample_cpu = time_loop(sample)
        loop_s = loop_sample_s * len(zips) / len(sample)
        loop_cpu = loop_sample_cpu * len(zips) / len(sample)

        make_bundles(bundles, args.bundles, 10)
        os.sync()
        second_s, _, second_cpu = timed_review([str(bundles), "--devices", str(devices), "--index", str(work / "i1"),
                                    "-o", str(work / "review.html")])
        browser = open_in_chromium(work / "review.html")
        print(json.dumps({
            "bundles": len(zips), "first_s": round(first_s, 1), "first_json_s": round(first_json_s, 1),
            "loop_s": round(loop_s, 1), "loop_scaled": len(sample) < len(zips), "loop_sample": len(sample),
            "speedup": round(loop_s / first_s, 1), "speedup_json": round(loop_s / first_json_s, 1),
            "second_s": round(second_s, 2), "peak_rss_mb": round(peak), **browser,
            "first_cpu_s": round(first_cpu, 1), "first_json_cpu_s": round(json_cpu, 1),
            "loop_cpu_s": round(loop_cpu, 1), "second_cpu_s": round(second_cpu, 2),
            "speedup_idle_estimate": round(loop_cpu / (first_cpu / (os.cpu_count() or 1)), 1),
            "signed_lines_mean": round(sum(signed) / len(signed), 1), "legacy_bundles": LEGACY,
            "bundle_kb_median": round(sorted(sizes)[len(sizes) // 2] / 1024), "bundle_kb_max":
                round(max(sizes) / 1024), "cores": os.cpu_count(), "load_before": round(load_before, 2),
            "made_s": round(made_s, 1)}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
