"""Atomic saves: a temporary file written and renamed over its target is one modification of the target.

The real tools (``sed -i``, ``os.replace``) on real files under the real Capture,
and the coalescer's accounting of the folded creation.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture import Capture
from agent.capture import files as files_module
from agent.capture.bursts import BurstCoalescer, Op
from tests.conftest import require_program
from tests.unit.test_capture_files import ListSink, wait_for

CONF_BEFORE = "name = demo\npassword = hunter2\nport = 1\nmode = strict\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def session(tmp_path, monkeypatch):
    """A capture of ``tmp_path/watched``; a one-second window keeps a save's steps in one window even on a busy machine."""
    monkeypatch.setattr(files_module, "BurstCoalescer", partial(BurstCoalescer, window=1.0))
    root = tmp_path / "watched"
    root.mkdir()
    (root / "app.conf").write_text(CONF_BEFORE)
    sink = ListSink()
    cap = Capture(sink, [root], inventory=False)
    cap.prepare()
    yield cap, sink, root
    cap.stop()


def changed_lines(diff: str) -> list[str]:
    return [
        line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_sed_in_place_is_one_modification_of_the_target_with_a_redacted_diff(session):
    require_program("sed")
    cap, sink, root = session
    conf = root / "app.conf"
    before = conf.read_bytes()
    subprocess.run(["sed", "-i", "s/^port = 1$/port = 2/", str(conf)], check=True)
    after = conf.read_bytes()
    assert wait_for(lambda: sink.files("modified", conf))
    cap.stop()  # the final rescan and recheck must not add a record either

    records = sink.of("file")
    assert len(records) == 1, records
    record = records[0]
    assert record["op"] == "modified" and record["path"] == str(conf)
    assert record["via"] == "replace" and record["temp_created"] is True
    temp = record["replaced_by"]
    assert os.path.dirname(temp) == str(root) and os.path.basename(temp).startswith("sed")
    assert record["sha256_before"] == sha256(before)
    assert record["sha256_after"] == sha256(after) != sha256(before)
    assert record["size"] == len(after)
    assert changed_lines(record["diff"]) == ["-port = 1", "+port = 2"]
    assert "hunter2" not in record["diff"] and "[redacted" in record["diff"]  # the secret is context, hidden
    assert "mode = strict" in record["diff"]  # harmless context stays readable


def test_os_replace_of_a_temp_file_modifies_the_target(session):
    cap, sink, root = session
    conf = root / "app.conf"
    before = conf.read_bytes()
    new = CONF_BEFORE.replace("mode = strict", "mode = lax").encode()
    with tempfile.NamedTemporaryFile(dir=root, prefix=".app.conf.", delete=False) as f:
        f.write(new)
    os.replace(f.name, conf)
    assert wait_for(lambda: sink.files("modified", conf))
    cap.stop()

    records = sink.of("file")
    assert len(records) == 1, records
    record = records[0]
    assert (record["op"], record["via"], record["replaced_by"]) == ("modified", "replace", f.name)
    assert record["temp_created"] is True
    assert (record["sha256_before"], record["sha256_after"]) == (sha256(before), sha256(new))
    assert changed_lines(record["diff"]) == ["-mode = strict", "+mode = lax"]


def test_a_rename_to_a_new_name_is_a_move_that_carries_the_creation(session):
    cap, sink, root = session
    temp = root / ".fresh.conf.tmp"
    temp.write_text("listen = 8080\n")
    os.rename(temp, root / "fresh.conf")
    assert wait_for(lambda: sink.files("moved", temp))
    cap.stop()

    records = sink.of("file")
    assert len(records) == 1, records  # no separate "created" of the temporary name
    record = records[0]
    assert (record["op"], record["dest"], record["temp_created"]) == ("moved", str(root / "fresh.conf"), True)
    assert record["sha256_before"] is None and record["sha256_after"] == sha256(b"listen = 8080\n")
    assert "replaced_by" not in record and "via" not in record
    assert changed_lines(record["diff"]) == ["+listen = 8080"]


def test_renaming_an_existing_file_over_another_replaces_it(session):
    cap, sink, root = session
    other = root / "other.conf"
    other.write_text("port = 9\n")
    assert wait_for(lambda: sink.files("created", other))  # its creation is journaled: it stays
    conf = root / "app.conf"
    before = conf.read_bytes()
    os.rename(other, conf)
    assert wait_for(lambda: sink.files("modified", conf))
    cap.stop()

    assert [r["op"] for r in sink.of("file")] == ["created", "modified"]
    record = sink.files("modified", conf)[0]
    assert record["replaced_by"] == str(other) and "temp_created" not in record
    assert (record["sha256_before"], record["sha256_after"]) == (sha256(before), sha256(b"port = 9\n"))
    assert changed_lines(record["diff"])[-1] == "+port = 9"


# -- the coalescer ------------------------------------------------------------------


def test_a_creation_renamed_in_the_same_window_is_carried_by_the_rename():
    c = BurstCoalescer()
    c.add(Op("created", b"/etc/sedAbC12"), 0.0)
    c.add(Op("modified", b"/etc/sedAbC12"), 0.0)  # its first write
    c.add(Op("moved", b"/etc/sedAbC12", dest=b"/etc/hosts"), 0.01)
    individual, bursts = c.flush(0.3, final=True)
    assert [(o.op, o.temp_created) for o in individual] == [("moved", True)]
    assert bursts == []


def test_a_creation_written_before_the_rename_was_seen_stays_its_own_record():
    c = BurstCoalescer(window=0.25)
    c.add(Op("created", b"/etc/hosts.dpkg-new"), 0.0)
    first, _ = c.flush(0.3)
    c.add(Op("moved", b"/etc/hosts.dpkg-new", dest=b"/etc/hosts"), 0.31)
    second, _ = c.flush(0.6, final=True)
    assert [o.op for o in first] == ["created"]
    assert [(o.op, o.temp_created) for o in second] == [("moved", False)]


def test_a_burst_counts_both_operations_of_each_save():
    c = BurstCoalescer(threshold=10)
    for i in range(20):
        c.add(Op("created", b"/etc/d/f%d.dpkg-new" % i), 0.0)
        c.add(Op("moved", b"/etc/d/f%d.dpkg-new" % i, dest=b"/etc/d/f%d" % i), 0.0)
    individual, bursts = c.flush(0.3, final=True)
    assert individual == []
    assert bursts[0].counts == {"created": 20, "modified": 0, "deleted": 0, "moved": 20}


def test_a_creation_gone_before_the_rename_is_not_carried():
    c = BurstCoalescer()
    c.add(Op("created", b"/r/a"), 0.0)
    c.add(Op("deleted", b"/r/a"), 0.0)
    c.add(Op("created", b"/r/a", via="move-in"), 0.0)
    c.add(Op("moved", b"/r/a", dest=b"/r/b"), 0.0)
    individual, _ = c.flush(0.3, final=True)
    assert [(o.op, o.via, o.temp_created) for o in individual] == [
        ("created", None, False),
        ("deleted", None, False),
        ("created", "move-in", False),
        ("moved", None, False),
    ]


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["created", "modified", "deleted", "moved"]),
        st.integers(0, 2),  # folder
        st.integers(0, 8),  # name
        st.integers(0, 8),  # a rename's new name
        st.floats(0, 0.4),  # time step
    ),
    max_size=300,
)


def counted(individual: list[Op], bursts) -> int:
    return sum((o.via != "creation-write") + o.temp_created for o in individual) + sum(b.ops for b in bursts)


@settings(max_examples=200, deadline=None)
@given(ops_strategy, st.integers(1, 20), st.integers(1, 50))
def test_with_renames_every_operation_is_counted_once_or_folded_into_its_creation(ops, threshold, budget):
    c = BurstCoalescer(threshold=threshold, budget=budget, window=0.25, max_burst_s=1.0)
    now = 0.0
    recorded = 0
    folds_possible = 0
    created_unclosed: set[bytes] = set()
    for kind, folder, name, new_name, step in ops:
        now += step
        path = b"/r/%d/%d" % (folder, name)
        dest = b"/r/%d/n%d" % (folder, new_name) if kind == "moved" else None
        if kind == "created":
            created_unclosed.add(path)
        elif kind == "modified" and path in created_unclosed:
            created_unclosed.discard(path)
            folds_possible += 1
        c.add(Op(kind, path, dest=dest), now)
        if c.due(now):
            recorded += counted(*c.flush(now))
    recorded += counted(*c.flush(now + 1, final=True))
    assert c.idle
    assert len(ops) - folds_possible <= recorded <= len(ops)
