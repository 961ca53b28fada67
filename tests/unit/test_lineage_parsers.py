"""The pure parsers under the lineage and the filesystem capture: netlink, /proc, cgroups, systemd
command lines, mountinfo, fanotify's file-identifier records. Hypothesis for each."""

from __future__ import annotations

import struct
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture import proc_connector as pc
from agent.capture.execs import exec_opens, is_elf_interpreter, take_program
from agent.capture.fanotify import (
    FAN_CREATE,
    FAN_EVENT_INFO_TYPE_DFID,
    FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    FAN_OPEN_EXEC,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    event_spans,
    join_name,
    mount_events,
    parse_fid_events,
)
from agent.capture.mountinfo import escape, parse_line, parse_mountinfo, storage_mounts
from agent.capture.procfs import parse_cmdline, parse_stat, parse_status_ids, unit_of_cgroup
from agent.capture.proctable import manager_command
from agent.capture.units import units_started

i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


# --- netlink: the proc connector --------------------------------------------------------------------

def message(what: int, data: bytes, *, ts: int = 1, cpu: int = 0, idx: int = 1, val: int = 1,
            data_len: int | None = None, msg_len: int | None = None) -> bytes:
    body = struct.pack("=IIQ", what, cpu, ts) + data
    dlen = len(body) if data_len is None else data_len
    cn = pc.CN_MSG.pack(idx, val, 0, 0, dlen, 0) + body
    total = 16 + len(cn) if msg_len is None else msg_len
    return pc.NLMSGHDR.pack(total, pc.NLMSG_DONE, 0, 0, 0) + cn


@given(ppid=i32, ptgid=i32, pid=i32, tgid=i32, ts=u64, cpu=u32)
def test_a_fork_reads_back(ppid, ptgid, pid, tgid, ts, cpu):
    buf = message(pc.PROC_EVENT_FORK, struct.pack("=iiii", ppid, ptgid, pid, tgid), ts=ts, cpu=cpu)
    event = pc.parse_message(buf)
    assert event == pc.ProcEvent("fork", pid, tgid, ts, cpu, ppid, ptgid)
    assert pc.decode(bytearray(buf), len(buf)) == event


@given(pid=i32, tgid=i32, code=u32, sig=u32, ppid=i32, ptgid=i32)
def test_an_exit_reads_back_with_and_without_the_parent(pid, tgid, code, sig, ppid, ptgid):
    new = message(pc.PROC_EVENT_EXIT, struct.pack("=iiIIii", pid, tgid, code, sig, ppid, ptgid))
    old = message(pc.PROC_EVENT_EXIT, struct.pack("=iiII", pid, tgid, code, sig))
    assert pc.parse_message(new) == pc.ProcEvent("exit", pid, tgid, 1, 0, ppid, ptgid, exit_code=code)
    assert pc.parse_message(old) == pc.ProcEvent("exit", pid, tgid, 1, 0, 0, 0, exit_code=code)
    assert pc.decode(new, len(new)) == pc.parse_message(new)
    assert pc.decode(old, len(old)) == pc.parse_message(old)


@given(pid=i32, real=u32, effective=u32, comm=st.binary(max_size=16))
def test_ids_sessions_ptrace_and_names_read_back(pid, real, effective, comm):
    uid = pc.parse_message(message(pc.PROC_EVENT_UID, struct.pack("=iiII", pid, pid, real, effective)))
    assert (uid.kind, uid.real, uid.effective) == ("uid", real, effective)
    assert pc.parse_message(message(pc.PROC_EVENT_SID, struct.pack("=ii", pid, pid))).kind == "sid"
    trace = pc.parse_message(message(pc.PROC_EVENT_PTRACE, struct.pack("=iiii", pid, pid, 7, 8)))
    assert (trace.kind, trace.parent_tgid) == ("ptrace", 8)
    named = pc.parse_message(message(pc.PROC_EVENT_COMM, struct.pack("=ii16s", pid, pid, comm)))
    assert named.comm == comm.split(b"\0", 1)[0].decode("utf-8", "replace")


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_any_bytes_are_an_event_or_none_and_the_fast_path_agrees(data):
    assert pc.decode(data, len(data)) == pc.parse_message(data)


