"""The real Capture on real files in a temporary folder, with a list-collecting sink."""

from __future__ import annotations

import base64
import errno
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.canonical import check_canonical
from agent.capture import Capture, classify, default_watch_paths, inotify, system_config_paths
from agent.capture import files as files_module
from tests.conftest import wait_for


class ListSink:
    """Collects records; checks each is canonical JSON, as the journal will."""

    def __init__(self):
        self.records: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict) -> None:
        check_canonical(data)
        with self._lock:
            self.records.append((type, data))

    def of(self, type: str) -> list[dict]:
        with self._lock:
            return [d for t, d in self.records if t == type]

    def files(self, op: str | None = None, path: Path | str | None = None) -> list[dict]:
        return [
            d for d in self.of("file") if (op is None or d["op"] == op) and (path is None or d["path"] == str(path))
        ]


@pytest.fixture
def watched(tmp_path):
    root = tmp_path / "watched"
    root.mkdir()
    (root / "existing.txt").write_text("before\n")
    (root / "app.conf").write_text("name = demo\npassword = hunter2\n")
    (root / "sub").mkdir()
    return root


@pytest.fixture
def capture(watched, monkeypatch):
    monkeypatch.setattr(files_module, "WATCH_AUDIT_S", 0.1)  # run the periodic audit within each test
    sink = ListSink()
    cap = Capture(sink, [watched], inventory=False)
    cap.prepare()
    yield cap, sink, watched
    cap.stop()
    internal = [e for e in sink.of("capture-error") if e["what"] in ("file-recorder", "process-sampler")]
    assert internal == []


@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")  # watchdog's own mkdir -p race, harmless
def test_new_folders_get_watches_and_the_audit_agrees(capture):
    cap, sink, root = capture
    (root / "fresh" / "deeper").mkdir(parents=True)
    (root / "fresh" / "deeper" / "f.txt").write_text("x")
    assert wait_for(lambda: sink.files("created", root / "fresh" / "deeper" / "f.txt"))
    time.sleep(0.5)  # a few audit periods
    assert sink.of("watch-limit") == []


def test_each_kind_of_event_becomes_a_record(capture, tmp_path):
    cap, sink, root = capture
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "incoming.txt").write_text("from outside")

    (root / "new.txt").write_text("hello")
    assert wait_for(lambda: sink.files("created", root / "new.txt"))  # else the rename would carry it
    with open(root / "existing.txt", "a") as f:
        f.write("after\n")
    os.rename(root / "new.txt", root / "sub" / "renamed.txt")
    os.rename(outside / "incoming.txt", root / "incoming.txt")
    (root / "sub" / "leaving.txt").write_text("bye")
    os.rename(root / "sub" / "leaving.txt", outside / "left.txt")
    (root / "newdir").mkdir()
    (root / "gone.txt").write_text("x")
    os.unlink(root / "gone.txt")
    (root / "sub" / "inner").mkdir()
    (root / "sub" / "inner").rmdir()

    expected = [
        ("created", root / "new.txt"),
        ("modified", root / "existing.txt"),
        ("moved", root / "new.txt"),
        ("created", root / "incoming.txt"),
        ("deleted", root / "sub" / "leaving.txt"),
        ("created", root / "newdir"),
        ("deleted", root / "gone.txt"),
        ("created", root / "sub" / "inner"),
        ("deleted", root / "sub" / "inner"),
    ]
    assert wait_for(lambda: all(sink.files(op, p) for op, p in expected)), sink.of("file")

    modified = sink.files("modified", root / "existing.txt")[0]
    assert modified["sha256_before"] is None  # not a configuration file: no baseline
    assert modified["size"] == len("before\nafter\n") and modified["kind"] == "file"
    moved = sink.files("moved", root / "new.txt")[0]
    assert moved["dest"] == str(root / "sub" / "renamed.txt") and "temp_created" not in moved
    assert sink.files("created", root / "incoming.txt")[0]["via"] == "move-in"
    assert sink.files("deleted", root / "sub" / "leaving.txt")[0]["via"] == "move-out"
    assert sink.files("created", root / "newdir")[0]["kind"] == "dir"
    assert sink.files("deleted", root / "sub" / "inner")[0]["kind"] == "dir"


