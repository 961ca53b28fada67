"""Filesystem-wide capture and mounts, as root, with real processes and real files.

Each test plays the technician as the issue's attacks did: a program copied into /usr/local/bin,
``setsid -f`` + ``chown``, ``chmod u+s``, ``chmod 777`` on a folder, file capabilities, an ACL,
a bind mount over a watched folder, a flood of events.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent.capture.filemeta import changed, parse_posix_acl, way_back_in
from agent.capture.lineage import PROC_CONNECTOR, Lineage
from agent.capture.mounts import MountWatcher, relation
from agent.capture.writes import WriteRecorder
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="fanotify and the proc connector need root")


class ListSink:
    def __init__(self):
        self.records: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict) -> None:
        with self._lock:
            self.records.append((type, data))

    def of(self, type: str, **match) -> list[dict]:
        with self._lock:
            return [d for t, d in self.records if t == type and all(d.get(k) == v for k, v in match.items())]


@pytest.fixture
def lineage():
    lin = Lineage(prefer=PROC_CONNECTOR)
    lin.start()
    yield lin
    lin.stop()


@pytest.fixture
def private_tmp():
    """A folder of our own for mount tests: pytest's shared /tmp/pytest-of-root is swept by other
    pytest sessions on this machine, and a sweep walking into a bind mount keeps it busy."""
    path = Path(tempfile.mkdtemp(prefix="chaperone-mounts-"))
    yield path
    for sub in ("watched", "newfs"):
        subprocess.run(["umount", str(path / sub)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def watched(private_tmp):
    root = private_tmp / "watched"
    root.mkdir()
    return root


@pytest.fixture
def writes(lineage, watched):
    sink = ListSink()
    rec = WriteRecorder(sink, lineage, [watched], quiet_s=0.2)
    rec.start()
    rec.sink = sink
    yield rec
    rec.stop()


# Other programs on a shared machine (a recursive watch, a scan of /tmp) may have a folder inside a
# mount open for a moment, and umount then fails as busy: try again, as a person would.
UMOUNT = "umount {0} || (sleep 0.5; umount {0}) || (sleep 2; umount {0})"


def as_technician(lineage, script: str, label: str = "S1") -> None:
    shell = subprocess.Popen(["setsid", "sh", "-c", f"read go; {script}"], stdin=subprocess.PIPE)
    assert lineage.mark(shell.pid, label)
    shell.stdin.write(b"go\n")
    shell.stdin.close()
    assert shell.wait(timeout=60) == 0


@pytest.fixture
def usr_local_name():
    path = Path("/usr/local/bin") / f"chaperone-test-{secrets.token_hex(4)}"
    yield path
    path.unlink(missing_ok=True)


def test_a_program_copied_into_usr_local_bin_is_recorded_with_its_attribution(lineage, writes, usr_local_name):
    as_technician(lineage, f"cp /bin/true {usr_local_name}")
    subprocess.run(["sh", "-c", f"echo the customer > {usr_local_name}.customer; rm {usr_local_name}.customer"],
                   check=True)
    found = wait_for(lambda: writes.sink.of("file", path=str(usr_local_name)))
    record = found[0]
    assert record["op"] == "created" and record["via"] == "filesystem"
    assert record["sha256_after"] == __import__("hashlib").sha256(Path("/bin/true").read_bytes()).hexdigest()
    assert record["size"] == Path("/bin/true").stat().st_size
    assert record["attribution"]["technician"] and record["attribution"]["label"] == "S1"
    assert record["attribution"]["exe"].endswith("/cp") and record["attribution"]["how"] == "fanotify"
    writes.stop()
    assert not [d for t, d in writes.sink.records if ".customer" in str(d.get("path"))]  # not the customer's


def test_a_file_written_slowly_after_its_creation_is_recorded_once_with_what_was_written(lineage, writes,
                                                                                          usr_local_name):
    """A pause between create and close longer than the quiet time (a slow copy, a loaded machine): the
    record waits for the close, so it holds the content, not the empty file the create made."""
    as_technician(lineage, f"exec 3>{usr_local_name}; sleep 1; cat /bin/true >&3; exec 3>&-")
    found = wait_for(lambda: writes.sink.of("file", path=str(usr_local_name)))
    time.sleep(0.5)  # a second record, if one were made, would be made by now (quiet_s is 0.2 s)
    found = writes.sink.of("file", path=str(usr_local_name))
    assert len(found) == 1 and found[0]["op"] == "created"
    assert found[0]["sha256_after"] == hashlib.sha256(Path("/bin/true").read_bytes()).hexdigest()


def test_setsid_chown_and_setuid_by_the_technician_are_metadata_records(lineage, writes, tmp_path):
    target = tmp_path / "tool"
    shutil.copy("/bin/true", target)
    as_technician(lineage, f"setsid -f sh -c 'chown nobody {target}; touch {tmp_path}/chowned'; "
                           f"while [ ! -e {tmp_path}/chowned ]; do sleep 0.01; done; chmod u+s {target}")
    metas = wait_for(lambda: len(writes.sink.of("file-meta", path=str(target))) >= 2 and
                     writes.sink.of("file-meta", path=str(target)))
    chown, chmod = metas[0], metas[-1]
    assert chown["attribution"]["exe"].endswith("chown") and chown["attribution"]["via"] == "fork"
    assert chown["after"]["user"] == "nobody"
    assert chmod["after"]["mode"] == "4755" and chmod["before"]["mode"] == "0755"
    assert chmod["changed"] == ["mode"] and chmod["way_back_in"] is True and "setuid" in chmod["why"]
    assert all(m["attribution"]["label"] == "S1" for m in metas)


def test_a_world_writable_folder_file_capabilities_and_an_acl_are_ways_back_in(lineage, writes, tmp_path):
    folder, program, shared = tmp_path / "open", tmp_path / "python-copy", tmp_path / "shared.conf"
    folder.mkdir()
    shutil.copy("/bin/true", program)
    shared.write_text("x")
    caps = struct.pack("<IIIII", 0x02000001, 1 << 7, 0, 0, 0)  # VFS_CAP_REVISION_2 | effective; cap_setuid
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in
                                         [(1, 6, 0xFFFFFFFF), (2, 6, 4242), (4, 4, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF),
                                          (0x20, 4, 0xFFFFFFFF)])
    script = (f"import os; os.chmod({str(folder)!r}, 0o777); "
              f"os.setxattr({str(program)!r}, 'security.capability', {caps!r}); "
              f"os.setxattr({str(shared)!r}, 'system.posix_acl_access', {acl!r})")
    as_technician(lineage, f"{sys.executable} -c \"{script}\"")
    for path, words in ((folder, "writable by everyone"), (program, "capabilities"), (shared, "user 4242 write")):
        found = wait_for(lambda p=path: writes.sink.of("file-meta", path=str(p)))
        assert found and found[-1]["way_back_in"] and words in found[-1]["why"], (path, found)
    assert writes.sink.of("file-meta", path=str(shared))[-1]["after"]["acl"] == [
        "user::rw-", "user:4242:rw-", "group::r--", "mask::rw-", "other::r--"]


def test_inside_the_watch_paths_writers_are_attributed_and_customer_chmods_are_not_recorded(lineage, writes, watched):
    subprocess.run(["sh", "-c", f"echo mine > {watched}/notes.txt; chmod 600 {watched}/notes.txt"], check=True)
    found = wait_for(lambda: writes.attribute(os.fsencode(watched / "notes.txt")))
    assert found["technician"] is False and found["how"] == "fanotify" and found["exe"].endswith("sh")
    subprocess.run(["chmod", "o+w", str(watched / "notes.txt")], check=True)  # a customer's way back in: recorded
    flagged = wait_for(lambda: writes.sink.of("file-meta", path=str(watched / "notes.txt")))
    assert [m["way_back_in"] for m in flagged] == [True] and flagged[0]["inside_watch"] is True


def test_a_queue_overflow_is_a_record_with_a_count(lineage, writes, tmp_path):
    flood = tmp_path / "flood"
    flood.mkdir()
    with writes._lock:  # the reader cannot read: the kernel's queue (16384 events) overflows
        for i in range(17_500):
            (flood / f"f{i}").touch()
    found = wait_for(lambda: writes.sink.of("overflow"))
    assert found[0]["source"] == "fanotify-filesystem" and found[0]["count"] >= 1


def test_a_bind_mount_over_a_watched_folder_then_a_write_then_an_unmount(lineage, writes, private_tmp, watched):
    elsewhere = private_tmp / "elsewhere"
    elsewhere.mkdir()
    mounts = MountWatcher(writes.sink, [watched], on_mount=writes.on_mount, describe=lambda pid: lineage.describe(pid, fresh=True))
    mounts.start()
    try:
        as_technician(lineage, f"mount --bind {elsewhere} {watched} && sleep 0.3 && echo planted > {watched}/hidden.txt "
                               f"&& {UMOUNT.format(watched)}")
        assert wait_for(lambda: writes.sink.of("mount", op="unmounted"))
        written = wait_for(lambda: writes.sink.of("file", path=str(elsewhere / "hidden.txt")))
    finally:
        subprocess.run(["umount", str(watched)], capture_output=True)
        mounts.stop()
    mounted = writes.sink.of("mount", op="mounted")[0]
    assert mounted["mountpoint"] == str(watched) and mounted["root"].endswith("/elsewhere")
    assert mounted["watched"] == [{"path": str(watched), "relation": "over"}]
    alarm = writes.sink.of("alarm", tool="mount")[0]
    assert alarm["watch_path"] == str(watched) and alarm["relation"] == "over"
    assert written[0]["attribution"]["label"] == "S1"  # the write landed in the bind source: still recorded
    if mounts.with_events:  # Linux 6.15+: who mounted and unmounted
        assert mounted["by"]["label"] == "S1" and mounted["by"]["exe"].endswith("mount")
        assert writes.sink.of("mount", op="unmounted")[0]["by"]["label"] == "S1"


def test_a_mount_that_comes_and_goes_between_two_reads_is_not_lost(lineage, private_tmp, watched):
    """The quick version of the attack: mount, write, unmount before the table is read again."""
    sink = ListSink()
    mounts = MountWatcher(sink, [watched], describe=lambda pid: lineage.describe(pid, fresh=True))
    mounts.start()
    if not mounts.with_events:
        mounts.stop()
        pytest.skip("this kernel has no fanotify mount events (Linux 6.15+): such a mount can go unseen, "
                    "as docs/ARCHITECTURE.md says")
    elsewhere = private_tmp / "elsewhere"
    elsewhere.mkdir()
    try:
        with mounts._lock:  # the watcher cannot read the table until the mount is gone again
            as_technician(lineage, f"mount --bind {elsewhere} {watched} && echo x > {watched}/x && "
                                   f"{{ {UMOUNT.format(watched)}; }}")
        found = wait_for(lambda: sink.of("mount", op="mounted-and-unmounted"))
    finally:
        subprocess.run(["umount", str(watched)], capture_output=True)
        mounts.stop()
    assert found[0]["by"]["label"] == "S1" and found[0]["by"]["exe"].endswith("mount")
    assert sink.of("mount", op="mounted") == []
    assert sink.of("alarm", tool="mount")[0]["by"]["label"] == "S1"


def test_a_tmpfs_mounted_during_the_session_is_watched_too(lineage, writes, private_tmp):
    place = private_tmp / "newfs"
    place.mkdir()
    mounts = MountWatcher(writes.sink, ["/nonexistent-watch"], on_mount=writes.on_mount)
    mounts.start()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "chp-test", str(place)], check=True)
        assert wait_for(lambda: str(place) in writes.marked)
        as_technician(lineage, f"echo x > {place}/on-new-fs")
        assert wait_for(lambda: writes.sink.of("file", path=str(place / "on-new-fs")))
        # the agent keeps nothing open there: the customer can still unmount (a USB stick, say)
        assert subprocess.run(["umount", str(place)], capture_output=True).returncode == 0
    finally:
        subprocess.run(["umount", str(place)], capture_output=True)
        mounts.stop()


def test_relation_of_a_mount_to_a_watched_path():
    assert relation(b"/etc", b"/etc") == "over"
    assert relation(b"/", b"/home/alice") == "over"
    assert relation(b"/home", b"/home/alice") == "over"
    assert relation(b"/home/alice/mnt", b"/home/alice") == "under"
    assert relation(b"/home/alicex", b"/home/alice") is None
    assert relation(b"/var", b"/etc") is None


def test_metadata_rules():
    base = {"kind": "file", "mode": "0755", "uid": 0, "gid": 0, "user": "root", "group": "root", "acl": None,
            "capabilities": None}
    assert way_back_in(base, {**base, "mode": "4755"}).startswith("it is now setuid")
    assert way_back_in({**base, "mode": "4755"}, {**base, "mode": "4755", "uid": 1}) is None
    assert "before is unknown" in way_back_in(None, {**base, "mode": "2755"})
    assert way_back_in(base, {**base, "kind": "dir", "mode": "1777"}).endswith("(sticky: anyone can still add files)")
    assert way_back_in(base, {**base, "kind": "symlink", "mode": "0777"}) is None
    assert changed(base, {**base, "uid": 1000}) == ["owner"]
    assert parse_posix_acl(struct.pack("<I", 2) + struct.pack("<HHI", 0x08, 7, 27)) == ["group:27:rwx"]
    with pytest.raises(ValueError):
        parse_posix_acl(b"\x01\x00\x00\x00")