@given(what=st.sampled_from([pc.PROC_EVENT_FORK, pc.PROC_EVENT_EXEC, pc.PROC_EVENT_EXIT]),
       data=st.binary(min_size=0, max_size=40), data_len=st.integers(0, 80), msg_len=st.integers(0, 120),
       idx=st.sampled_from([1, 2]), cut=st.integers(0, 120))
@settings(max_examples=500)
def test_damaged_messages_are_refused_alike_by_both_paths(what, data, data_len, msg_len, idx, cut):
    buf = message(what, data, data_len=data_len, msg_len=msg_len, idx=idx)
    n = min(cut, len(buf))
    assert pc.decode(bytearray(buf), n) == pc.parse_message(buf, n)


def test_another_connector_and_an_ack_are_not_process_events():
    assert pc.parse_message(message(pc.PROC_EVENT_FORK, bytes(16), idx=2)) is None
    assert pc.parse_message(message(pc.PROC_EVENT_NONE, struct.pack("=I", 0))).kind == "ack"


def test_the_subscription_message_is_what_the_kernel_expects():
    msg = pc.subscribe_message(port=1234)
    length, kind, _flags, _seq, port = pc.NLMSGHDR.unpack_from(msg)
    idx, val, _seq, _ack, dlen, _flags = pc.CN_MSG.unpack_from(msg, 16)
    assert (length, kind, port, idx, val, dlen) == (len(msg), pc.NLMSG_DONE, 1234, 1, 1, 4)
    assert struct.unpack_from("=I", msg, 36)[0] == pc.PROC_CN_MCAST_LISTEN


# --- /proc -----------------------------------------------------------------------------------------

@given(pid=st.integers(1, 2**22), comm=st.text(alphabet=st.characters(blacklist_characters="\0\n"), max_size=15),
       ppid=st.integers(0, 2**22), sid=st.integers(0, 2**22), start=st.integers(0, 2**40))
def test_stat_lines_with_hostile_names_read_back(pid, comm, ppid, sid, start):
    fields = ["S", str(ppid), "1", str(sid)] + ["0"] * 15 + [str(start)] + ["0"] * 30
    line = f"{pid} ({comm}) " + " ".join(fields)
    stat = parse_stat(line)
    assert (stat.pid, stat.comm, stat.ppid, stat.sid, stat.start_ticks) == (pid, comm, ppid, sid, start)


@given(st.text(max_size=200))
def test_garbage_stat_lines_are_value_errors(text):
    try:
        parse_stat(text)
    except ValueError:
        pass


@given(st.lists(st.binary(min_size=1).filter(lambda b: b"\0" not in b), max_size=8))
def test_command_lines_split_on_nul(args):
    raw = b"".join(a + b"\0" for a in args)
    assert parse_cmdline(raw) == [a.decode("utf-8", "surrogateescape") for a in args]


def test_status_ids_and_cgroup_units():
    assert parse_status_ids("Name:\tx\nUid:\t1000\t0\t0\t0\n") == (1000, 0)
    assert unit_of_cgroup("0::/system.slice/cron.service\n") == "cron.service"
    assert unit_of_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-u7.service\n") \
        == "run-u7.service"
    assert unit_of_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") == "session-3.scope"
    assert unit_of_cgroup("12:name=systemd:/system.slice/ssh.service\n0::/\n") == "ssh.service"
    assert unit_of_cgroup("0::/\n") is None
    assert unit_of_cgroup("0::/init.scope\n") == "init.scope"


# --- systemd command lines ---------------------------------------------------------------------------

def test_units_a_command_starts():
    assert units_started(["systemctl", "start", "foo"]) == ({"foo.service"}, False)
    assert units_started(["systemctl", "--user", "enable", "--now", "a.timer"]) == ({"a.timer", "a.service"}, False)
    assert units_started(["systemctl", "restart", "x.socket", "y"]) == ({"x.socket", "x.service", "y.service"}, False)
    assert units_started(["systemctl", "status", "foo"]) == (set(), False)
    assert units_started(["systemctl", "daemon-reload"]) == (set(), False)
    assert units_started(["systemd-run", "--unit=bd", "sh", "-c", "x"]) == ({"bd.service"}, False)
    assert units_started(["systemd-run", "-u", "bd", "--scope", "sleep", "1"]) == ({"bd.scope"}, False)
    assert units_started(["systemd-run", "--on-active=30", "--unit", "t", "cmd"]) == ({"t.service", "t.timer"}, False)
    assert units_started(["systemd-run", "-p", "User=nobody", "sleep", "9"]) == (set(), True)
    assert units_started(["systemd-run", "sleep", "--unit=x"]) == (set(), True)  # the command's own argument
    assert units_started(["service", "cups", "restart"]) == ({"cups.service"}, False)
    assert units_started(["ls", "-l"]) == (set(), False)


