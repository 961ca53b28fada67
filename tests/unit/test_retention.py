"""Retention: sessions older than keep_days are pruned (once published, when publishing is on), each on record."""

from __future__ import annotations

import json

from agent.cli import main
from agent.history import History
from agent.journal import verify_journal
from agent.ledger import Ledger
from agent.publish.retention import Retention, prune_journal_path
from agent.publish.spool import Spool
from tests.unit.test_bundle import write_session

OLD = "2020-01-02T03:04:05.000000Z"


def age(home, session: str, state: str = "sealed") -> None:
    with History(home) as history:
        history.upsert(session, ended=OLD, state=state, requested=OLD)


def test_dry_run_says_what_would_go_and_removes_nothing(home, device_key, capsys):
    write_session(home, device_key, "s-old")
    write_session(home, device_key, "s-new")
    write_session(home, device_key, "s-running", seal=False)
    age(home, "s-old")
    age(home, "s-running", state="active")
    assert main(["prune", "--dry-run", "--home", str(home.path)]) == 0
    out = capsys.readouterr().out
    assert "Would remove session s-old (sealed, ended 2020-01-02" in out
    assert "s-new" not in out and "s-running" not in out
    assert home.journal_path("s-old").is_file() and not prune_journal_path(home).exists()


def test_prune_removes_the_journal_and_the_row_and_records_it(home, device_key, capsys):
    write_session(home, device_key, "s-old")
    write_session(home, device_key, "s-new")
    age(home, "s-old")
    seal_line = home.journal_path("s-old").read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert main(["prune", "--home", str(home.path)]) == 0
    assert "Removed session s-old" in capsys.readouterr().out
    assert not home.session_dir("s-old").exists() and home.journal_path("s-new").is_file()
    with History(home, readonly=True) as history:
        assert [r["id"] for r in history.list()] == ["s-new"]
    journal = prune_journal_path(home)
    check = verify_journal(journal, device_key.public_blob)
    assert check.chain_ok  # signed and chained (a shared journal is checkpointed, never sealed)
    prunes = [json.loads(line) for line in journal.read_text().splitlines() if '"type":"prune"' in line]
    assert len(prunes) == 1 and prunes[0]["data"]["session"] == "s-old"
    import hashlib
    assert prunes[0]["data"]["seal_sha256"] == hashlib.sha256(seal_line).hexdigest()
    assert prunes[0]["data"]["keep_days"] == 90 and prunes[0]["data"]["reason"] == "retention"
    assert main(["prune", "--home", str(home.path)]) == 0
    assert "Nothing to remove" in capsys.readouterr().out
    with Ledger.open(home, readonly=True) as ledger:  # the prune is an entry of the device ledger
        entries = [ledger.entry(i) for i in range(ledger.size)]
    assert [e for e in entries if b'"type":"prune"' in e] == [p.encode() for p in (
        line for line in journal.read_text().splitlines() if '"type":"prune"' in line)]


def test_with_publishing_on_only_what_is_published_goes(home, device_key, tmp_path, capsys):
    (home.path / "settings.json").write_text(json.dumps({"publish": {"url": "s3://fleet/x"},
                                                         "retention": {"keep_days": 30}}))
    for sid in ("s-a", "s-b", "s-c"):
        write_session(home, device_key, sid)
        age(home, sid)
    spool = Spool(home)
    for sid in ("s-a", "s-b"):
        source = tmp_path / f"{sid}.zip"
        source.write_bytes(b"bundle")
        spool.add_file(f"dev/bundles/{sid}.zip", "bundle", source, session=sid)
    spool.done(spool.waiting()[0], "v1")  # s-a published; s-b waits; s-c never spooled
    spool.close()
    assert main(["prune", "--home", str(home.path)]) == 0
    out = capsys.readouterr().out
    assert "Removed session s-a" in out and "older than 30 days" not in out
    assert "Kept session s-b" in out and "not published yet" in out and "Kept session s-c" in out
    assert home.journal_path("s-b").is_file() and not home.journal_path("s-a").exists()
    spool = Spool(home)
    assert [i.name for i in spool.waiting()] == ["dev/bundles/s-b.zip"] and spool.published_items() == []


def test_the_ledger_hook_gets_the_prune_line(home, device_key):
    write_session(home, device_key, "s-old")
    age(home, "s-old")
    lines = []
    Retention(home, ledger_hook=lines.append).prune()
    assert len(lines) == 1 and json.loads(lines[0])["type"] == "prune" and not lines[0].endswith(b"\n")
