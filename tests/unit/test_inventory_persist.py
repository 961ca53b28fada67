"""The saved "before" (private, no secrets, checked against the journal's records, used after a restart)
and the end-of-session summary."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.inventory import (
    FILE_NAME,
    LiveInventory,
    check_snapshot,
    collectors_of,
    linux_login,
    linux_system,
    load_snapshot,
    save_snapshot,
    session_summary,
    summary_records,
    take_snapshot,
)
from agent.capture.inventory.diff import diff_snapshots
from agent.capture.inventory.machine import Machine
from agent.errors import ChaperoneError, InventoryFileError
from tests.unit.test_inventory_live import KEY, Sink, file_categories, machine  # noqa: F401 - a fixture

SECRETS = ("S3cretCronToken42", "hunter2hunter2", "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
           "pamArgSecret77", "ExportedTokenValue88")


@pytest.fixture
def secretive(machine):  # noqa: F811 - the fixture imported above
    """The machine with secrets where a technician or a customer would put them."""
    etc = machine / "etc"
    (etc / "cron.d" / "backup").write_text(
        "0 3 * * * root /usr/bin/backup --password=S3cretCronToken42 --key AKIAIOSFODNN7EXAMPLE\n")
    (etc / "sudoers.d" / "ops").write_text("ops ALL=(ALL) NOPASSWD: /usr/bin/curl -u admin:hunter2hunter2 *\n")
    (etc / "xdg" / "autostart" / "sync.desktop").write_text(
        "[Desktop Entry]\nName=Sync\nExec=/usr/bin/sync --token ghp_abcdefghijklmnopqrstuvwxyz0123456789\n")
    (etc / "pam.d" / "login").write_text("auth optional pam_exec.so /usr/bin/hook --secret=pamArgSecret77\n")
    (machine / "home" / "alice" / ".bashrc").write_text("export API_TOKEN=ExportedTokenValue88\n")
    (etc / "shadow").write_text("root:$6$salt$hunter2hunter2hashhashhash:20000:0:99999:7:::\n")
    return machine


def test_the_saved_before_is_private_holds_no_secret_and_reads_back(secretive, tmp_path):
    before = take_snapshot(collectors_of(file_categories(secretive)))
    assert before["scheduled"] and before["sudoers"] and before["pam"] and before["shell_startup"]
    path = tmp_path / "session" / FILE_NAME
    path.parent.mkdir()
    save_snapshot(path, before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="ascii")
    for secret in SECRETS:
        assert secret not in text
    assert "redacted" in text  # the secrets were there, and are hidden
    assert load_snapshot(path) == before
    assert load_snapshot(path, summary_records(before, "before")) == before
    assert not list(path.parent.glob(".*.tmp"))


def test_a_saved_before_changed_on_disk_is_refused(secretive, tmp_path):
    before = take_snapshot(collectors_of(file_categories(secretive)))
    records = summary_records(before, "before")
    path = tmp_path / FILE_NAME
    save_snapshot(path, before)
    body = json.loads(path.read_text())
    # the technician, during the gap, adds their key to the "before" so it never shows as new
    for category, items in body["snapshot"]:
        if category == "authorized_keys":
            items.append(["/home/alice/.ssh/authorized_keys SHA256:x", {"source": "/home/alice/.ssh/authorized_keys"}])
    path.write_text(json.dumps(body))
    assert load_snapshot(path)["authorized_keys"]  # readable, but
    with pytest.raises(InventoryFileError) as err:
        load_snapshot(path, records)
    assert "authorized_keys" in str(err.value) and "not the one the journal recorded" in str(err.value)
    assert isinstance(err.value, ChaperoneError)
    assert check_snapshot(before, records) == []
    assert check_snapshot({k: v for k, v in before.items() if k != "users"}, records) == ["users"]


NOT_A_DICT = b'{"format": "chaperone-inventory/1", "snapshot": [["users", [["root", "not a dict"]]]]}'


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format": "other"}', NOT_A_DICT, b"\xff\xfe"])
def test_a_damaged_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / FILE_NAME
    path.write_bytes(content)
    with pytest.raises(InventoryFileError, match="is damaged"):
        load_snapshot(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InventoryFileError, match="is missing"):
        load_snapshot(tmp_path / FILE_NAME)


def test_saving_over_a_symlink_does_not_follow_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / FILE_NAME
    os.symlink(target, link)
    save_snapshot(link, {"users": {}})
    assert target.read_text() == "keep" and not link.is_symlink()


def test_after_a_restart_the_watcher_compares_with_the_saved_before(secretive, tmp_path):
    """kill -9, a key added in the gap, restart: the key is a way back in, marked as found after the gap."""
    categories = file_categories(secretive)
    before = take_snapshot(collectors_of(categories))
    path = tmp_path / FILE_NAME
    save_snapshot(path, before)
    records = summary_records(before, "before")
    # the gap: the agent is down; a new run of it has a new redaction key, so markers differ
    ssh = secretive / "home" / "alice" / ".ssh"
    ssh.mkdir()
    (ssh / "authorized_keys").write_text(KEY + "\n")
    loaded = load_snapshot(path, records)
    sink = Sink()
    live = LiveInventory(sink, loaded, categories, root=str(secretive))
    live.start(gap={"from": "2026-01-01T10:00:00Z", "to": "2026-01-01T10:01:00Z"})
    try:
        assert live.ready.wait(30)
    finally:
        live.stop()
    changes = sink.find("inventory-change")
    assert [c["category"] for c in changes] == ["authorized_keys"]
    assert changes[0]["gap"] == {"from": "2026-01-01T10:00:00Z", "to": "2026-01-01T10:01:00Z"}
    assert sink.find("alarm", category="authorized_keys")


def test_redaction_markers_of_another_run_are_not_changes(secretive):
    categories = file_categories(secretive)
    before = take_snapshot(collectors_of(categories))
    shifted = _shift_markers(before)  # the same items as a later run of the agent collects them
    assert shifted != before
    assert diff_snapshots(before, shifted) == []
    shifted["scheduled"]["/etc/cron.d/new: * * * * * root /x"] = {"source": "/etc/cron.d/new", "kind": "cron"}
    assert [c["item"] for c in diff_snapshots(before, shifted)] == ["/etc/cron.d/new: * * * * * root /x"]


def _shift_markers(snapshot):
    """The snapshot with every marker's 8 hex digits changed, as a later run would write them."""
    text = re.sub(r"\[redacted: sha256 ([0-9a-f]{8})\]",
                  lambda m: f"[redacted: sha256 {int(m.group(1), 16) ^ 0xFFFFFFFF:08x}]", json.dumps(snapshot))
    return json.loads(text)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.dictionaries(
    st.text(max_size=12), st.fixed_dictionaries({"source": st.text(max_size=5)}, optional={
        "n": st.integers(-5, 5), "on": st.booleans(), "l": st.lists(st.text(max_size=4), max_size=3),
        "none": st.none()}), max_size=4), max_size=4))
