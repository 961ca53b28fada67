"""Benchmark: a burst of file creations and modifications, recorded by Chaperone and by inotifywait.

A separate process creates ``--creates`` new files and appends to ``--modifies``
existing ones in a temporary tree of ``--files`` files. Chaperone's real
``Capture`` (in a child process of its own, journaling to a real
``agent.journal.Journal``, else to a plain file: the output says which) and
``inotifywait -m -r`` record it side by side. Prints one JSON line.

Then, each against a baseline in the same run:

- ``exec_total`` / ``exec_recorded``: a shell runs ``--execs`` (10,000) ``/bin/true``
  one after another, marked as the technician's; the agent's lineage and process
  recorder (as root: the kernel's process events) in a process of their own must
  record every one, each with its lineage (``exec_with_lineage``). Baseline: the
  same with the lineage sampling (``exec_recorded_sampled``), what the agent
  records without root.
- ``fs_slowdown``: a small-file workload (``--fs-files`` files of 1 KiB created,
  written and closed, in a separate process, on tmpfs when there is one) timed
  with and without the agent's filesystem-wide fanotify marks
  (``writes.WriteRecorder`` and the lineage, in a process of their own),
  alternating, ``--fs-rounds`` times each; the ratio of the fastest runs (and
  of the medians, ``fs_slowdown_median``). Target: <= 1.10.

    python bench/capture.py                     # the full run: 200,000 files, 100,000 + 100,000 ops
    python bench/capture.py --files 20000 --creates 10000 --modifies 10000   # a quick run
    python bench/capture.py --skip-burst        # only the exec and filesystem-wide figures
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PER_DIR = 1000
TIMEOUT_S = 300


def existing_name(i: int) -> str:
    return f"d{i // PER_DIR:04d}/f{i:07d}.dat"


def new_name(i: int) -> str:
    return f"d{i // PER_DIR:04d}/n{i:07d}.dat"


def make_tree(root: Path, files: int) -> None:
    for d in range((files + PER_DIR - 1) // PER_DIR):
        (root / f"d{d:04d}").mkdir()
    for i in range(files):
        with open(root / existing_name(i), "wb") as f:
            f.write(b"x")


# -- the generator (its own process) -------------------------------------------------


def generate(root: str, creates: int, modifies: int) -> None:
    """Print the time of the first operation, then create and append as fast as possible."""
    print(json.dumps({"first_op": time.time()}), flush=True)
    for i in range(creates):
        with open(os.path.join(root, new_name(i)), "wb") as f:
            f.write(b"new")
    for i in range(modifies):
        with open(os.path.join(root, existing_name(i)), "ab") as f:
            f.write(b"more")
    print(json.dumps({"last_op": time.time()}), flush=True)


# -- Chaperone (its own process) -------------------------------------------------------


class CountingSink:
    """Journals each record, then counts the operations it accounts for."""

    def __init__(self, write, expected: dict[str, int]):
        self._write = write
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(("created", "modified", "deleted", "moved"), 0)
        self.other: dict[str, int] = {}
        self._expected = expected
        self.done_at: float | None = None
        self.done = threading.Event()

    def emit(self, type: str, data: dict) -> None:
        self._write(type, data)
        with self._lock:
            if type == "file":
                if data.get("via") != "creation-write":  # part of a creation already counted
                    self.counts[data["op"]] += 1
                if data.get("temp_created"):  # an atomic save carries its temporary file's creation
                    self.counts["created"] += 1
            elif type == "file-burst":
                for kind, n in data["counts"].items():
                    self.counts[kind] += n
            else:
                self.other[type] = self.other.get(type, 0) + 1
            if self.done_at is None and all(self.counts[k] >= n for k, n in self._expected.items()):
                self.done_at = time.time()
                self.done.set()


def open_journal(workdir: Path):
    """A real Journal when agent.journal has one, else a canonical-JSON file; returns (write, close, name)."""
    try:
        from agent.devicekey import DeviceKey
        from agent.home import Home
        from agent.journal import Journal
    except ImportError:
        from agent.canonical import dumps

        fd = os.open(workdir / "records.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        lock = threading.Lock()

        def write(type, data):
            line = (dumps({"type": type, "data": data}) + "\n").encode()
            with lock:
                os.write(fd, line)

        return write, lambda: os.close(fd), "file"
    home = Home(workdir / "home")
    DeviceKey.init(home)
    journal = Journal.create(workdir / "session.jsonl", "bench", DeviceKey.load(home))
    return (lambda type, data: journal.append(type, data)), journal.close, "journal"


def run_chaperone(root: str, workdir: str, creates: int, modifies: int, fanotify: bool) -> None:
    from agent.capture import Capture

    write, close, sink_kind = open_journal(Path(workdir))
    sink = CountingSink(write, {"created": creates, "modified": modifies})
    cap = Capture(sink, [root], state_dir=Path(workdir), inventory=False, fanotify=fanotify)
    start = time.perf_counter()
    cap.prepare()
    print(json.dumps({"ready": True, "setup_s": time.perf_counter() - start, "sink": sink_kind}), flush=True)
    sys.stdin.readline()  # the parent says: the burst is over (or timed out)
    sink.done.wait(timeout=5)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "done_at": sink.done_at,
        "counts": dict(sink.counts),
        "other": dict(sink.other),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    cap.stop()
    close()
    print(json.dumps(result), flush=True)


# -- inotifywait ----------------------------------------------------------------------


class InotifywaitCounter:
    """Counts creations of new files and close-after-writes of existing ones in inotifywait's output."""

    def __init__(self, out_path: Path, creates: int, modifies: int):
        self._path = out_path
        self._expected = (creates, modifies)
        self.created = self.modified = 0
        self.overflows = 0
        self.done_at: float | None = None
        self._offset = 0
        self._partial = b""

    def poll(self) -> bool:
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            events, _, name = line.partition(b" ")
            base = os.path.basename(name)
            if b"Q_OVERFLOW" in events:
                self.overflows += 1
            elif base.startswith(b"n") and b"CREATE" in events.split(b","):
                self.created += 1
            elif base.startswith(b"f") and b"CLOSE_WRITE" in events.split(b","):
                self.modified += 1
        if self.done_at is None and self.created >= self._expected[0] and self.modified >= self._expected[1]:
            self.done_at = time.time()
        return self.done_at is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000, help="files in the tree before the burst")
    parser.add_argument("--creates", type=int, default=100_000)
    parser.add_argument("--modifies", type=int, default=100_000)
    parser.add_argument("--no-fanotify", action="store_true", help="attribute by guess even as root")
    parser.add_argument("--execs", type=int, default=10_000, help="short execs for exec_total/exec_recorded")
    parser.add_argument("--fs-files", type=int, default=10_000, help="files of the fs_slowdown workload")
    parser.add_argument("--fs-rounds", type=int, default=7)
    parser.add_argument("--fs-dir", help="where the fs_slowdown workload writes (default: /dev/shm, else /tmp)")
    parser.add_argument("--skip-burst", action="store_true", help="only the exec and fs_slowdown figures")
    parser.add_argument("--how", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--role", choices=["bench", "generator", "chaperone", "execs", "fsagent", "fswork"],
                        default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "generator":
        generate(args.root, args.creates, args.modifies)
        return
    if args.role == "chaperone":
        run_chaperone(args.root, args.workdir, args.creates, args.modifies, not args.no_fanotify)
        return
    if args.role == "execs":
        serve_execs(args.how)
        return
    if args.role == "fsagent":
        serve_fs_agent(args.root)
        return
    if args.role == "fswork":
        print(json.dumps(fs_workload(args.root, args.fs_files)), flush=True)
        return
    if args.modifies > args.files:
        parser.error("--modifies cannot exceed --files")
    result = {}
    if not args.skip_burst:
        if shutil.which("inotifywait") is None:
            sys.exit("inotifywait is missing (apt-get install inotify-tools).")
        result = {**bench(args.files, args.creates, args.modifies, fanotify=not args.no_fanotify),
                  **live_alarm_latency()}
    result.update(exec_bench(args.execs))
    result.update(fs_bench(args.fs_files, args.fs_rounds, args.fs_dir))
    print(json.dumps(result))


def bench(files: int, creates: int, modifies: int, *, fanotify: bool) -> dict:
    import psutil

    tick_ms, processes = sampler_tick_ms()
    tmp = Path(tempfile.mkdtemp(prefix="chaperone-bench-"))
    root, workdir = tmp / "tree", tmp / "work"
    root.mkdir()
    workdir.mkdir()
    me = [sys.executable, str(Path(__file__).resolve()), "--creates", str(creates), "--modifies", str(modifies),
          "--root", str(root), "--workdir", str(workdir)] + (["--no-fanotify"] if not fanotify else [])
    try:
        make_tree(root, files)
        out_path = tmp / "inotifywait.out"
        start = time.perf_counter()
        with open(out_path, "wb") as out:
            inw = subprocess.Popen(
                ["inotifywait", "-m", "-r", "-e", "create,close_write,delete,move", "--format", "%e %w%f", str(root)],
                stdout=out, stderr=subprocess.PIPE,
            )
        inw_setup = _wait_for_watches(inw, start)
        chap = subprocess.Popen([*me, "--role", "chaperone"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(chap.stdout.readline())
        counter = InotifywaitCounter(out_path, creates, modifies)
        gen = subprocess.Popen([*me, "--role", "generator"], stdout=subprocess.PIPE, text=True)
        first_op = json.loads(gen.stdout.readline())["first_op"]
        last_op = json.loads(gen.stdout.readline())["last_op"]
        gen.wait()
        deadline = time.time() + TIMEOUT_S
        while not counter.poll() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(3.0)  # Chaperone's last bursts close after a quiet window; give it the same grace
        counter.poll()
        inw_cpu = sum(psutil.Process(inw.pid).cpu_times()[:2])
        inw.terminate()
        inw.wait()
        chap.stdin.write("stop\n")
        chap.stdin.flush()
        result = json.loads(chap.stdout.readline())
        chap.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = result["counts"]
    lost = max(0, creates - counts["created"]) + max(0, modifies - counts["modified"])
    inw_lost = max(0, creates - counter.created) + max(0, modifies - counter.modified)
    return {
        "ops": creates + modifies,
        "recorded_ops": sum(counts.values()),
        "lost_ops": lost,
        "inotifywait_lost_ops": inw_lost,
        "chaperone_done_s": round(result["done_at"] - first_op, 3) if result["done_at"] else None,
        "inotifywait_done_s": round(counter.done_at - first_op, 3) if counter.done_at else None,
        "generator_s": round(last_op - first_op, 3),
        "chaperone_cpu_s": round(result["cpu_s"], 2),
        "inotifywait_cpu_s": round(inw_cpu, 2),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "setup_s": round(ready["setup_s"], 2),
        "inotifywait_setup_s": round(inw_setup, 2),
        "tree_files": files,
        "sampler_tick_ms": round(tick_ms, 2),
        "sampler_processes": processes,
        "sink": ready["sink"],
        "fanotify": fanotify,
        "other_records": result["other"],
        "inotifywait_overflows": counter.overflows,
        "max_user_watches": _read_int("/proc/sys/fs/inotify/max_user_watches"),
        "max_queued_events": _read_int("/proc/sys/fs/inotify/max_queued_events"),
        "cpus": os.cpu_count(),
    }


class _NullSink:
    def emit(self, type: str, data: dict) -> None:
        pass


def sampler_tick_ms(ticks: int = 50) -> tuple[float, int]:
    """What one sample of the lineage's fallback costs when nothing starts, and how many processes it sees."""
    from agent.capture.lineage import Lineage

    lineage = Lineage(prefer="sampled")
    lineage.start()
    sampler = lineage._sampler
    assert sampler is not None
    start = time.perf_counter()
    for _ in range(ticks):
        sampler.sample_now()
    elapsed = time.perf_counter() - start
    watched = len(lineage._table.live)
    lineage.stop()
    return elapsed * 1000 / ticks, watched


# -- every exec (its own process: the agent's lineage and process recorder) ----------------------


class ExecCountingSink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trues = 0
        self.with_lineage = 0
        self.other: dict[str, int] = {}

    def emit(self, type: str, data: dict) -> None:
        with self.lock:
            if type == "process" and data["op"] == "started" and os.path.basename(data["exe"] or "") == "true":
                self.trues += 1
                if data["lineage"]["label"] == "bench" and data["lineage"]["chain"]:
                    self.with_lineage += 1
            elif type != "process":
                self.other[type] = self.other.get(type, 0) + 1


def serve_execs(how: str) -> None:
    from agent.capture.lineage import Lineage
    from agent.capture.processes import ProcessRecorder

    lineage = Lineage(prefer=how)
    lineage.start()
    sink = ExecCountingSink()
    recorder = ProcessRecorder(sink, lineage, label="bench", summary_s=3600)
    recorder.start()
    print(json.dumps({"ready": True, "how": lineage.how}), flush=True)
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "mark":
            print(json.dumps({"marked": lineage.mark(int(arg), "bench")}), flush=True)
        elif word == "done":
            recorder.stop()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({"trues": sink.trues, "with_lineage": sink.with_lineage, "other": sink.other,
                              "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
            break
    lineage.stop()


def count_execs(n: int, how: str) -> dict:
    me = [sys.executable, str(Path(__file__).resolve()), "--role", "execs", "--how", how]
    agent = subprocess.Popen(me, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = json.loads(agent.stdout.readline())
    shell = subprocess.Popen(["sh", "-c", f"read go; i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done; "
                              "echo $i"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    agent.stdin.write(f"mark {shell.pid}\n")
    agent.stdin.flush()
    assert json.loads(agent.stdout.readline())["marked"]
    start = time.perf_counter()
    out, _ = shell.communicate(b"go\n")
    wall = time.perf_counter() - start
    agent.stdin.write("done\n")
    agent.stdin.flush()
    result = json.loads(agent.stdout.readline())
    agent.wait(60)
    return {"ran": int(out), "how": ready["how"], "wall_s": wall, **result}


def exec_bench(n: int) -> dict:
    kernel = count_execs(n, "auto")
    sampled = count_execs(n, "sampled")
    return {
        "exec_total": kernel["ran"],
        "exec_recorded": kernel["trues"],
        "exec_with_lineage": kernel["with_lineage"],
        "exec_missed": kernel["ran"] - kernel["trues"],
        "exec_how": kernel["how"],
        "exec_burst_s": round(kernel["wall_s"], 2),
        "exec_recorder_cpu_s": round(kernel["cpu_s"], 2),
        "exec_other_records": kernel["other"],
        "exec_recorded_sampled": sampled["trues"],
        "exec_sampled_burst_s": round(sampled["wall_s"], 2),
    }


# -- filesystem-wide marks: a small-file workload with and without them --------------------------


def fs_workload(root: str, files: int) -> dict:
    """Create, write and close ``files`` files of 1 KiB: wall time and the writer's own CPU time (the
    kernel's cost of the marks is paid in the writer's system time, whatever else the machine runs)."""
    folders = max(1, files // 1000)
    for d in range(folders):
        os.makedirs(os.path.join(root, f"d{d:03d}"), exist_ok=True)
    data = b"x" * 1024
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for i in range(files):
        with open(os.path.join(root, f"d{i % folders:03d}", f"f{i:06d}"), "wb") as f:
            f.write(data)
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": wall, "cpu_s": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
            "sys_s": cpu1.ru_stime - cpu0.ru_stime}


def serve_fs_agent(watch: str) -> None:
    from agent.capture.lineage import Lineage
    from agent.capture.writes import WriteRecorder

    lineage = Lineage()
    lineage.rest_after_s = float("inf")  # as during a session (its capture subscribes)
    lineage.start()
    writes = WriteRecorder(_NullSink(), lineage, [watch])
    writes.start()
    print(json.dumps({"ready": True, "marked": writes.marked}), flush=True)
    sys.stdin.readline()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    events = writes.events
    writes.stop()
    lineage.stop()
    print(json.dumps({"events": events, "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


def fs_bench(files: int, rounds: int, place: str | None = None) -> dict:
    me = [sys.executable, str(Path(__file__).resolve())]
    # tmpfs when there is one: the marks cost the same there, and other work's disk traffic does not
    # swamp the figure (on a shared machine a disk-bound run varied tenfold between identical runs)
    if place is None:
        place = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="chaperone-fsbench-", dir=place))
    alone, marked, agent_cpu, events = [], [], [], []
    alone_cpu, marked_cpu = [], []
    marks: list[str] = []
    try:
        for r in range(rounds):
            for with_agent in (False, True):
                work = tmp / f"r{r}{'b' if with_agent else 'a'}"
                agent = None
                if with_agent:
                    agent = subprocess.Popen([*me, "--role", "fsagent", "--root", str(tmp / "watched")],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    marks = json.loads(agent.stdout.readline())["marked"]
                out = subprocess.run([*me, "--role", "fswork", "--root", str(work), "--fs-files", str(files)],
                                     capture_output=True, text=True, check=True)
                work_result = json.loads(out.stdout)
                seconds = work_result["seconds"]
                (marked_cpu if with_agent else alone_cpu).append(work_result["cpu_s"])
                if agent is not None:
                    agent.stdin.write("stop\n")
                    agent.stdin.flush()
                    done = json.loads(agent.stdout.readline())
                    agent.wait(60)
                    agent_cpu.append(done["cpu_s"])
                    events.append(done["events"])
                    marked.append(seconds)
                else:
                    alone.append(seconds)
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        # the least disturbed run of each kind: what the marks cost, not what the neighbours did meanwhile
        "fs_slowdown": round(min(marked) / min(alone), 3),
        "fs_slowdown_median": round(statistics.median(marked) / statistics.median(alone), 3),
        "fs_slowdown_writer_cpu": round(min(marked_cpu) / min(alone_cpu), 3),
        "fs_place": str(tmp.parent),
        "fs_files": files,
        "fs_writer_cpu_s": {"without": [round(x, 3) for x in alone_cpu],
                            "with_marks": [round(x, 3) for x in marked_cpu]},
        "fs_workload_s": {"without": [round(x, 3) for x in alone], "with_marks": [round(x, 3) for x in marked]},
        "fs_agent_cpu_s": [round(x, 2) for x in agent_cpu],
        "fs_agent_events": events,
        "fs_marked": marks,
        "load_1min": round(os.getloadavg()[0], 2),
    }


def _wait_for_watches(proc: subprocess.Popen, start: float) -> float:
    """inotifywait says "Watches established." on stderr once it watches the whole tree."""
    for line in proc.stderr:
        if b"Watches established" in line:
            return time.perf_counter() - start
    raise SystemExit("inotifywait stopped before watching the tree.")


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


# -- live ways back in: change -> alarm (agent.capture.inventory.live) ---------------------------------


class _AlarmSink:
    """Notes when each way-back-in alarm arrives (monotonic clock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alarms: list[tuple[float, str]] = []

    def emit(self, type: str, data: dict) -> None:
        if type == "alarm":
            with self.lock:
                self.alarms.append((time.monotonic(), data.get("item", "")))

    def first(self, part: str) -> float | None:
        with self.lock:
            return next((t for t, item in self.alarms if part in item), None)


def _fake_key(i: int) -> tuple[str, str]:
    """An authorized_keys line with a key of its own, and that key's fingerprint."""
    from agent.sshkeys import fingerprint

    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} bench{i}", fingerprint(blob)


def _thread_cpu_s(tid: int | None) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc (0 when unknown)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_alarm_latency(rounds: int = 40, idle_s: float = 10.0) -> dict:
    """Change -> alarm of the live inventory watcher, against inotifywait seeing the same change.

    A temporary machine root (the real listening/remote-access polls run too). Each round makes one
    way back in, in turn: an SSH key, a cron job, an ld.so.preload entry, a sudoers file, a user; the
    latency is from just before the write to the alarm's emit. ``inotifywait -m`` watches the same
    folders: its latency (change -> its line read) is the floor. Then the watcher thread's own CPU
    while nothing changes (its polls of ports and programs).
    """
    from agent.capture.inventory import collectors_of, take_snapshot
    from agent.capture.inventory.linux import linux_categories
    from agent.capture.inventory.live import LiveInventory

    tmp = Path(tempfile.mkdtemp(prefix="chaperone-live-"))
    etc, home = tmp / "etc", tmp / "home" / "bench"
    for sub in ("cron.d", "sudoers.d", "ssh", "pam.d", "systemd/system"):
        (etc / sub).mkdir(parents=True)
    (home / ".ssh").mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nbench:x:1000:1000::/home/bench:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nbench:x:1000:\n")
    (etc / "sudoers").write_text("@includedir /etc/sudoers.d\n")
    categories = linux_categories(str(tmp))
    sink = _AlarmSink()
    live = LiveInventory(sink, take_snapshot(collectors_of(categories)), categories, root=str(tmp))
    folders = [str(home / ".ssh"), str(etc / "cron.d"), str(etc), str(etc / "sudoers.d")]
    seen: list[tuple[float, str]] = []
    inw = subprocess.Popen(["inotifywait", "-m", "-q", "-e", "close_write,moved_to,create", "--format", "%w%f",
                            *folders], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def read() -> None:
        for line in inw.stdout:
            seen.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ours, theirs = [], []
    try:
        live.start()
        live.ready.wait(60)
        time.sleep(1.0)  # inotifywait's watches are set
        for i in range(rounds):
            kind = i % 5
            if kind == 0:
                line, part = _fake_key(i)
                path, mode, text = home / ".ssh" / "authorized_keys", "a", line + "\n"
            elif kind == 1:
                path, part, mode, text = etc / "cron.d" / f"job{i}", f"job{i}:", "w", f"* * * * * root /bin/job{i}\n"
            elif kind == 2:
                path, part, mode, text = etc / "ld.so.preload", f"/lib/bench{i}.so", "a", f"/lib/bench{i}.so\n"
            elif kind == 3:
                path, part, mode, text = etc / "sudoers.d" / f"rule{i}", f"rule{i}:", "w", f"u{i} ALL=(ALL) ALL\n"
            else:
                path, part, mode = etc / "passwd", f"user{i}", "a"
                text = f"user{i}:x:{2000 + i}:100::/nonexistent:/bin/sh\n"
            start = time.monotonic()
            with open(path, mode) as f:
                f.write(text)
            deadline = start + 10
            while time.monotonic() < deadline and (sink.first(part) is None or
                                                   not any(t >= start and p == str(path) for t, p in seen)):
                time.sleep(0.005)
            got = sink.first(part)
            ours.append(got - start if got is not None else float("inf"))
            theirs.append(next((t - start for t, p in seen if t >= start and p == str(path)), float("inf")))
            time.sleep(0.3)
        thread = live._thread.native_id if live._thread is not None else None
        before = _thread_cpu_s(thread)
        time.sleep(idle_s)
        idle_cpu = (_thread_cpu_s(thread) - before) / idle_s * 100
    finally:
        live.stop()
        inw.terminate()
        inw.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)

    return {
        "live_alarm_p95_s": pct(ours, 0.95),
        "live_alarm_p50_s": pct(ours, 0.5),
        "live_alarm_max_s": round(max(ours), 3),
        "live_alarm_inotifywait_p95_s": pct(theirs, 0.95),
        "live_alarm_changes": rounds,
        "live_alarm_missed": sum(1 for v in ours if v == float("inf")),
        "live_idle_cpu_pct": round(idle_cpu, 2),
    }


if __name__ == "__main__":
    main()