def test_a_manager_command_is_known_by_the_program_not_by_argv0():
    assert manager_command("/usr/bin/systemctl", ["innocent", "start", "bd"]) == ["systemctl", "start", "bd"]
    assert manager_command("/usr/bin/dash", ["/bin/sh", "/usr/sbin/service", "cups", "start"]) \
        == ["service", "cups", "start"]
    assert manager_command("/usr/bin/ls", ["ls"]) is None


@given(st.lists(st.text(max_size=12), max_size=8))
def test_any_command_line_is_a_set_of_units(argv):
    named, transient = units_started(["systemctl", *argv])
    assert isinstance(named, set) and transient is False
    named, transient = units_started(["systemd-run", *argv])
    assert isinstance(named, set) and isinstance(transient, bool)


# --- mountinfo -------------------------------------------------------------------------------------

paths = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b).map(lambda b: b"/" + b)


@given(mount_id=st.integers(1, 10**6), mountpoint=paths, root=paths, source=paths,
       optional=st.lists(st.sampled_from([b"shared:1", b"master:2", b"unbindable"]), max_size=3))
def test_mountinfo_lines_read_back_whatever_the_paths(mount_id, mountpoint, root, source, optional):
    line = b" ".join([str(mount_id).encode(), b"1", b"8:1", escape(root), escape(mountpoint), b"rw,relatime",
                      *optional, b"-", b"ext4", escape(source), b"rw"])
    mount = parse_line(line)
    assert (mount.mount_id, mount.root, mount.mountpoint, mount.source, mount.fstype) == \
        (mount_id, root, mountpoint, source, "ext4")


@given(st.binary(max_size=400))
def test_any_mountinfo_text_parses_or_is_skipped(data):
    assert isinstance(parse_mountinfo(data), dict)


def test_one_mount_per_filesystem_preferring_its_root_and_no_kernel_interfaces():
    text = (b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
            b"2 1 8:1 /srv/data /mnt/bind rw - ext4 /dev/sda1 rw\n"
            b"3 1 0:5 / /proc rw - proc proc rw\n"
            b"4 1 0:40 / /tmp rw - tmpfs tmpfs rw\n"
            b"5 1 0:40 / /var/tmp rw - tmpfs tmpfs rw\n")
    chosen = storage_mounts(parse_mountinfo(text))
    assert [(m.mountpoint, m.fstype) for m in chosen] == [(b"/", "ext4"), (b"/tmp", "tmpfs")]


# --- fanotify file-identifier records ----------------------------------------------------------------

def fid_record(kind: int, fsid: bytes, handle_type: int, handle: bytes, name: bytes | None) -> bytes:
    body = fsid + struct.pack("=Ii", len(handle), handle_type) + handle
    if name is not None:
        body += name + b"\0"
    body += b"\0" * (-(4 + len(body)) % 4)
    return struct.pack("=BBH", kind, 0, 4 + len(body)) + body


def fid_event(mask: int, pid: int, records: list[bytes]) -> bytes:
    infos = b"".join(records)
    return struct.pack("=IBBHQii", 24 + len(infos), 3, 0, 24, mask, -1, pid) + infos


names = st.binary(min_size=1, max_size=30).filter(lambda b: b"\0" not in b and b"/" not in b)
handles = st.binary(min_size=1, max_size=32)


@given(st.lists(st.tuples(st.sampled_from([FAN_CREATE, FAN_OPEN_EXEC, FAN_RENAME]), st.integers(1, 2**22),
                          st.binary(min_size=8, max_size=8), st.integers(1, 255), handles, names, names),
                max_size=6))