def test_a_config_change_has_hashes_and_a_redacted_diff(capture):
    cap, sink, root = capture
    conf = root / "app.conf"
    before = conf.read_bytes()
    conf.write_text("name = demo2\npassword = swordfish\n")
    assert wait_for(lambda: sink.files("modified", conf))
    record = sink.files("modified", conf)[0]
    import hashlib

    assert record["sha256_before"] == hashlib.sha256(before).hexdigest()
    assert record["sha256_after"] == hashlib.sha256(conf.read_bytes()).hexdigest()
    assert "+name = demo2" in record["diff"] and "-name = demo" in record["diff"]
    assert "swordfish" not in record["diff"] and "hunter2" not in record["diff"]
    assert "[redacted" in record["diff"]
    assert record["secret"] is False


def test_a_secret_file_gets_hashes_and_no_diff(capture):
    cap, sink, root = capture
    key = root / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    assert wait_for(lambda: sink.files("created", key))
    record = sink.files("created", key)[0]
    assert record["secret"] is True and record["sha256_after"]
    assert "diff" not in record and "AAAA" not in repr(sink.records)


def test_large_files_are_hashed_off_the_hot_path_and_huge_diffs_left_out(capture):
    import hashlib

    cap, sink, root = capture
    large = root / "disk.img"
    large.write_bytes(os.urandom(5 << 20))
    long_config = root / "long.conf"
    long_config.write_text("".join(f"option_{i} = {i}\n" for i in range(20_000)))
    assert wait_for(lambda: sink.files("created", large) and sink.files("created", long_config))
    record = sink.files("created", large)[0]
    assert record["size"] == 5 << 20
    assert record["sha256_after"] == hashlib.sha256(large.read_bytes()).hexdigest()
    assert "diff" not in record
    config = sink.files("created", long_config)[0]
    assert "diff" not in config and config["diff_omitted"].startswith("diff longer than")


def test_a_change_the_watcher_missed_is_found_when_the_session_ends(watched):
    sink = ListSink()
    conf = watched / "app.conf"
    same_size = watched / "same.conf"
    same_size.write_text("mode = safe\n")
    # Opened before the session: writes through them raise no closed-after-write event.
    stealthy = [os.open(conf, os.O_WRONLY), os.open(same_size, os.O_WRONLY)]
    try:
        cap = Capture(sink, [watched], inventory=False)
        cap.prepare()
        os.pwrite(stealthy[0], b"name = evil\n", 0)
        stat_before = same_size.stat()
        os.pwrite(stealthy[1], b"mode = evil\n", 0)  # same size, and the old mtime put back below
        os.utime(same_size, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
        time.sleep(0.6)  # give the watcher time to (not) report them
        assert sink.files("modified") == []
        cap.stop()
    finally:
        for fd in stealthy:
            os.close(fd)
    rescan = sink.files("modified", conf)
    assert [r["via"] for r in rescan] == ["rescan"]  # size or mtime changed: the final rescan finds it
    assert "+name = evil" in rescan[0]["diff"]
    recheck = sink.files("modified", same_size)
    # size and mtime are as before, but the change time cannot be put back: the rescan finds it too
    assert [r["via"] for r in recheck] == ["rescan"]
    assert "+mode = evil" in recheck[0]["diff"] and "-mode = safe" in recheck[0]["diff"]


def test_hostile_names_and_special_files_are_recorded_safely(capture):
    cap, sink, root = capture
    raw_root = os.fsencode(root)
    newline_name = raw_root + b"/two\nlines.txt"
    latin1_name = raw_root + b"/caf\xe9.txt"
    for name in (newline_name, latin1_name):
        with open(name, "wb") as f:
            f.write(b"data")
    fifo = root / "pipe"
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "s.sock"))
        os.symlink("loop_b", root / "loop_a")
        os.symlink("loop_a", root / "loop_b")
        assert wait_for(
            lambda: sink.files("created", str(root) + "/two\\nlines.txt")
            and sink.files("created", str(root) + "/caf\\xe9.txt")
            and sink.files("created", fifo)
            and sink.files("created", root / "s.sock")
            and sink.files("created", root / "loop_a")
        ), sink.of("file")
    latin1 = sink.files("created", str(root) + "/caf\\xe9.txt")[0]
    assert base64.b64decode(latin1["path_b64"]) == latin1_name
    assert "path_b64" not in sink.files("created", str(root) + "/two\\nlines.txt")[0]
    assert sink.files("created", fifo)[0]["kind"] == "special"
    assert sink.files("created", fifo)[0]["sha256_after"] is None
    assert sink.files("created", root / "s.sock")[0]["kind"] == "special"
    assert sink.files("created", root / "loop_a")[0]["kind"] == "symlink"


