"""The ledger's files (agent.ledger.store): appends, proofs from disk, torn writes, threads, readers."""

from __future__ import annotations

import os
import threading
from hashlib import sha256

import pytest

from agent.errors import LedgerError
from agent.ledger import merkle
from agent.ledger.store import ENTRIES, HASHES, INDEX, LedgerStore
from tests.unit.test_ledger_merkle import reference_root


def entries(n: int, start: int = 0) -> list[bytes]:
    return [b'{"seq":%d,"type":"checkpoint"}' % i for i in range(start, start + n)]


def fill(store: LedgerStore, items: list[bytes]) -> None:
    first = store.size
    for i, e in enumerate(items):
        assert store.append(e) == first + i


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "ledger"


def test_appends_give_rfc6962_roots_and_proofs_from_disk(folder):
    items = entries(77)
    with LedgerStore.open(folder) as store:
        for i, e in enumerate(items):
            assert store.append(e) == i
            assert store.root() == reference_root(items[: i + 1])
        assert store.tree_hash(50) == reference_root(items[:50])
        root = store.root()
        for index in (0, 31, 76):
            merkle.verify_inclusion(store.inclusion_proof(index, 77), index, 77, merkle.leaf_hash(items[index]), root)
        merkle.verify_consistency(store.consistency_proof(13, 77), 13, reference_root(items[:13]), 77, root)
        assert store.entry(31) == items[31]
        assert [e for _, e in store.iter_entries(70)] == items[70:]
        assert [i for i, _ in store.iter_entries_backward(5)] == [4, 3, 2, 1, 0]
    # The entries file is the lines that were logged.
    assert (folder / ENTRIES).read_bytes() == b"".join(e + b"\n" for e in items)
    assert oct(os.stat(folder / ENTRIES).st_mode & 0o777) == "0o600"
    with LedgerStore.open(folder) as store:
        assert store.size == 77 and store.root() == reference_root(items) and store.recovered == []


@pytest.mark.parametrize("bad", [b"", b"two\nlines", "text", b"x" * (4 * 1024 * 1024 + 1)])
def test_entries_that_cannot_be_lines_are_refused(folder, bad):
    with LedgerStore.open(folder) as store, pytest.raises(ValueError):
        store.append(bad)


def test_a_second_writer_is_refused_but_readers_see_committed_entries(folder):
    items = entries(10)
    with LedgerStore.open(folder) as store:
        with pytest.raises(LedgerError, match="already open for writing"):
            LedgerStore.open(folder)
        fill(store, items[:5])
        with LedgerStore.open(folder, readonly=True) as reader:
            assert reader.size == 5 and reader.root() == reference_root(items[:5])
            with pytest.raises(LedgerError, match="read-only"):
                reader.append(b"x")
        # A half-written append (entry and hashes there, index record not yet) is not seen by a reader.
        os.write(os.open(folder / ENTRIES, os.O_WRONLY | os.O_APPEND), b"partial\n")
        with LedgerStore.open(folder, readonly=True) as reader:
            assert reader.size == 5
    with LedgerStore.open(folder.parent / "none", readonly=True) as empty:
        assert empty.size == 0 and empty.root() == merkle.EMPTY_ROOT


def test_a_torn_entry_is_set_aside_not_deleted(folder):
    items = entries(9)
    with LedgerStore.open(folder) as store:
        fill(store, items)
    with open(folder / ENTRIES, "ab") as fh:
        fh.write(b'{"seq":9,"ty')  # the crash came in the middle of the write
    with LedgerStore.open(folder) as store:
        assert store.size == 9 and store.root() == reference_root(items)
        (aside,) = [r for r in store.recovered if r.get("from") == ENTRIES]
        assert (folder / aside["file"]).read_bytes() == b'{"seq":9,"ty'
        assert aside["sha256"] == sha256(b'{"seq":9,"ty').hexdigest()
        assert store.append(b"next") == 9
    assert (folder / ENTRIES).read_bytes().endswith(items[-1] + b"\nnext\n")


def test_a_torn_index_record_and_missing_hashes_are_recovered(folder):
    items = entries(20)
    with LedgerStore.open(folder) as store:
        fill(store, items)
    # The last index record half written, and the hashes of the last three entries lost.
    with open(folder / INDEX, "ab") as fh:
        fh.write(b"\x00\x00\x01")
    os.truncate(folder / HASHES, merkle.stored_count(17) * 32 + 5)
    with LedgerStore.open(folder) as store:
        assert store.size == 20 and store.root() == reference_root(items)
        assert any(r.get("from") == INDEX for r in store.recovered)
        assert any(r.get("rebuilt") == "hashes" for r in store.recovered)
        assert (folder / HASHES).stat().st_size == merkle.stored_count(20) * 32


def test_an_index_record_past_the_data_is_uncommitted(folder):
    """After a power loss the index may have reached the disk and the entry not: that entry is dropped
    (its index record set aside), never read as garbage."""
    items = entries(6)
    with LedgerStore.open(folder) as store:
        fill(store, items)
    data = (folder / ENTRIES).read_bytes()
    os.truncate(folder / ENTRIES, len(data) - 4)
    with LedgerStore.open(folder) as store:
        assert store.size == 5 and store.root() == reference_root(items[:5])
        kinds = {r.get("from") for r in store.recovered}
        assert {INDEX, ENTRIES} <= kinds  # the index record and the entry's first bytes, both kept
        assert (folder / ENTRIES).read_bytes() == b"".join(e + b"\n" for e in items[:5])


def test_garbage_hashes_after_the_last_head_are_rebuilt(folder):
    items = entries(16)
    with LedgerStore.open(folder) as store:
        fill(store, items)
    with open(folder / HASHES, "r+b") as fh:  # zeros where the last leaf's hashes were (unsynced blocks)
        fh.seek(merkle.stored_index(0, 15) * 32)
        fh.write(bytes(32 * 5))
    with LedgerStore.open(folder, verify_from=12) as store:
        assert store.root() == reference_root(items)
        assert any(r.get("rebuilt") == "hashes" for r in store.recovered)


def test_threads_append_without_losing_or_mixing_entries(folder):
    with LedgerStore.open(folder) as store:
        def worker(k: int) -> None:
            for i in range(300):
                store.append(b"thread-%d-%d" % (k, i))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [e for _, e in store.iter_entries()]
        assert store.size == 1800 and sorted(got) == sorted(b"thread-%d-%d" % (k, i) for k in range(6) for i in range(300))
        assert store.root() == reference_root(got)
        assert store.sync() == 1800 and store.synced_size == 1800


def test_a_failed_write_adds_nothing(folder, monkeypatch):
    items = entries(3)
    with LedgerStore.open(folder) as store:
        fill(store, items)
        real_write = os.write
        calls = {"n": 0}

        def failing(fd, data):
            calls["n"] += 1
            if calls["n"] == 2:  # the hashes' write of the next append
                raise OSError(28, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", failing)
        with pytest.raises(LedgerError, match="the disk is full"):
            store.append(b"lost")
        monkeypatch.setattr(os, "write", real_write)
        assert store.size == 3 and store.root() == reference_root(items)
        assert store.append(b"kept") == 3
        assert store.root() == reference_root(items + [b"kept"])
    with LedgerStore.open(folder) as store:
        assert store.size == 4 and store.recovered == []
