"""The tree index and the content baseline, on real files."""

from __future__ import annotations

import os

from agent.capture.baseline import ContentBaseline, TreeIndex


def ops_of(index: TreeIndex, root) -> set[tuple[str, str, bool]]:
    return {(o.op, os.fsdecode(o.path), o.is_dir) for o in index.rescan(os.fsencode(root))}


def test_a_rescan_explains_every_difference_and_then_sees_none(tmp_path):
    (tmp_path / "keep").write_text("same")
    (tmp_path / "change").write_text("v1")
    (tmp_path / "remove").write_text("x")
    (tmp_path / "folder" / "deep").mkdir(parents=True)
    (tmp_path / "folder" / "deep" / "f").write_text("x")
    (tmp_path / "becomes-dir").write_text("x")
    index = TreeIndex()
    seen = []
    assert index.scan(os.fsencode(tmp_path), on_file=lambda p, st: seen.append(os.path.basename(p))) == 7
    assert sorted(seen) == [b"becomes-dir", b"change", b"f", b"keep", b"remove"]

    (tmp_path / "change").write_text("version 2")
    (tmp_path / "remove").unlink()
    (tmp_path / "new").write_text("x")
    (tmp_path / "folder" / "deep" / "f").unlink()
    (tmp_path / "folder" / "deep").rmdir()
    (tmp_path / "becomes-dir").unlink()
    (tmp_path / "becomes-dir").mkdir()
    os.symlink("loop", tmp_path / "loop")  # a symlink loop is an entry, never followed
    assert ops_of(index, tmp_path) == {
        ("modified", f"{tmp_path}/change", False),
        ("deleted", f"{tmp_path}/remove", False),
        ("created", f"{tmp_path}/new", False),
        ("deleted", f"{tmp_path}/folder/deep", True),
        ("deleted", f"{tmp_path}/folder/deep/f", False),
        ("deleted", f"{tmp_path}/becomes-dir", False),
        ("created", f"{tmp_path}/becomes-dir", True),
        ("created", f"{tmp_path}/loop", False),
    }
    assert ops_of(index, tmp_path) == set()


def test_update_follows_single_events(tmp_path):
    index = TreeIndex()
    index.scan(os.fsencode(tmp_path))
    (tmp_path / "a").write_text("x")
    index.update(os.fsencode(tmp_path / "a"), os.lstat(tmp_path / "a"))
    assert ops_of(index, tmp_path) == set()
    (tmp_path / "a").unlink()
    index.update(os.fsencode(tmp_path / "a"), None)
    assert ops_of(index, tmp_path) == set()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner").write_text("x")
    index.update(os.fsencode(tmp_path / "sub"), os.lstat(tmp_path / "sub"))  # a new folder is indexed whole
    assert ops_of(index, tmp_path) == set()
    assert os.fsencode(tmp_path / "sub") in index.folders()


def test_the_baseline_keeps_the_latest_and_caps_text():
    contents = ContentBaseline(max_file_bytes=10, max_total_bytes=15)
    contents.remember_start(b"/etc/a", "h0", "short")
    contents.remember_start(b"/etc/big", "h1", "x" * 11)
    assert contents.last(b"/etc/a").text == "short"
    assert contents.last(b"/etc/big").text is None and contents.last(b"/etc/big").sha256 == "h1"
    contents.remember(b"/etc/a", "h2", "newer")
    assert (contents.last(b"/etc/a").sha256, contents.last(b"/etc/a").text) == ("h2", "newer")
    contents.remember(b"/etc/c", "h3", "0123456789")  # over the total: the hash is kept, the text is not
    assert contents.last(b"/etc/c").text is None
    contents.forget(b"/etc/a")
    assert contents.last(b"/etc/a").sha256 is None
    assert sorted(contents.started_with()) == [b"/etc/a", b"/etc/big"]
