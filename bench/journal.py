"""Journal benchmark: append throughput against a bare baseline, and verification of 1,000,000 records.

Prints one JSON line:

- ``append_per_s``: ``Journal.append`` as shipped (canonical line, hash chain,
  one ``os.write`` per record, group fsync and signed checkpoints by the
  background thread), timed from the first append to the seal and close;
- ``baseline_per_s``: the same records through a bare ``json.dumps`` and a
  buffered ``write`` loop, then one fsync, in the same run;
- ``verify_per_s`` / ``verify_peak_rss_mb``: ``verify_journal`` over the
  journal just written, in a child process so its peak memory is its own.

Wall-clock rates depend on what else the machine runs, so the CPU-time rates
(``*_cpu_*``) and the load average before the run are printed too.

Records are realistic ``file`` records (paths, sizes, hashes, attribution, a
redacted diff for one in ten), cycled from a pool of 10,000.

    python bench/journal.py [--records N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.devicekey import DeviceKey
from agent.home import Home
from agent.journal import Journal

POOL = 10_000
_VERIFY_CHILD = """
import json, sys, time
from agent.journal import verify_journal
start, cpu = time.perf_counter(), time.process_time()
check = verify_journal(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                  "ok": check.ok, "records": check.records,
                  "checkpoints": check.checkpoints, "reason": check.reason}))
"""


def file_records(count: int) -> list[dict]:
    """A pool of ``file`` records shaped like capture's."""
    ops = ("created", "modified", "modified", "modified", "deleted", "moved")
    users = ("alice", "root", "bob")
    exes = ("/usr/bin/python3.11", "/usr/bin/vim", "/usr/bin/dpkg", "/bin/cp", "/usr/bin/rsync")
    records = []
    for i in range(count):
        op = ops[i % len(ops)]
        record = {
            "op": op,
            "path": f"/home/{users[i % 3]}/projects/app-{i % 97}/src/module_{i}/settings-{i % 13}.json",
            "kind": "file",
            "size": (i * 7919) % 5_000_000,
            "sha256_before": hashlib.sha256(b"b%d" % i).hexdigest(),
            "sha256_after": hashlib.sha256(b"a%d" % i).hexdigest(),
            "secret": False,
            "attribution": {"pid": 1000 + i % 5000, "exe": exes[i % len(exes)], "user": users[i % 3],
                            "how": "fanotify"},
        }
        if op == "moved":
            record["dest"] = record["path"] + ".bak"
        if i % 10 == 0:
            record["diff"] = (f"--- a/settings-{i % 13}.json\n+++ b/settings-{i % 13}.json\n@@ -3,2 +3,2 @@\n"
                              f'-  "level": {i % 5},\n+  "level": {i % 5 + 1},\n   "token": "[REDACTED]"\n')
        records.append(record)
    return records


def bench_append(path: Path, key: DeviceKey, pool: list[dict], count: int) -> tuple[float, float]:
    """Records per second of wall time and of CPU time (all threads)."""
    journal = Journal.create(path, "bench-session", key)
    start, cpu = time.perf_counter(), time.process_time()
    append = journal.append
    for i in range(count):
        append("file", pool[i % POOL])
    journal.seal({"reason": "technician"})
    journal.close()
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def bench_baseline(path: Path, pool: list[dict], count: int) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    with open(path, "w", encoding="utf-8") as out:
        write, dumps = out.write, json.dumps
        for i in range(count):
            write(dumps(pool[i % POOL]) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def bench_verify(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _VERIFY_CHILD, str(path)], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chaperone-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        key, _ = DeviceKey.init(Home(work / "home"))
        pool = file_records(POOL)
        journal_path = work / "session.jsonl"
        load = os.getloadavg()[0]
        append_per_s, append_cpu_per_s = bench_append(journal_path, key, pool, args.records)
        baseline_per_s, baseline_cpu_per_s = bench_baseline(work / "baseline.jsonl", pool, args.records)
        verify = bench_verify(journal_path)
        if not verify["ok"]:
            print(f"verification failed: {verify['reason']}", file=sys.stderr)
            return 1
        print(json.dumps({
            "records": args.records,
            "append_per_s": round(append_per_s),
            "baseline_per_s": round(baseline_per_s),
            "append_vs_baseline": round(append_per_s / baseline_per_s, 3),
            "verify_per_s": round(verify["records"] / verify["seconds"]),
            "verify_s": round(verify["seconds"], 2),
            "append_cpu_per_s": round(append_cpu_per_s),
            "baseline_cpu_per_s": round(baseline_cpu_per_s),
            "verify_cpu_s": round(verify["cpu_seconds"], 2),
            "verify_peak_rss_mb": round(verify["peak_rss_mb"], 1),
            "journal_mb": round(journal_path.stat().st_size / 2**20, 1),
            "checkpoints": verify["checkpoints"],
            "cpus": os.cpu_count(),
            "load_avg_1m_before": round(load, 2),
        }))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
