"""Journal benchmark: append throughput against a bare baseline, and verification of 1,000,000 records.

Prints one JSON line:

- ``append_per_s``: ``Journal.append`` as shipped (canonical line, hash chain,
  one ``os.write`` per record, group sync and signed checkpoints by the
  background thread), including the final seal and close;
- ``baseline_per_s``: the same records through a bare ``json.dumps`` and a
  buffered ``write`` loop with an fsync per round, in the same run — the two
  alternate in rounds (``--rounds``), so both see the same machine load;
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


def bench_write(journal_path: Path, baseline_path: Path, key: DeviceKey, pool: list[dict], count: int,
                rounds: int) -> dict:
    """Append through the journal and the baseline in alternating rounds, so
    that both see the same load from whatever else the machine runs. Each
    journal round ends with a checkpoint, which syncs everything it wrote."""
    journal = Journal.create(journal_path, "bench-session", key)
    wall = {"append": 0.0, "baseline": 0.0}
    cpu = {"append": 0.0, "baseline": 0.0}
    per_round = count // rounds
    with open(baseline_path, "w", encoding="utf-8") as out:
        write, dumps, append = out.write, json.dumps, journal.append
        for r in range(rounds):
            first = r * per_round
            start, cpu_start = time.perf_counter(), time.process_time()
            for i in range(first, first + per_round):
                append("file", pool[i % POOL])
            if r == rounds - 1:
                journal.seal({"reason": "technician"})
                journal.close()
            else:
                journal.checkpoint()
            wall["append"] += time.perf_counter() - start
            cpu["append"] += time.process_time() - cpu_start

            start, cpu_start = time.perf_counter(), time.process_time()
            for i in range(first, first + per_round):
                write(dumps(pool[i % POOL]) + "\n")
            out.flush()
            os.fsync(out.fileno())
            wall["baseline"] += time.perf_counter() - start
            cpu["baseline"] += time.process_time() - cpu_start
    records = per_round * rounds
    return {f"{k}_per_s": records / wall[k] for k in wall} | {f"{k}_cpu_per_s": records / cpu[k] for k in cpu}


def bench_verify(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _VERIFY_CHILD, str(path)], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10, help="alternating journal/baseline rounds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chaperone-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        key, _ = DeviceKey.init(Home(work / "home"))
        pool = file_records(POOL)
        journal_path = work / "session.jsonl"
        load = os.getloadavg()[0]
        rates = bench_write(journal_path, work / "baseline.jsonl", key, pool, args.records, args.rounds)
        verify = bench_verify(journal_path)
        if not verify["ok"]:
            print(f"verification failed: {verify['reason']}", file=sys.stderr)
            return 1
        print(json.dumps({
            "records": args.records,
            "append_per_s": round(rates["append_per_s"]),
            "baseline_per_s": round(rates["baseline_per_s"]),
            "append_vs_baseline": round(rates["append_per_s"] / rates["baseline_per_s"], 3),
            "verify_per_s": round(verify["records"] / verify["seconds"]),
            "verify_s": round(verify["seconds"], 2),
            "append_cpu_per_s": round(rates["append_cpu_per_s"]),
            "baseline_cpu_per_s": round(rates["baseline_cpu_per_s"]),
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
