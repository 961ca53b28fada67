"""Safe hashing: regular files only, never blocked or redirected, honest about trouble."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from agent.capture import hashing
from agent.capture.hashing import Hasher, hash_file


def test_a_regular_file_is_hashed_and_its_content_kept_when_asked(tmp_path):
    path = tmp_path / "app.conf"
    path.write_bytes(b"key = value\n")
    result = hash_file(bytes(path), keep_bytes=1024)
    assert (result.kind, result.size, result.error) == ("file", 12, None)
    assert result.sha256 == hashlib.sha256(b"key = value\n").hexdigest()
    assert result.data == b"key = value\n"
    assert hash_file(bytes(path)).data is None


def test_a_file_over_the_cap_is_not_read(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 100)
    result = hash_file(path, max_bytes=10)
    assert result.sha256 is None and result.size == 100
    assert "larger than 10 bytes" in result.error


def test_a_fifo_without_a_writer_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    results = []
    worker = threading.Thread(target=lambda: results.append(hash_file(fifo)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "hashing a FIFO blocked"
    assert results[0].kind == "special" and results[0].sha256 is None


def test_sockets_and_devices_are_special_and_never_opened(tmp_path):
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert hash_file(sock_path).kind == "special"
    assert hash_file("/dev/null").kind == "special"
    assert hash_file("/dev/zero").sha256 is None  # an endless device would never finish


def test_symlinks_are_hashed_by_their_target_text_and_loops_are_harmless(tmp_path):
    (tmp_path / "target").write_text("secret content")
    os.symlink("target", tmp_path / "link")
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    link = hash_file(tmp_path / "link")
    assert link.kind == "symlink"
    assert link.sha256 == hashlib.sha256(b"target").hexdigest()
    loop = hash_file(tmp_path / "loop_a")
    assert loop.kind == "symlink" and loop.sha256 == hashlib.sha256(b"loop_b").hexdigest()


def test_a_file_that_vanished_says_so(tmp_path):
    result = hash_file(tmp_path / "gone")
    assert result.kind == "missing" and result.error == "vanished before it could be read"


def test_a_file_that_grows_while_hashed_is_flagged(tmp_path, monkeypatch):
    path = tmp_path / "growing.log"
    path.write_bytes(b"a" * 4096)
    real_read = os.read
    grown = []

    def read_then_grow(fd, n):  # another writer appends right after our first read
        data = real_read(fd, n)
        if not grown:
            grown.append(True)
            with open(path, "ab") as f:
                f.write(b"b" * 4096)
        return data

    monkeypatch.setattr(hashing.os, "read", read_then_grow)
    result = hash_file(path)
    assert result.changed_while_hashed
    assert result.error == "changed while being hashed"


def test_a_symlink_swapped_in_after_the_lstat_is_not_followed(tmp_path, monkeypatch):
    path = tmp_path / "config"
    path.write_text("x")
    (tmp_path / "elsewhere").write_text("not ours")
    real_open = os.open

    def swap_then_open(p, flags, *args):
        os.unlink(path)
        os.symlink(tmp_path / "elsewhere", path)
        return real_open(p, flags, *args)

    monkeypatch.setattr(hashing.os, "open", swap_then_open)
    result = hash_file(path)
    assert result.kind == "symlink" and result.sha256 is None


@pytest.fixture
def open_folder():
    """A folder that 'nobody' can reach (pytest's tmp_path lives below a root-only folder)."""
    folder = Path(tempfile.mkdtemp(prefix="chaperone-hash-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_an_unreadable_file_is_reported_not_raised(open_folder):
    if os.geteuid() != 0:
        pytest.skip("root reads everything; the check drops privileges to 'nobody' in a forked child")
    path = open_folder / "locked"
    path.write_text("private")
    path.chmod(0)
    hidden = open_folder / "private-folder"
    hidden.mkdir(mode=0o700)
    (hidden / "inside").write_text("private")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, hash, report, leave without running pytest's cleanup
        try:
            os.setgid(65534)
            os.setuid(65534)
            results = [hash_file(p) for p in (path, hidden / "inside")]
            os.write(write_end, json.dumps([os.geteuid()] + [[r.kind, r.sha256, r.error] for r in results]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        report = f.read()
    os.waitpid(pid, 0)
    euid, locked_file, in_locked_folder = json.loads(report)
    assert euid == 65534
    assert locked_file == ["file", None, "unreadable: permission denied"]
    assert in_locked_folder == ["unknown", None, "unreadable: permission denied"]


def test_the_pool_hashes_large_files_off_the_calling_thread(tmp_path):
    path = tmp_path / "large.bin"
    path.write_bytes(os.urandom(3 << 20))
    hasher = Hasher(inline_limit=1 << 20)
    try:
        assert hasher.is_large(path.stat().st_size)
        future = hasher.hash_later(bytes(path))
        assert future.result(timeout=30).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        hasher.close()