def test_a_watch_path_removed_during_the_session_is_recorded(tmp_path):
    root = tmp_path / "doomed"
    (root / "deep").mkdir(parents=True)
    (root / "deep" / "f.txt").write_text("x")
    sink = ListSink()
    cap = Capture(sink, [root], inventory=False)
    cap.prepare()
    subprocess.run(["rm", "-rf", str(root)], check=True)
    assert wait_for(lambda: any(e["what"] == "watch-path-removed" for e in sink.of("capture-error")))
    cap.stop()
    removed = [e for e in sink.of("capture-error") if e["what"] == "watch-path-removed"]
    assert removed[0]["path"] == str(root)
    deleted = {d["path"] for d in sink.files("deleted")}
    assert {str(root / "deep" / "f.txt"), str(root / "deep"), str(root)} <= deleted


def test_stop_without_prepare_or_twice_records_nothing_more(watched):
    sink = ListSink()
    Capture(sink, [watched], inventory=False).stop()
    assert sink.records == []
    cap = Capture(sink, [watched], inventory=False)
    cap.prepare()
    (watched / "once.txt").write_text("x")
    cap.stop()
    count = len(sink.records)
    cap.stop()
    assert len(sink.records) == count and len(sink.files("created", watched / "once.txt")) == 1


def test_a_missing_watch_path_is_a_record_not_a_crash(tmp_path):
    sink = ListSink()
    cap = Capture(sink, [tmp_path / "nope"], inventory=False)
    cap.prepare()
    cap.stop()
    assert [e["what"] for e in sink.of("capture-error") if e["what"].startswith("watch")] == ["watch-path-missing"]


def test_a_burst_is_coalesced_and_every_operation_accounted_for(tmp_path):
    root = tmp_path / "burst"
    folders, per_folder = 10, 1000
    for d in range(folders):
        (root / f"d{d}").mkdir(parents=True)
    sink = ListSink()
    cap = Capture(sink, [root], inventory=False)
    cap.prepare()
    try:
        generator = (
            "import os, sys\n"
            "root, folders, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
            "for d in range(folders):\n"
            "    for i in range(per):\n"
            "        with open(f'{root}/d{d}/f{i}', 'wb') as f: f.write(b'n')\n"
            "for d in range(folders):\n"
            "    for i in range(per):\n"
            "        with open(f'{root}/d{d}/f{i}', 'ab') as f: f.write(b'm')\n"
        )
        subprocess.run([sys.executable, "-c", generator, str(root), str(folders), str(per_folder)], check=True)
        expected = folders * per_folder

        def counted() -> dict[str, int]:
            totals = dict.fromkeys(("created", "modified", "deleted", "moved"), 0)
            for d in sink.files():
                if d.get("via") != "creation-write":
                    totals[d["op"]] += 1
            for burst in sink.of("file-burst"):
                for kind, n in burst["counts"].items():
                    totals[kind] += n
            return totals

        assert wait_for(lambda: counted()["created"] >= expected and counted()["modified"] >= expected, 60)
    finally:
        cap.stop()
    totals = counted()
    bursts = sink.of("file-burst")
    assert bursts, "thousands of changes in a folder should be coalesced"
    assert {b["root"] for b in bursts} <= {str(root / f"d{d}") for d in range(folders)}
    assert all(b["paths"] >= 1 and len(b["names_sha256"]) == 64 for b in bursts)
    if not sink.of("overflow"):  # a rescan after an overflow may count an operation twice, never lose one
        assert totals == {"created": expected, "modified": expected, "deleted": 0, "moved": 0}
    assert totals["created"] >= expected and totals["modified"] >= expected


