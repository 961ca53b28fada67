"""``agent.atomic``: a file is replaced whole or not at all, private from its first byte."""

from __future__ import annotations

import os
import stat

import pytest

from agent.atomic import replace_file, replacing


def test_the_new_file_replaces_the_old_whole_and_private(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    old_umask = os.umask(0)
    try:
        replace_file(target, b"new" * 100_000)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new" * 100_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_an_error_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "baseline"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(target) as fd:
        os.write(fd, b"half of the new")
        raise RuntimeError("the disk filled up")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["baseline"]


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    target = tmp_path / "access.json"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / f".access.json.{os.getpid()}.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        replace_file(target, b"{}")
    assert victim.read_bytes() == b"keep" and not target.exists()