def test_save_and_load_round_trip(tmp_path_factory, snapshot):
    path = tmp_path_factory.mktemp("s") / FILE_NAME
    clean = json.loads(json.dumps(snapshot, ensure_ascii=True))  # lone surrogates never reach a snapshot
    save_snapshot(path, clean)
    assert load_snapshot(path, summary_records(clean, "before")) == clean


# -- the end-of-session summary ------------------------------------------------------------


def _change(category, op, item, way, origin="unexplained", live=False, gap=None, detail=None):
    c = {"category": category, "op": op, "item": item, "way_back_in": way, "why": f"why {item}" if way else None,
         "origin": origin, "origin_detail": "came with package cron 3.0pl1" if origin == "package" else None,
         "live": live, "detail": detail or {}}
    if gap:
        c["gap"] = gap
    return {"type": "inventory-change", "data": c}


def test_the_summary_lists_every_way_back_in_unexplained_first():
    records = [
        {"type": "file", "data": {"op": "created", "path": "/etc/x"}},
        {"type": "file", "data": {"op": "modified", "path": "/etc/x", "via": "creation-write"}},
        {"type": "file-burst", "data": {"counts": {"created": 100, "modified": 3, "deleted": 0, "moved": 0}}},
        {"type": "alarm", "data": {"tool": "AnyDesk", "pid": 4}},
        {"type": "alarm", "data": {"kind": "way-back-in", "category": "users"}},
        # live: a key added then removed again, a cron job from a package, a user
        _change("authorized_keys", "added", "/root/.ssh/authorized_keys SHA256:a", True, live=True),
        _change("authorized_keys", "removed", "/root/.ssh/authorized_keys SHA256:a", False, live=True),
        _change("scheduled", "added", "/etc/cron.d/e2scrub_all: job", True, origin="package", live=True),
        _change("users", "added", "eve", True, live=True, gap={"from": "a", "to": "b"}),
        # the end comparison
        _change("scheduled", "added", "/etc/cron.d/e2scrub_all: job", True, origin="package"),
        _change("users", "added", "eve", True),
        _change("packages", "added", "dpkg:cron", False),
    ]
    summary = session_summary(records)
    assert summary["complete"] is True
    ways = summary["ways_back_in"]
    assert [(w["category"], w["origin"], w["still_there"]) for w in ways] == [
        ("users", "unexplained", True), ("authorized_keys", "unexplained", False), ("scheduled", "package", True)]
    assert ways[0]["seen_live"] and ways[0]["after_gap"]
    assert ways[2]["origin_detail"] == "came with package cron 3.0pl1"
    assert summary["unexplained"] == 2 and summary["from_packages"] == 1
    assert summary["files"] == {"created": 101, "modified": 3, "deleted": 0, "moved": 0}
    assert summary["machine"] == {"scheduled": {"added": 1}, "users": {"added": 1}, "packages": {"added": 1}}
    assert summary["alarms"] == 1
    assert summary["headline"] == "3 ways back in (2 unexplained), 104 files changed, 1 other change to the machine"
    json.dumps(summary)


def test_without_the_end_comparison_the_live_records_are_all_there_is():
    records = [_change("preload", "added", "/etc/ld.so.preload: /x.so", True, live=True)]
    summary = session_summary(records)
    assert summary["complete"] is False
    assert [w["item"] for w in summary["ways_back_in"]] == ["/etc/ld.so.preload: /x.so"]
    assert session_summary([])["headline"] == "0 ways back in"


def test_the_summary_reads_activity_items_too():
    items = [{**_change("users", "added", "eve", True)["data"], "type": "inventory-change", "ts": "t", "seq": 4}]
    assert session_summary(items)["ways_back_in"][0]["item"] == "eve"


def test_collectors_read_through_the_machine(secretive):
    m = Machine(str(secretive))
    assert "/etc/cron.d/backup" in {v["source"] for v in linux_system.collect_scheduled(m).values()}
    users = linux_login.collect_users(m)
    assert users["root"]["password"] == "set" and "alice" in users and "password" not in users["alice"]
