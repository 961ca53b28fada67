"""Our inotify reader: the byte parser (hypothesis), and the reader on a real inotify instance."""

from __future__ import annotations

import os
import queue
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture import inotify_events as ev
from agent.capture.bursts import Op
from agent.capture.inotify import EventSource, Overflow
from tests.conftest import wait_for

names = st.binary(min_size=0, max_size=255).filter(lambda b: b"\0" not in b)
events = st.lists(
    st.tuples(
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        names,
        st.integers(0, 64),  # padding, as the kernel pads names to its alignment
    ),
    max_size=40,
)


@given(events, st.data())
@settings(max_examples=300, deadline=None)
def test_a_batch_split_anywhere_parses_back_exactly(batch, data):
    buf = b"".join(ev.pack_event(wd, mask, cookie, name, pad_to=pad) for wd, mask, cookie, name, pad in batch)
    cut = data.draw(st.integers(0, len(buf)), label="cut")
    first, end = ev.parse_events(buf[:cut])
    assert end <= cut
    second, end2 = ev.parse_events(buf[:cut][end:] + buf[cut:])
    assert end2 == len(buf) - end
    assert first + second == [(wd, mask, cookie, name) for wd, mask, cookie, name, _ in batch]


@given(events, st.binary(max_size=40))
@settings(max_examples=100, deadline=None)
def test_parsing_from_an_offset_skips_what_comes_before(batch, before):
    buf = before + b"".join(ev.pack_event(wd, mask, cookie, name, pad_to=pad) for wd, mask, cookie, name, pad in batch)
    parsed, end = ev.parse_events(buf, len(before))
    assert end == len(buf) and parsed == [(wd, mask, cookie, name) for wd, mask, cookie, name, _ in batch]


def test_a_name_cannot_hold_a_nul():
    with pytest.raises(ValueError):
        ev.pack_event(1, ev.IN_CREATE, 0, b"a\0b")


def test_the_header_is_the_kernels_16_bytes():
    assert ev.HEADER_SIZE == 16
    assert ev.parse_events(ev.pack_event(7, ev.IN_CREATE, 0, b"x", pad_to=16)) == ([(7, ev.IN_CREATE, 0, b"x")], 32)


# -- the reader on a real inotify instance ---------------------------------------------------

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "old").mkdir()
    (root / "old" / "inside.txt").write_text("x")
    events: queue.SimpleQueue = queue.SimpleQueue()
    src = EventSource(events)
    src.schedule(os.fsencode(root))
    src.start()
    got: list = []

    def drain() -> list:
        while True:
            try:
                got.append(events.get_nowait())
            except queue.Empty:
                return got

    yield src, root, drain, tmp_path
    assert src.dead_threads() == []  # nothing in the test killed the reader
    src.stop()
    assert not src._reader.is_alive()


def ops(items: list) -> list[tuple]:
    return [(o.op, os.fsdecode(o.path), o.is_dir, o.dest and os.fsdecode(o.dest), o.via) for o in items
            if type(o) is Op]


def test_each_operation_is_queued_once_in_the_kernels_order(source):
    src, root, drain, tmp = source
    outside = tmp / "outside"
    outside.mkdir()
    (root / "a.txt").write_text("1")
    os.rename(root / "a.txt", root / "b.txt")
    os.rename(root / "b.txt", outside / "b.txt")  # out: a move's first half that waits for nothing
    (root / "after.txt").write_text("2")  # queued behind it: the order stays the kernel's
    os.rename(outside / "b.txt", root / "back.txt")
    os.unlink(root / "back.txt")
    r = str(root)
    expected = [
        ("created", f"{r}/a.txt", False, None, None),
        ("modified", f"{r}/a.txt", False, None, None),
        ("moved", f"{r}/a.txt", False, f"{r}/b.txt", None),
        ("deleted", f"{r}/b.txt", False, None, "move-out"),
        ("created", f"{r}/after.txt", False, None, None),
        ("modified", f"{r}/after.txt", False, None, None),
        ("created", f"{r}/back.txt", False, None, "move-in"),
        ("deleted", f"{r}/back.txt", False, None, None),
    ]
    assert wait_for(lambda: len(ops(drain())) >= len(expected))
    assert ops(drain()) == expected


def test_a_new_folder_tree_is_watched_and_each_path_counted_once(source):
    src, root, drain, _ = source
    deep = root / "n1" / "n2" / "n3"
    deep.mkdir(parents=True)
    for i in range(50):
        (deep / f"f{i}").write_text("x")
    (root / "n1" / "late.txt").write_text("y")
    created = lambda: [o[1] for o in ops(drain()) if o[0] == "created"]  # noqa: E731 - a short probe
    assert wait_for(lambda: f"{root}/n1/late.txt" in created())
    made = created()
    want = {f"{root}/n1", f"{root}/n1/n2", str(deep), f"{root}/n1/late.txt", *(f"{deep}/f{i}" for i in range(50))}
    assert set(made) == want and len(made) == len(want)  # a listing and the kernel never both count one


def test_a_folder_moved_within_keeps_its_watches_under_its_new_name(source):
    src, root, drain, _ = source
    os.rename(root / "old", root / "new")
    assert wait_for(lambda: ("moved", f"{root}/old", True, f"{root}/new", None) in ops(drain()))
    assert ("moved", f"{root}/old/inside.txt", False, f"{root}/new/inside.txt", None) in ops(drain())
    (root / "new" / "later.txt").write_text("z")
    assert wait_for(lambda: ("created", f"{root}/new/later.txt", False, None, None) in ops(drain()))


def test_a_folder_moved_out_is_no_longer_watched_and_one_moved_in_is(source):
    src, root, drain, tmp = source
    os.rename(root / "old", tmp / "gone")
    assert wait_for(lambda: ("deleted", f"{root}/old", True, None, "move-out") in ops(drain()))
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "brought.txt").write_text("b")
    os.rename(tmp / "elsewhere", root / "arrived")
    assert wait_for(lambda: ("created", f"{root}/arrived", True, None, "move-in") in ops(drain()))
    assert ("created", f"{root}/arrived/brought.txt", False, None, None) in ops(drain())
    (tmp / "gone" / "unseen.txt").write_text("u")
    (root / "arrived" / "seen.txt").write_text("s")
    assert wait_for(lambda: ("created", f"{root}/arrived/seen.txt", False, None, None) in ops(drain()))
    assert not [o for o in ops(drain()) if "unseen" in o[1]]


def test_the_kernels_overflow_is_an_overflow_item_per_root(source):
    src, root, drain, _ = source
    src._reader._take(ev.pack_event(-1, ev.IN_Q_OVERFLOW, 0))
    assert Overflow(os.fsencode(root)) in drain()


def test_a_removed_root_is_a_deleted_folder(source):
    src, root, drain, _ = source
    os.unlink(root / "old" / "inside.txt")
    os.rmdir(root / "old")
    os.rmdir(root)
    assert wait_for(lambda: ("deleted", str(root), True, None, None) in ops(drain()))
