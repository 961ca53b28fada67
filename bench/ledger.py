"""Ledger benchmark: appends, proofs and memory on a 1,000,000-entry ledger, and a witness round trip.

Prints one JSON line:

- ``append_per_s``: ``Ledger.append`` as shipped (leaf and node hashes, three
  ``os.write`` per entry under the lock), for ``--entries`` journal-checkpoint
  lines, with the final sync and signed head included;
- ``baseline_per_s``: the same hashing (leaf hash, node hashes of the right
  edge) over the same lines by a bare loop with no I/O, in the same run;
- ``inclusion_ms`` / ``consistency_ms``: the mean time to make (read from the
  files) one inclusion proof for a random entry, and one consistency proof from
  a random older size, against the full ledger reopened from disk; ``*_p99_ms``
  too, and the time to reopen it (``open_ms``);
- ``peak_rss_mb``: the peak resident memory of the child process that built
  the ledger and made the proofs (Python and its imports included: they
  alone are ``python_rss_mb``);
- ``witness_p95_ms``: a real witness (``python -m agent witness serve``) on
  127.0.0.1: for each of ``--rounds`` rounds, append an entry, sign a head, and
  send it with its consistency proof; the 95th percentile of the round trip
  (client side, proof included).

    python bench/ledger.py [--entries 1000000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path

from agent.devicekey import DeviceKey
from agent.home import Home
from agent.ledger import Ledger

# A journal checkpoint line as the agent logs it (about 560 bytes with its SSHSIG).
LINE = (b'{"data":{"count":%d,"head":"%s","key":"SHA256:OEjtd8xL1H8Ni4zAKvf7Gwglu/wci/d7IQorO1BPQYM",'
        b'"sig":"-----BEGIN SSH SIGNATURE-----\\nU1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgn2bVc8Hr2xw0sLAbpKvYB1Mb'
        b'\\nkRkE6u3rN1gR3Oa5Tz0AAAARY2hhcGVyb25lLXNlc3Npb24AAAAAAAAABnNoYTUxMgAAAFMAAAALc3No\\nLWVkMjU1MTkAAABA'
        b'yvP1r8H0bbbVv0cQ2h7o7kG1C8r6bA0Qw8lqH2d7fW9cP4X1Ydn2tE0zq3m\\nKcQ5i8ZpLr9a1sVbR0dQ2q3sCg==\\n'
        b'-----END SSH SIGNATURE-----\\n"},"prev":"%s","seq":%d,"session":"s-20261122-7KQ3XZ",'
        b'"ts":"2026-11-22T03:04:05.123456Z","type":"checkpoint","v":1}')


def line(i: int) -> bytes:
    head = sha256(b"%d" % i).hexdigest().encode()
    return LINE % (i, head, head, i)


def baseline(count: int) -> float:
    """Leaf and right-edge node hashes for ``count`` lines, no I/O: the hashing the ledger must do."""
    frontier: list[bytes] = []
    start = time.perf_counter()
    for n in range(count):
        h = sha256(b"\x00" + line(n)).digest()
        m = n
        while m & 1:
            h = sha256(b"\x01" + frontier.pop() + h).digest()
            m >>= 1
        frontier.append(h)
    return count / (time.perf_counter() - start)


def build_and_prove(home: Path, count: int, samples: int) -> dict:
    """Run in a child process: its peak RSS is the ledger's (and Python's)."""
    h = Home(home)
    random.seed(7)
    imports_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = baseline(count)
    with Ledger.open(h) as ledger:
        start = time.perf_counter()
        for n in range(count):
            ledger.append(line(n))
        ledger.sign_head()
        append_s = time.perf_counter() - start
    start = time.perf_counter()
    ledger = Ledger.open(h)
    open_ms = (time.perf_counter() - start) * 1000
    size = ledger.size
    inclusion, consistency = [], []
    for _ in range(samples):
        i = random.randrange(size)
        t = time.perf_counter()
        ledger.inclusion_proof(i, size)
        inclusion.append((time.perf_counter() - t) * 1000)
        old = random.randrange(1, size)
        t = time.perf_counter()
        ledger.consistency_proof(old, size)
        consistency.append((time.perf_counter() - t) * 1000)
    ledger.close()
    inclusion.sort()
    consistency.sort()
    return {
        "entries": count,
        "append_per_s": round(count / append_s),
        "baseline_per_s": round(base),
        "open_ms": round(open_ms, 1),
        "inclusion_ms": round(sum(inclusion) / samples, 3),
        "inclusion_p99_ms": round(inclusion[int(samples * 0.99) - 1], 3),
        "consistency_ms": round(sum(consistency) / samples, 3),
        "consistency_p99_ms": round(consistency[int(samples * 0.99) - 1], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python_rss_mb": round(imports_rss, 1),
        "disk_mb": round(sum(f.stat().st_size for f in (home / "ledger").iterdir()) / 1e6, 1),
    }


def witness_rounds(home: Path, witness_home: Path, rounds: int) -> float:
    # Imported here: aiohttp adds ~16 MB, which must not count in the ledger child's peak memory.
    from agent.witness import Cosigned, WitnessClient

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "agent", "witness"]
    vkey = subprocess.run(cli + ["init", "--home", str(witness_home)], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()
    h = Home(home)
    ledger = Ledger.open(h)
    subprocess.run(cli + ["trust", ledger.origin, ledger.vkey, "--home", str(witness_home)], check=True,
                   capture_output=True, env=env)
    log = open(witness_home / "serve.log", "w+")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(cli + ["serve", "--listen", "127.0.0.1:0", "--home", str(witness_home)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = None
        for _ in range(400):
            match = re.search(r"listening on (http://\S+)", (witness_home / "serve.log").read_text())
            if match:
                url = match.group(1)
                break
            time.sleep(0.05)
        if url is None:
            raise SystemExit("the witness did not start: " + (witness_home / "serve.log").read_text())

        async def run() -> list[float]:
            client = WitnessClient(url, vkey)
            times = []
            old = 0
            try:
                for n in range(rounds + 5):
                    ledger.append(line(ledger.size))
                    head = ledger.sign_head()
                    t = time.perf_counter()
                    result = await client.submit(head.note, old, ledger.consistency_proof)
                    elapsed = (time.perf_counter() - t) * 1000
                    if not isinstance(result, Cosigned):
                        raise SystemExit(f"the witness did not cosign: {result}")
                    old = head.size
                    if n >= 5:  # the first rounds open the connection and warm up
                        times.append(elapsed)
            finally:
                await client.close()
            return times

        times = sorted(asyncio.run(run()))
        return times[int(len(times) * 0.95) - 1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log.close()
        ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(build_and_prove(Path(args.child), args.entries, args.samples)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    try:
        home = Home(tmp / "home")
        DeviceKey.init(home)
        load = os.getloadavg()[0]
        child = subprocess.run([sys.executable, __file__, "--child", str(home.path), "--entries", str(args.entries),
                                "--samples", str(args.samples)], capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise SystemExit(child.stderr)
        result = json.loads(child.stdout)
        result["witness_p95_ms"] = round(witness_rounds(home.path, tmp / "witness", args.rounds), 2)
        result["witness_rounds"] = args.rounds
        result["load_before"] = round(load, 2)
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
