"""Benchmark: what following every process costs, while a burst of short processes runs. One JSON line.

A burst of ``--burst`` short processes (``/bin/true`` from a shell loop, 2,000 by default) runs
three ways in the same run: with no lineage at all (the baseline: how long the burst takes), and
with the agent's :class:`agent.capture.lineage.Lineage` in a process of its own (as root: the
proc connector, plus fanotify for the programs), once with the burst's shell marked as a
technician's (their arguments are then read at every exec) and once unmarked (the customer's).
The figure is the lineage process's CPU time during the burst divided by the burst's wall time:
its share of one core. Target: ``lineage_cpu_share`` (the technician's burst) <= 0.05.

    python bench/lineage.py [--burst 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SHARE = 0.05


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_lineage() -> None:
    """The child: a Lineage, driven by lines on stdin (``mark PID``, ``cpu``, ``sync``, ``quit``)."""
    from agent.capture.lineage import Lineage

    lineage = Lineage()
    lineage.rest_after_s = float("inf")  # measured while following (it rests only when nothing needs it)
    lineage.start()
    print(json.dumps({"ready": True, "how": lineage.how, "programs": lineage.why_no_programs is None}), flush=True)
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "mark":
            print(json.dumps({"marked": lineage.mark(int(arg), "bench")}), flush=True)
        elif word == "cpu":
            print(json.dumps({"cpu": _cpu()}), flush=True)
        elif word == "sync":
            synced = lineage.sync(timeout=30)
            print(json.dumps({"cpu": _cpu(), "synced": synced, "events": lineage.events,
                              "overflows": lineage.overflows}), flush=True)
        elif word == "quit":
            break
    lineage.stop()


def burst_shell(n: int) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", f"read go; i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def run_burst(shell: subprocess.Popen) -> float:
    start = time.perf_counter()
    shell.stdin.write(b"go\n")
    shell.stdin.close()
    shell.wait()
    return time.perf_counter() - start


def _ask(child: subprocess.Popen, line: str) -> dict:
    child.stdin.write(line + "\n")
    child.stdin.flush()
    return json.loads(child.stdout.readline())


def with_lineage(n: int, *, technician: bool) -> dict:
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", "lineage"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(child.stdout.readline())
        shell = burst_shell(n)
        if technician:
            assert _ask(child, f"mark {shell.pid}")["marked"]
        _ask(child, "sync")
        cpu0 = _ask(child, "cpu")["cpu"]
        wall = run_burst(shell)
        done = _ask(child, "sync")
        _ask_quit(child)
    finally:
        if child.poll() is None:
            child.kill()
    return {"cpu_s": round(done["cpu"] - cpu0, 3), "burst_s": round(wall, 3),
            "share": round((done["cpu"] - cpu0) / wall, 4), "how": ready["how"], "programs": ready["programs"],
            "overflows": done["overflows"]}


def _ask_quit(child: subprocess.Popen) -> None:
    child.stdin.write("quit\n")
    child.stdin.flush()
    child.wait(30)


def measure(n: int = 2000) -> dict:
    baseline = run_burst(burst_shell(n))
    technician = with_lineage(n, technician=True)
    customer = with_lineage(n, technician=False)
    return {
        "bench": "lineage",
        "burst": n,
        "lineage_cpu_share": technician["share"],
        "lineage_cpu_share_customer": customer["share"],
        "technician": technician,
        "customer": customer,
        "baseline_burst_s": round(baseline, 3),
        "burst_slowdown": round(technician["burst_s"] / baseline, 3),
        "target_share": TARGET_SHARE,
        "meets_target": technician["share"] <= TARGET_SHARE,
        "load_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--role", choices=["bench", "lineage"], default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "lineage":
        serve_lineage()
        return
    print(json.dumps(measure(args.burst)))


if __name__ == "__main__":
    main()
