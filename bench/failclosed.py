"""How fast a technician's SSH connection is ended when recording stops; prints one JSON line.

Each run: a fresh home, a real agent (``python -m agent agent``, capture off:
the path measured does not depend on it) with its guard, a real sshd on
127.0.0.1 with the installer's drop-in, the customer allows, the technician
logs in and stays connected. Then one of:

- ``kill9``: ``kill -9`` of the agent -> the guard sees the pipe end;
- ``sigstop``: ``SIGSTOP`` of the agent -> the guard sees it stopped (1 s);
- ``end`` (the baseline, in the same run): ``chaperone end`` -> the agent's
  own SSH hook ends the connection (SIGTERM, the normal path);

and the time until the technician's ``ssh`` process exits (polled every
millisecond) is taken. Also: the guard's CPU share and RSS while a session
runs and nothing happens (``--idle-seconds``); and what keeping the file
baseline for a restart costs on a tree of ``--files`` files: saving and
loading ``baseline.bin``, against the scan that builds it (the baseline).

Target (issue 11): the connection ended within 10 s; p95 well under it.

    python bench/failclosed.py [--runs 10] [--idle-seconds 20]      (root: sshd on a test port)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.capture.baseline import ContentBaseline, TreeIndex, load_baseline, save_baseline  # noqa: E402
from agent.devicekey import DeviceKey  # noqa: E402
from agent.home import Home  # noqa: E402
from tests.fixtures.agent import AgentProcess  # noqa: E402
from tests.fixtures.sshd import SSHKeys, SSHServer  # noqa: E402

ALICE = "alice@acme.example"
TARGET_S = 10.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Run:
    """One home, agent, sshd and live technician connection."""

    def __init__(self, folder: Path, keys: SSHKeys, alice: Path):
        self.home = Home(folder / "h")
        DeviceKey.init(self.home)
        self.home.trusted_technicians_path.write_text(f"{ALICE} {keys.line(f'{alice}.pub')}\n")
        self.home.settings_path.write_text(json.dumps({"ssh": {"consent_wait_s": 30, "duration": "1h"}}))
        self.agent = AgentProcess(self.home, consent_timeout=60, env={"CHAPERONE_HOME": str(self.home.path)}).start()
        self.server = SSHServer(self.home, folder / "sshd").start()
        self.agent.decide_when_pending("allow")
        self.live = self.server.popen_ssh("root", alice, "echo connected; sleep 300")
        line = self.live.stdout.readline().strip()
        if line != "connected":
            raise RuntimeError(f"the technician could not log in: {self.live.stderr.read()}")
        self.session = self.agent.call("status")["session"]

    def guard(self) -> psutil.Process:
        children = psutil.Process(self.agent.pid).children()
        (guard,) = [c for c in children if "agent.service.guard" in " ".join(c.cmdline())]
        return guard

    def until_ended(self) -> float:
        started = time.monotonic()
        while self.live.poll() is None:
            if time.monotonic() - started > 60:
                raise RuntimeError("the connection was not ended within 60 s")
            time.sleep(0.001)
        return time.monotonic() - started

    def close(self) -> None:
        if self.agent.proc.poll() is None:
            self.agent.proc.send_signal(signal.SIGCONT)
        self.agent.close()
        self.server.stop()
        if self.live.poll() is None:
            self.live.kill()
        self.live.wait()


def measure(mode: str, folder: Path, keys: SSHKeys, alice: Path) -> float:
    run = Run(folder, keys, alice)
    try:
        if mode == "kill9":
            os.kill(run.agent.pid, signal.SIGKILL)
        elif mode == "sigstop":
            os.kill(run.agent.pid, signal.SIGSTOP)
        else:
            subprocess.Popen([sys.executable, "-m", "agent", "end", run.session, "--home", str(run.home.path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return run.until_ended()
    finally:
        run.close()


def idle_guard(folder: Path, keys: SSHKeys, alice: Path, seconds: float) -> dict:
    run = Run(folder, keys, alice)
    try:
        guard, agent = run.guard(), psutil.Process(run.agent.pid)
        g0, a0, t0 = guard.cpu_times(), agent.cpu_times(), time.monotonic()
        time.sleep(seconds)
        g1, a1, t1 = guard.cpu_times(), agent.cpu_times(), time.monotonic()
        return {
            "guard_cpu_percent": round(max(0.0, 100 * (g1.user + g1.system - g0.user - g0.system) / (t1 - t0)), 3),
            "agent_cpu_percent": round(100 * (a1.user + a1.system - a0.user - a0.system) / (t1 - t0), 3),
            "guard_rss_mb": round(guard.memory_info().rss / 2**20, 1),
        }
    finally:
        run.close()


def baseline_cost(folder: Path, files: int) -> dict:
    root = folder / "tree"
    per_dir = 500
    for i in range(files):
        sub = root / f"d{i // per_dir}"
        if i % per_dir == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i}").write_bytes(b"x")
    index = TreeIndex()
    t0 = time.perf_counter()
    index.scan(os.fsencode(root))
    t1 = time.perf_counter()
    record = save_baseline(folder / "baseline.bin", index, ContentBaseline())
    t2 = time.perf_counter()
    saved = load_baseline(folder / "baseline.bin", record["sha256"])
    t3 = time.perf_counter()
    changes = saved.index.rescan(os.fsencode(root))
    t4 = time.perf_counter()
    assert changes == []
    return {"baseline_files": files, "baseline_scan_s": round(t1 - t0, 3), "baseline_save_s": round(t2 - t1, 3),
            "baseline_load_s": round(t3 - t2, 3), "baseline_rescan_s": round(t4 - t3, 3),
            "baseline_mb": round(record["bytes"] / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--files", type=int, default=200_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"bench": "failclosed", "skipped": "needs root (a real sshd on a test port)"}))
        return 0
    with tempfile.TemporaryDirectory(prefix="fc-bench-") as tmp:
        folder = Path(tmp)
        keys = SSHKeys(folder / "keys")
        alice = keys.key("alice")
        times: dict[str, list[float]] = {"kill9": [], "sigstop": [], "end": []}
        for i in range(args.runs):
            for mode in times:  # interleaved, so that load affects all three alike
                times[mode].append(measure(mode, folder / f"{mode}-{i}", keys, alice))
        idle = idle_guard(folder / "idle", keys, alice, args.idle_seconds)
        cost = baseline_cost(folder, args.files)
    result: dict = {"bench": "failclosed", "runs": args.runs, "target_s": TARGET_S}
    for mode, values in times.items():
        result[f"{mode}_p50_s"] = round(statistics.median(values), 3)
        result[f"{mode}_p95_s"] = round(percentile(values, 95), 3)
        result[f"{mode}_max_s"] = round(max(values), 3)
    result.update(idle)
    result.update(cost)
    result["within_target"] = max(times["kill9"] + times["sigstop"]) <= TARGET_S
    print(json.dumps(result))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