def test_fid_events_read_back(specs):
    buf = b""
    expected = []
    for mask, pid, fsid, htype, handle, name, other in specs:
        if mask == FAN_RENAME:
            records = [fid_record(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, fsid, htype, handle, name),
                       fid_record(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, fsid, htype, handle, other)]
        else:
            records = [fid_record(FAN_EVENT_INFO_TYPE_DFID_NAME, fsid, htype, handle, name)]
        buf += fid_event(mask, pid, records)
        expected.append((mask, pid, fsid, htype, handle, name))
    events = parse_fid_events(buf)
    assert [(e.mask, e.pid, e.infos[0].fsid, e.infos[0].handle_type, e.infos[0].handle, e.infos[0].name)
            for e in events] == expected
    renames = [e for e in events if e.mask == FAN_RENAME]
    assert all(e.info(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME).name for e in renames)
    # the exec reader's hand-rolled walk finds exactly the exec opens
    want = [(e.pid, e.infos[0].fsid + struct.pack("=Ii", len(e.infos[0].handle), e.infos[0].handle_type)
             + e.infos[0].handle, e.infos[0].name) for e in events if e.mask == FAN_OPEN_EXEC]
    assert exec_opens(buf) == want
    # the write recorder's first look (its short way for a close after writing) agrees with the full parse
    spans = event_spans(buf)
    assert [(mask, pid, key, name) for _s, _e, mask, pid, key, name in spans] == [
        (e.mask, e.pid, e.infos[0].fsid + struct.pack("=Ii", len(e.infos[0].handle), e.infos[0].handle_type)
         + e.infos[0].handle, e.infos[0].name) for e in events]
    assert all(parse_fid_events(buf[s:e]) == [event] for (s, e, *_), event in zip(spans, events, strict=True))


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_any_fid_buffer_parses_without_raising(data):
    assert isinstance(parse_fid_events(data), list)
    assert isinstance(exec_opens(data), list)
    assert isinstance(event_spans(data), list)


def test_an_overflow_and_a_folder_event_without_a_name():
    buf = fid_event(FAN_Q_OVERFLOW, 0, []) + fid_event(FAN_CREATE, 9, [
        fid_record(FAN_EVENT_INFO_TYPE_DFID, b"f" * 8, 1, b"h" * 8, None)])
    overflow, folder = parse_fid_events(buf)
    assert overflow.mask == FAN_Q_OVERFLOW and overflow.infos == ()
    assert folder.info(FAN_EVENT_INFO_TYPE_DFID).name is None
    assert exec_opens(buf) == [(-1, b"", b"")]
    assert [span[4:] for span in event_spans(buf)] == [(b"", None), (b"f" * 8 + struct.pack("=Ii", 8, 1) + b"h" * 8, None)]


def test_join_name():
    assert join_name(b"/", b"etc") == b"/etc"
    assert join_name(b"/usr/bin/", b"x") == b"/usr/bin/x"
    assert join_name(b"/usr/bin", b".") == b"/usr/bin"
    assert join_name(b"/usr/bin", None) == b"/usr/bin"


# --- which open is which exec's program ----------------------------------------------------------------

def test_each_exec_takes_its_program_and_leaves_the_next_ones():
    scripts = {b"/usr/sbin/service"}
    opens = deque([b"/usr/bin/sh", b"/usr/bin/true", b"/usr/sbin/service", b"/usr/bin/dash", b"/usr/bin/env"])
    taken = [take_program(opens, is_script=lambda p: p in scripts) for _ in range(4)]
    assert taken == [b"/usr/bin/sh", b"/usr/bin/true", b"/usr/sbin/service", b"/usr/bin/env"]
    opens = deque([b"/lib64/ld-linux-x86-64.so.2", b"/bin/ls", b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"])
    assert take_program(opens, is_script=lambda p: False) == b"/bin/ls" and not opens
    assert is_elf_interpreter(b"/lib/ld-musl-x86_64.so.1")


@given(st.lists(st.tuples(st.sampled_from([0x01000000, 0x02000000]), st.integers(1, 2**22), u64), max_size=6))
def test_mount_events_read_back(specs):
    buf = b"".join(struct.pack("=IBBHQii", 24 + 16, 3, 0, 24, mask, -1, pid) + struct.pack("=BBHIQ", 7, 0, 16, 0, uid)
                   for mask, pid, uid in specs)
    assert mount_events(buf) == specs
    assert isinstance(mount_events(buf[:-3]), list)
