"""The GUI thread's longest stall while 100,000 activity events arrive.

A stand-in agent (a subprocess speaking the local API on a real Unix socket)
streams 100,000 file records as fast as it can, in ``activity`` events of
1,000 items, to the tray's real path: ``AgentClient.subscribe`` and
``describe_all`` in the bridge's thread, the bridge's queue and timer, and
``ActivityModel`` behind a visible ``ActivityWindow`` that follows the newest row.
A 1 ms ``QTimer`` heartbeat on the GUI thread measures the gaps between its
ticks; the longest gap is the longest stall. The baseline is the same
heartbeat, same window, for the same time with no events.

Prints one JSON line. Target: max_stall_ms <= 100.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

EVENTS = 100_000
PER_EVENT = 1_000
TARGET_MS = 100


# --- the stand-in agent (runs in a subprocess) ------------------------------------------------
def serve(socket_path: str) -> None:
    from agent.api.protocol import encode

    items = [{"type": "file", "op": "modified", "path": f"/home/customer/project/src/module_{n:06d}.py",
              "kind": "file", "size": 1000 + n, "sha256_before": f"{n:064x}", "sha256_after": f"{n + 1:064x}",
              "ts": "2026-11-22T03:04:05.123456Z", "seq": n} for n in range(EVENTS)]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(8)
    server.settimeout(1.0)
    parent = os.getppid()
    print("ready", flush=True)

    def handle(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        for line in reader:
            message = json.loads(line)
            op, msg_id = message.get("op"), message.get("id")
            if op == "subscribe":
                conn.sendall(encode({"id": msg_id, "ok": True, "result": {"subscribed": True}}))
                for start in range(0, EVENTS, PER_EVENT):
                    conn.sendall(encode({"event": "activity",
                                         "data": {"items": items[start:start + PER_EVENT], "coalesced": 0}}))
                continue
            result = {"status": {"state": "active", "session": "s-bench", "active": None, "pending": 0},
                      "pending": [], "ping": {"version": 1, "pid": os.getpid()}}.get(op)
            conn.sendall(encode({"id": msg_id, "ok": True, "result": result}))
        conn.close()

    while os.getppid() == parent:   # never outlive the benchmark
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# --- the measurement -----------------------------------------------------------------------
class Heartbeat:
    def __init__(self):
        from PySide6.QtCore import Qt, QTimer

        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(1)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        self._beat()
        return sorted(self.gaps)


def run_until(condition, timeout: float) -> None:
    """Run the real Qt event loop until ``condition()`` holds (checked every 20 ms) or ``timeout``."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.monotonic() + timeout
    check = QTimer()
    check.setInterval(20)

    def poll() -> None:
        if condition() or time.monotonic() >= deadline:
            loop.quit()

    check.timeout.connect(poll)
    check.start()
    loop.exec()
    check.stop()


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from agent.home import Home
    from ui.activity import ActivityModel, ActivityWindow, describe_all
    from ui.bridge import AgentBridge

    app = QApplication([])  # noqa: F841 - the widgets below need a live application
    from ui.compat import bindings_problem

    problem = bindings_problem()
    if problem:
        print(json.dumps({"bench": "ui_burst", "error": problem}))
        return 1
    home = Home(Path(tempfile.mkdtemp(prefix="chaperone-bench-")))
    stub = subprocess.Popen([sys.executable, __file__, "--serve", str(home.socket_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert stub.stdout.readline().strip() == "ready"
        model = ActivityModel()
        window = ActivityWindow(model)
        window.show()
        bridge = AgentBridge(home, activity_transform=describe_all)   # as the tray app builds it
        bridge.activity.connect(model.append_rows)
        beat = Heartbeat()

        # Baseline: the same window and heartbeat with nothing arriving.
        beat.start()
        run_until(lambda: False, 2.0)
        baseline = beat.stop()

        beat.start()
        started = time.perf_counter()
        bridge.start()
        run_until(lambda: model.rowCount() >= EVENTS and bridge.backlog == 0, 120)
        elapsed = time.perf_counter() - started
        gaps = beat.stop()
        bridge.stop()
        window.close()
    finally:
        stub.kill()
        stub.wait()

    def ms(value: float) -> float:
        return round(value * 1000, 1)

    result = {
        "bench": "ui_burst",
        "events": model.rowCount(),
        "seconds_to_show_all": round(elapsed, 2),
        "events_per_s": round(model.rowCount() / elapsed),
        "max_stall_ms": ms(gaps[-1]),
        "p99_gap_ms": ms(gaps[int(len(gaps) * 0.99)]),
        "baseline_max_stall_ms": ms(baseline[-1]),
        "baseline_p99_gap_ms": ms(baseline[int(len(baseline) * 0.99)]),
        "target_ms": TARGET_MS,
        "within_target": gaps[-1] * 1000 <= TARGET_MS,
        "load_avg_1m": round(os.getloadavg()[0], 2),   # other work on the machine stretches every gap
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        raise SystemExit(main())
