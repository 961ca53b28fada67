"""The SQLite history and ``chaperone sessions``; missing and read-only homes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import pytest

from agent.cli import main
from agent.errors import HomeError, JournalError
from agent.history import FIELDS, History
from agent.home import Home
from agent.journal import Journal
from tests.unit.test_bundle import write_session


def test_upsert_get_and_types_round_trip(home):
    with History(home) as h:
        h.upsert("s-1", state="requested", technician="Bob", capabilities=["shell", "files"], watch=["/etc"],
                 verified=True, duration_s=1800, decided_by={"uid": 0, "user": "root"}, flags=[])
        h.upsert("s-1", state="active", started="2026-11-22T03:00:00.000000Z")
        row = h.get("s-1")
    assert set(row) == set(FIELDS)
    assert row["state"] == "active" and row["technician"] == "Bob"  # update keeps the other fields
    assert row["capabilities"] == ["shell", "files"] and row["watch"] == ["/etc"] and row["flags"] == []
    assert row["verified"] is True and row["duration_s"] == 1800
    assert row["decided_by"] == {"uid": 0, "user": "root"}
    assert row["ended"] is None
    with History(home, readonly=True) as h:
        assert h.get("nope") is None and h.get("s-1") == row


def test_unknown_fields_and_states_are_refused(home):
    with History(home) as h:
        with pytest.raises(ValueError, match="colour"):
            h.upsert("s", colour="red")
        with pytest.raises(ValueError, match="state"):
            h.upsert("s", state="paused")
        assert h.list() == []


def test_list_is_newest_first_and_the_file_uses_wal(home):
    with History(home) as h:
        h.upsert("old", requested="2026-11-20T10:00:00.000000Z", state="refused")
        h.upsert("new", requested="2026-11-22T10:00:00.000000Z", state="sealed")
        h.upsert("mid", requested="2026-11-21T10:00:00.000000Z", state="expired")
        assert [r["id"] for r in h.list()] == ["new", "mid", "old"]
    with sqlite3.connect(home.db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_share_one_history(home):
    with History(home) as h:
        def worker(n):
            for i in range(50):
                h.upsert(f"s-{n}-{i}", state="requested", technician=f"t{n}")
                assert h.get(f"s-{n}-{i}")["technician"] == f"t{n}"

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(h.list()) == 200


def test_a_reader_in_another_process_sees_the_writes(home):
    with History(home) as h:
        h.upsert("s-1", state="active", technician="Bob")
        out = subprocess.run([sys.executable, "-m", "agent", "sessions", "--json", "--home", str(home.path)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)[0]["id"] == "s-1"


def test_sessions_json_and_table(home, capsys):
    with History(home) as h:
        h.upsert("s-a", state="sealed", technician="Ann", org="ACME", ticket="T-1",
                 requested="2026-11-22T01:00:00.000000Z", started="2026-11-22T01:01:00.000000Z",
                 ended="2026-11-22T01:30:00.000000Z")
        h.upsert("s-bb", state="refused", technician="Bob\x1b[31m", org="Longer Org Name", ticket="T-22",
                 requested="2026-11-22T02:00:00.000000Z")
    assert main(["sessions", "--json", "--home", str(home.path)]) == 0
    sessions = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in sessions] == ["s-bb", "s-a"]
    for s in sessions:
        assert {"id", "state", "technician", "org", "ticket", "started", "ended"} <= set(s)
    assert main(["sessions", "--home", str(home.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "TECHNICIAN", "ORG", "TICKET", "STARTED", "ENDED"]
    assert "\x1b" not in "".join(lines) and "Bob\\x1b[31m" in lines[1]
    org_column = lines[0].index("ORG")
    assert all(line[org_column - 2:org_column] == "  " for line in lines)  # aligned columns
    assert lines[2][org_column:].startswith("ACME")


def test_sessions_on_an_empty_home(home, capsys):
    assert main(["sessions", "--home", str(home.path)]) == 0
    assert capsys.readouterr().out == "No sessions yet.\n"
    assert not home.db_path.exists()  # listing creates nothing


def test_a_missing_home_is_one_sentence(tmp_path, capsys):
    for argv in (["sessions"], ["export", "s-1", "-o", str(tmp_path / "b.zip")]):
        code = main([*argv, "--home", str(tmp_path / "nowhere")])
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1 and "chaperone init" in err and "Traceback" not in err
    with pytest.raises(HomeError):
        History(Home(tmp_path / "nowhere"))


@pytest.fixture
def read_only(home, device_key):
    """Make the home read-only for real (a read-only bind mount: root ignores permission bits)."""
    write_session(home, device_key, "s-1")
    path = str(home.path)
    done = subprocess.run(["mount", "--bind", path, path], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", path], check=True, capture_output=True)
        yield home
    finally:
        subprocess.run(["umount", path], check=True)


def test_a_read_only_home_lists_but_refuses_to_write(read_only, device_key, capsys, tmp_path):
    assert main(["sessions", "--json", "--home", str(read_only.path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "s-1"
    with pytest.raises(HomeError, match="read-only"):
        History(read_only)
    with pytest.raises(JournalError, match="^Cannot write the journal .*: the file system is read-only.$"):
        Journal.create(read_only.journal_path("s-2"), "s-2", device_key)
    assert main(["export", "s-1", "-o", str(tmp_path / "b.zip"), "--home", str(read_only.path)]) == 0
    assert main(["verify", str(tmp_path / "b.zip")]) == 0


def test_the_history_files_are_private(home):
    with History(home) as h:
        h.upsert("s-1", state="requested", technician="t")
        modes = {p.name: p.stat().st_mode & 0o777 for p in home.path.glob("history.sqlite3*")}
    assert modes and set(modes.values()) == {0o600}, modes
