"""The coalescer: bounded work per window, and every operation counted exactly once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.bursts import BurstCoalescer, Op


def drain(coalescer: BurstCoalescer, now: float) -> tuple[list[Op], list]:
    return coalescer.flush(now, final=True)


def test_a_quiet_folder_stays_individual_and_in_order():
    c = BurstCoalescer(threshold=5)
    c.add(Op("created", b"/r/a"), 0.0)
    c.add(Op("deleted", b"/r/b"), 0.01)
    c.add(Op("moved", b"/r/c", dest=b"/r/d"), 0.02)
    individual, bursts = drain(c, 0.3)
    assert [(o.op, o.path) for o in individual] == [("created", b"/r/a"), ("deleted", b"/r/b"), ("moved", b"/r/c")]
    assert bursts == []


def test_the_first_close_after_a_creation_is_part_of_it():
    c = BurstCoalescer()
    c.add(Op("created", b"/r/a"), 0.0)
    c.add(Op("modified", b"/r/a"), 0.0)  # the creation's write
    c.add(Op("modified", b"/r/a"), 0.0)  # a real modification
    individual, _ = drain(c, 0.3)
    assert [o.op for o in individual] == ["created", "modified"]


def test_a_creation_closed_in_the_next_window_is_marked_not_counted():
    c = BurstCoalescer(window=0.25)
    c.add(Op("created", b"/r/a"), 0.0)
    first, _ = c.flush(0.3)
    c.add(Op("modified", b"/r/a"), 0.31)
    second, _ = drain(c, 0.6)
    assert [o.op for o in first] == ["created"]
    assert [(o.op, o.via) for o in second] == [("modified", "creation-write")]


def test_a_busy_folder_becomes_one_burst_with_counts_and_a_names_hash():
    c = BurstCoalescer(threshold=10)
    for i in range(50):
        c.add(Op("created", b"/r/busy/f%d" % i), 0.0)
        c.add(Op("modified", b"/r/busy/f%d" % i), 0.0)
    for i in range(20):
        c.add(Op("modified", b"/r/busy/f%d" % i), 0.1)
    c.add(Op("created", b"/r/quiet/x"), 0.1)
    individual, bursts = c.flush(0.3)
    assert [o.path for o in individual] == [b"/r/quiet/x"]
    assert bursts == []  # still busy: the burst stays open
    individual, bursts = c.flush(0.6)  # a quiet window ends it
    assert individual == [] and len(bursts) == 1
    burst = bursts[0]
    assert burst.folder == b"/r/busy"
    assert burst.counts == {"created": 50, "modified": 20, "deleted": 0, "moved": 0}
    assert len(burst.names) == 50
    twin = BurstCoalescer(threshold=1)
    for i in reversed(range(50)):
        twin.add(Op("created", b"/r/busy/f%d" % i), 0.0)
    assert drain(twin, 1.0)[1][0].names_sha256() == burst.names_sha256()


def test_the_budget_coalesces_the_busiest_folders_first():
    c = BurstCoalescer(threshold=1000, budget=10)
    for i in range(8):
        c.add(Op("created", b"/r/small/f%d" % i), 0.0)
    for i in range(30):
        c.add(Op("created", b"/r/big/f%d" % i), 0.0)
    individual, bursts = drain(c, 0.3)
    assert {o.folder for o in individual} == {b"/r/small"}
    assert [(b.folder, b.counts["created"]) for b in bursts] == [(b"/r/big", 30)]


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["created", "modified", "deleted", "moved"]),
        st.integers(0, 3),  # folder
        st.integers(0, 30),  # name
        st.floats(0, 0.5),  # time step
    ),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(ops_strategy, st.integers(1, 20), st.integers(1, 50))
def test_every_operation_is_counted_once_or_folded_into_its_creation(ops, threshold, budget):
    c = BurstCoalescer(threshold=threshold, budget=budget, window=0.25, max_burst_s=1.0)
    now = 0.0
    recorded = 0
    folds_possible = 0
    created_unclosed: set[bytes] = set()
    for kind, folder, name, step in ops:
        now += step
        path = b"/r/%d/%d" % (folder, name)
        if kind == "created":
            created_unclosed.add(path)
        elif kind == "modified" and path in created_unclosed:
            created_unclosed.discard(path)
            folds_possible += 1
        c.add(Op(kind, path), now)
        if c.due(now):
            individual, bursts = c.flush(now)
            recorded += sum(o.via != "creation-write" for o in individual) + sum(b.ops for b in bursts)
    individual, bursts = c.flush(now + 1, final=True)
    recorded += sum(o.via != "creation-write" for o in individual) + sum(b.ops for b in bursts)
    assert c.idle
    assert len(ops) - folds_possible <= recorded <= len(ops)