def test_our_inotify_instance_gets_a_deep_queue_and_the_setting_is_put_back():
    if os.geteuid() != 0:
        pytest.skip("fs.inotify.max_queued_events can be raised by root only")
    saved = inotify.MAX_QUEUED_EVENTS.read_text()
    with inotify.deep_kernel_queue():
        assert int(inotify.MAX_QUEUED_EVENTS.read_text()) == inotify.KERNEL_QUEUE_EVENTS
    assert inotify.MAX_QUEUED_EVENTS.read_text() == saved


def test_an_overflow_is_recorded_and_answered_by_a_rescan(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("lowering fs.inotify.max_queued_events needs root")
    monkeypatch.setattr(inotify, "KERNEL_QUEUE_EVENTS", 0)  # keep the tiny queue set below
    root = tmp_path / "flood"
    root.mkdir()
    sink = ListSink()
    cap = Capture(sink, [root], inventory=False, fanotify=False)
    # The setting is read when an instance is made; other Chaperone processes wait for the lock meanwhile.
    with inotify.inotify_queue_size(16, only_raise=False):
        cap.prepare()
    try:
        names = [f"f{i}" for i in range(3000)]  # touch makes them faster than any reader takes 16 at a time
        subprocess.run(["touch", *names], cwd=root, check=True)
        assert wait_for(lambda: sink.of("overflow"), 30)
    finally:
        cap.stop()
    overflow = sink.of("overflow")[0]
    assert overflow["root"] == str(root) and overflow["rescanned"] is True
    created = len([d for d in sink.files("created")]) + sum(b["counts"]["created"] for b in sink.of("file-burst"))
    assert created >= 3000


def test_a_write_to_a_file_whose_creation_was_lost_records_the_creation(capture):
    import hashlib

    cap, sink, root = capture
    late = root / "sub" / "late.txt"
    late.write_text("one")
    assert wait_for(lambda: sink.files("created", late))
    cap._index.update(os.fsencode(late), None)  # as if its creation's event had been lost in an overflow
    with open(late, "a") as f:
        f.write("two")
    assert wait_for(lambda: len(sink.files("created", late)) == 2)
    record = sink.files("created", late)[1]
    assert record["via"] == "first-write" and record["sha256_after"] == hashlib.sha256(b"onetwo").hexdigest()
    assert [r for r in sink.files("modified", late) if r.get("via") != "creation-write"] == []


def test_folders_without_a_watch_are_rescanned_periodically(watched, monkeypatch):
    """watchdog skips folders it cannot watch (max_user_watches) without a word: the audit finds them.

    Exhausting the real per-user limit would break every other watcher on this shared machine, so the
    audit is shown an inotify instance that lacks the watch of one folder."""
    sub_inode = (watched / "sub").stat().st_ino
    real = files_module.EventSource.watched_inodes
    monkeypatch.setattr(files_module.EventSource, "watched_inodes", lambda self: (real(self) or set()) - {sub_inode})
    monkeypatch.setattr(files_module, "UNWATCHED_RESCAN_S", 0.2)
    sink = ListSink()
    cap = Capture(sink, [watched], inventory=False)
    cap.prepare()
    try:
        limit = sink.of("watch-limit")
        assert [r["root"] for r in limit] == [str(watched / "sub")]
        assert "max_user_watches" in limit[0]["detail"]
        cap._watcher._source.unschedule(os.fsencode(watched))  # now truly unwatched: only the rescan can see it
        (watched / "sub" / "late.txt").write_text("x")
        assert wait_for(lambda: sink.files("created", watched / "sub" / "late.txt"))
    finally:
        cap.stop()
    assert sink.files("created", watched / "sub" / "late.txt")[0]["via"] == "rescan"


def test_a_root_that_cannot_be_watched_is_said_and_rescanned(watched, monkeypatch):
    def no_watches_left(self, root):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(files_module.EventSource, "schedule", no_watches_left)
    monkeypatch.setattr(files_module, "UNWATCHED_RESCAN_S", 0.2)
    sink = ListSink()
    cap = Capture(sink, [watched], inventory=False)
    cap.prepare()
    try:
        (watched / "seen-by-rescan.txt").write_text("x")
        assert wait_for(lambda: sink.files("created", watched / "seen-by-rescan.txt"))
    finally:
        cap.stop()
    assert [r["root"] for r in sink.of("watch-limit")] == [str(watched)]
    assert "inotify watch limit reached" in sink.of("watch-limit")[0]["detail"]
    assert sink.files("created", watched / "seen-by-rescan.txt")[0]["via"] == "rescan"


def test_changes_are_attributed_to_the_writer(capture):
    cap, sink, root = capture
    target = root / "written-by-child.conf"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nopen(sys.argv[1], 'w').write('a = 1\\n')\ntime.sleep(1)", str(target)]
    )
    try:
        assert wait_for(lambda: sink.files("created", target))
    finally:
        child.wait()
    attribution = sink.files("created", target)[0].get("attribution")
    assert attribution is not None
    if attribution["how"] == "fanotify":
        assert attribution["pid"] == child.pid
    else:
        assert attribution["how"] == "guess"


