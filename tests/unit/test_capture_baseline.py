"""The tree index and the content baseline, on real files."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from agent.capture.baseline import BASELINE_FILE, ContentBaseline, TreeIndex, load_baseline, save_baseline


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


# --- the baseline on disk -------------------------------------------------------------------------



def test_a_write_through_a_hard_link_with_the_mtime_put_back_is_a_change(tmp_path):
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()
    (watched / "authorized_keys").write_text("ssh-ed25519 AAAA customer\n")
    os.link(watched / "authorized_keys", elsewhere / "link")
    index = TreeIndex()
    index.scan(os.fsencode(watched))
    before = os.stat(watched / "authorized_keys")
    with open(elsewhere / "link", "r+") as f:  # same size, through the other name
        f.write("ssh-ed25519 BBBB intruder\n"[: before.st_size])
    os.utime(elsewhere / "link", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(watched / "authorized_keys")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert ops_of(index, watched) == {("modified", f"{watched}/authorized_keys", False)}


def test_the_saved_baseline_gives_back_the_same_index_and_hashes_and_no_contents(tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "secret.conf").write_text("password = hunter2\n")
    (root / "plain").write_text("x")
    (root / bytes.fromhex("ff6e616d65").decode("utf-8", "surrogateescape")).write_text("odd name")
    index = TreeIndex()
    index.scan(os.fsencode(root))
    contents = ContentBaseline()
    contents.remember_start(os.fsencode(root / "a" / "b" / "secret.conf"), "ab" * 32, "password = hunter2\n")
    path = tmp_path / "state" / BASELINE_FILE
    path.parent.mkdir()
    record = save_baseline(path, index, contents)
    data = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"hunter2" not in data  # hashes and signatures only
    assert record == {"file": BASELINE_FILE, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                      "folders": 3, "paths": 5, "hashes": 1}
    saved = load_baseline(path, record["sha256"])
    assert saved.same_hash and saved.start_hashes == {os.fsencode(root / "a" / "b" / "secret.conf"): "ab" * 32}
    assert list(saved.index.dump()) == list(index.dump())
    (root / "plain").write_text("changed")
    assert ops_of(saved.index, root) == {("modified", f"{root}/plain", False)}


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "unrecorded"])
def test_a_saved_baseline_that_is_not_the_recorded_one_is_refused(tmp_path, damage):
    index = TreeIndex()
    index.scan(os.fsencode(tmp_path))
    path = tmp_path / BASELINE_FILE
    sha = save_baseline(path, index, ContentBaseline())["sha256"]
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[-2] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-3])
    elif damage == "missing":
        path.unlink()
    with pytest.raises(ValueError) as err:
        load_baseline(path, None if damage == "unrecorded" else sha)
    assert "baseline" in str(err.value)


def test_update_names_brings_the_index_to_what_is_there_now(tmp_path):
    """The recorder re-indexes the names a burst counted with update_names: afterwards a rescan finds
    nothing, and what it did not name is left for the rescan (an overflow's lost events stay visible)."""
    (tmp_path / "kept.txt").write_text("1")
    (tmp_path / "gone.txt").write_text("2")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "inner.txt").write_text("i")
    index = TreeIndex()
    index.scan(os.fsencode(tmp_path))
    (tmp_path / "kept.txt").write_text("changed, longer")
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "old" / "inner.txt").unlink()
    (tmp_path / "old").rmdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "deep.txt").write_text("d")
    (tmp_path / "unnamed.txt").write_text("u")
    index.update_names(os.fsencode(tmp_path), [b"kept.txt", b"gone.txt", b"old", b"new"])
    assert ops_of(index, tmp_path) == {("created", str(tmp_path / "unnamed.txt"), False)}
    assert index.holds(os.fsencode(tmp_path / "new" / "deep.txt"))
    index.update_names(os.fsencode(tmp_path / "nowhere"), [b"x"])  # a folder the index lacks: nothing