def test_configuration_is_known_by_place_and_name_and_caches_are_not():
    places = classify.ConfigPlaces([b"/home/u"], (b"/etc/",))
    config = [b"/etc/ssl/private/k", b"/home/u/.bashrc", b"/home/u/.ssh/id_rsa", b"/home/u/.config/autostart/x.desktop",
              b"/home/u/proj/app.yaml", b"/home/u/proj/.env", b"/home/u/proj/crontab"]
    not_config = [b"/home/u/notes.txt", b"/home/u/proj/main.c", b"/home/u/.cache/x/y.json",
                  b"/home/u/proj/node_modules/a/package.json", b"/home/u/.pyenv/versions/lib/x.py"]
    assert [p for p in config if p not in places] == []
    assert [p for p in not_config if p in places] == []


def test_the_baseline_stops_reading_at_its_cap_and_says_so(watched, monkeypatch):
    import agent.capture as capture_module

    monkeypatch.setattr(capture_module, "BASELINE_MAX_FILES", 1)
    (watched / "second.conf").write_text("b = 2\n")
    sink = ListSink()
    cap = Capture(sink, [watched], inventory=False)
    cap.prepare()
    cap.stop()
    assert [e["what"] for e in sink.of("capture-error")] == ["baseline-cap"]


def test_default_watch_paths_are_the_home_and_the_system_configuration():
    paths = default_watch_paths()
    assert str(Path.home()) in paths
    assert "/etc" in paths
    assert r"System32\drivers\etc" in " ".join(system_config_paths("win32"))
    assert "/Library/LaunchDaemons" in system_config_paths("darwin")


def test_a_health_check_while_capture_starts_finds_nothing_dead(watched, monkeypatch):
    """The fail-closed check (``dead_workers``) runs on the agent's loop while capture starts in a thread. A
    thread that was made but not started yet is not dead: taking it for dead failed a session closed at its
    start on a busy machine (the technician could not log in). Each start is checked at its worst moment."""
    sink = ListSink()
    cap = Capture(sink, [watched], inventory=False)
    seen: list[list[str]] = []
    real_start = threading.Thread.start

    def start_after_a_check(thread: threading.Thread) -> None:
        seen.append(cap.dead_workers())
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_after_a_check)
    try:
        cap.prepare()
    finally:
        monkeypatch.undo()
    try:
        assert seen and all(dead == [] for dead in seen), seen
        assert cap.dead_workers() == []
    finally:
        cap.stop()
