"""Remote-access detection: the matcher on fake process tables, one real process, and the monitor."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections import namedtuple

import psutil
import pytest

from agent.capture.remote_access import (
    KNOWN_TOOLS,
    SSH,
    RemoteAccessMonitor,
    scan_remote_access,
    tool_for_package,
)

# -- fakes at the psutil boundary ------------------------------------------------------

Conn = namedtuple("Conn", "fd family type laddr raddr status pid")


class FakeProcess:
    def __init__(self, pid, name, cmdline=(), exe="", username="alice", uid=1000):
        self.info = {"pid": pid, "name": name, "exe": exe, "cmdline": list(cmdline), "username": username,
                     "uids": (uid, uid, uid)}


def fake_process_iter(*procs):
    def process_iter(attrs):
        assert "cmdline" in attrs and "name" in attrs
        return iter(procs)
    return process_iter


def fake_connections(*conns):
    def net_connections(kind):
        assert kind == "inet"
        return list(conns)
    return net_connections


def tcp(pid, remote, status=psutil.CONN_ESTABLISHED, local=("10.0.0.5", 50000)):
    return Conn(3, socket.AF_INET, socket.SOCK_STREAM, local, remote, status, pid)


def udp(pid, remote):
    return Conn(4, socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 21118), remote, psutil.CONN_NONE, pid)


def never_called(kind):
    raise AssertionError("sockets were listed although no tool runs")


# -- the matcher ----------------------------------------------------------------------------


def test_tools_with_established_connections_are_reported():
    procs = fake_process_iter(
        FakeProcess(100, "TeamViewer_Desk", ["/opt/teamviewer/tv_bin/TeamViewer_Desktop"], exe="/opt/teamviewer/tv_bin/TeamViewer_Desktop"),
        FakeProcess(200, "rustdesk", ["/usr/bin/rustdesk", "--service"], username="root", uid=0),
        FakeProcess(300, "AnyDesk.exe", ["C:\\Program Files (x86)\\AnyDesk\\AnyDesk.exe"], exe="C:\\Program Files (x86)\\AnyDesk\\AnyDesk.exe"),
        FakeProcess(400, "bash", ["bash"]),
        FakeProcess(500, "ngrok", ["ngrok", "tcp", "22"]),
    )
    conns = fake_connections(
        tcp(100, ("37.252.227.10", 5938)),
        udp(200, ("203.0.113.9", 21116)),
        tcp(300, ("2001:db8::7", 443)),
        tcp(400, ("93.184.216.34", 443)),
        tcp(500, ("3.134.39.220", 443)),
        tcp(500, ("3.134.39.221", 443), status=psutil.CONN_TIME_WAIT),
    )
    found = scan_remote_access(procs, conns, euid=0)
    assert [(f["pid"], f["tool"]) for f in found] == [
        (100, "TeamViewer"), (200, "RustDesk"), (300, "AnyDesk"), (500, "ngrok tunnel"),
    ]
    tv, rust, anydesk, ngrok = found
    assert tv == {
        "tool": "TeamViewer", "pid": 100, "process": "TeamViewer_Desk", "user": "alice",
        "connections": [{"remote": "37.252.227.10:5938", "status": "ESTABLISHED"}],
        "detail": "TeamViewer is running and connected to 37.252.227.10:5938",
    }
    assert rust["connections"] == [{"remote": "203.0.113.9:21116", "status": "UDP"}] and rust["user"] == "root"
    assert anydesk["connections"][0]["remote"] == "[2001:db8::7]:443"
    assert ngrok["connections"] == [{"remote": "3.134.39.220:443", "status": "ESTABLISHED"}]


def test_tools_that_are_only_running_or_listening_are_not_reported():
    procs = fake_process_iter(
        FakeProcess(10, "anydesk", ["/usr/bin/anydesk", "--service"]),
        FakeProcess(11, "x11vnc", ["x11vnc", "-forever"]),
    )
    conns = fake_connections(tcp(11, (), status=psutil.CONN_LISTEN, local=("0.0.0.0", 5900)))
    assert scan_remote_access(procs, conns, euid=0) == []


def test_only_sshd_session_processes_count():
    procs = fake_process_iter(
        FakeProcess(1, "sshd", ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"], username="root", uid=0),
        FakeProcess(2, "sshd", ["sshd: bob [priv]"], username="root", uid=0),
        FakeProcess(3, "sshd", ["sshd: bob@pts/0"], username="bob", uid=1001),
        FakeProcess(4, "sshd-session", ["sshd-session: carol@notty"], username="carol", uid=1002),
        FakeProcess(5, "sshd-session", ["sshd-session: dave [preauth]"], username="sshd", uid=100),
        FakeProcess(6, "bash", ["sshd: fake@pts/9"]),
    )
    conns = fake_connections(tcp(4, ("198.51.100.20", 51234), local=("10.0.0.5", 22)))
    found = scan_remote_access(procs, conns, euid=0)
    assert [(f["pid"], f["tool"], f["user"]) for f in found] == [(3, SSH, "bob"), (4, SSH, "carol")]
    assert found[0]["detail"] == "an SSH session of bob is open" and found[0]["process"] == "sshd: bob@pts/0"
    assert found[1]["detail"] == "an SSH session of carol from 198.51.100.20:51234"


def test_a_tool_whose_sockets_this_agent_cannot_see_is_reported_as_such():
    procs = fake_process_iter(FakeProcess(42, "teamviewerd", ["/opt/teamviewer/tv_bin/teamviewerd", "-d"], username="root", uid=0))
    conns = fake_connections(tcp(None, ("37.252.227.10", 5938)))
    (found,) = scan_remote_access(procs, conns, euid=1000)
    assert found["connections"] == [] and "not visible" in found["detail"]
    assert scan_remote_access(procs, conns, euid=0) == []  # root sees every socket: it is simply not connected


def test_no_socket_listing_when_no_tool_runs():
    assert scan_remote_access(fake_process_iter(FakeProcess(1, "bash", ["bash"])), never_called) == []


def test_every_tool_has_a_name_and_a_way_to_be_found():
    assert len({t.name for t in KNOWN_TOOLS}) == len(KNOWN_TOOLS)
    for tool in KNOWN_TOOLS:
        assert tool.name == SSH or tool.processes or tool.prefixes
    names = {t.name for t in KNOWN_TOOLS}
    for expected in ("RustDesk", "AnyDesk", "TeamViewer", "VNC server", "Chrome Remote Desktop", "Splashtop",
                     "ScreenConnect (ConnectWise Control)", "LogMeIn", "Zoho Assist", "Quick Assist",
                     "Remote Desktop Connection", "ngrok tunnel", "Cloudflare tunnel"):
        assert expected in names


@pytest.mark.parametrize(
    ("package", "tool"),
    [("anydesk", "AnyDesk"), ("x11vnc", "VNC server"), ("rustdesk", "RustDesk"), ("teamviewer", "TeamViewer"),
     ("openssh-server", SSH), ("libc6:amd64", None), ("vim", None)],
)
def test_packages_of_remote_access_tools(package, tool):
    assert tool_for_package(package) == tool


# -- one real process ----------------------------------------------------------------------


CHILD = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
sys.stdin.read()
"""


def test_a_real_process_named_like_a_tool_with_a_real_connection_is_found():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        child = subprocess.Popen(
            ["x11vnc", "-c", CHILD, str(port)], executable=sys.executable,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            conn, _ = server.accept()
            with conn:
                assert child.stdout.readline() == "connected\n"
                found = [f for f in scan_remote_access() if f["pid"] == child.pid]
        finally:
            child.stdin.close()
            child.wait(timeout=10)
    assert len(found) == 1
    assert found[0]["tool"] == "VNC server"
    assert {"remote": f"127.0.0.1:{port}", "status": "ESTABLISHED"} in found[0]["connections"]


# -- the monitor -----------------------------------------------------------------------------


class RecordingSink:
    """A real sink that keeps what it is given."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        self.got_alarm = threading.Event()

    def emit(self, type, data):
        with self.lock:
            self.records.append((type, data))
        if type == "alarm":
            self.got_alarm.set()


def alarm(pid, tool="AnyDesk", process="anydesk"):
    return {"tool": tool, "pid": pid, "process": process, "user": "alice",
            "connections": [{"remote": "203.0.113.1:443", "status": "ESTABLISHED"}], "detail": f"{tool} is running"}


class ScriptedScanner:
    def __init__(self, *results):
        self.results = list(results)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def test_monitor_reports_each_tool_once_while_it_stays_connected_and_again_after_it_reconnects():
    sink = RecordingSink()
    scanner = ScriptedScanner([alarm(7)], [alarm(7)], [alarm(7), alarm(9, "RustDesk", "rustdesk")], [], [alarm(7)])
    monitor = RemoteAccessMonitor(sink, scanner=scanner)
    assert monitor.check() == [alarm(7)]
    assert monitor.check() == []
    assert monitor.check() == [alarm(9, "RustDesk", "rustdesk")]
    assert monitor.check() == []  # both gone
    assert monitor.check() == [alarm(7)]  # back again: reported again
    assert [d["pid"] for t, d in sink.records if t == "alarm"] == [7, 9, 7]


def test_monitor_is_silent_during_a_session_and_reports_what_is_left_after_it():
    sink = RecordingSink()
    active = [False]
    scanner = ScriptedScanner([alarm(7)], [alarm(7)])
    monitor = RemoteAccessMonitor(sink, session_active=lambda: active[0], scanner=scanner)
    assert monitor.check() == [alarm(7)]
    active[0] = True
    assert monitor.check() == []
    assert scanner.calls == 1  # no scanning while a consented session runs
    active[0] = False
    assert monitor.check() == [alarm(7)]  # still connected after the session: said again


def test_monitor_records_a_failing_scan_once_and_keeps_going():
    sink = RecordingSink()
    scanner = ScriptedScanner(psutil.AccessDenied(), psutil.AccessDenied(), OSError("gone"), [alarm(3)])
    monitor = RemoteAccessMonitor(sink, scanner=scanner)
    for _ in range(4):
        monitor.check()
    types = [t for t, _ in sink.records]
    assert types == ["capture-error", "capture-error", "alarm"]
    assert sink.records[0][1]["what"] == "remote-access scan" and sink.records[1][1]["error"] == "OSError: gone"


def test_monitor_thread_alarms_and_stops_deterministically():
    sink = RecordingSink()
    scans = []

    def scanner():
        scans.append(1)
        return [alarm(11)]

    monitor = RemoteAccessMonitor(sink, interval=0.01, scanner=scanner)
    monitor.start()
    try:
        assert sink.got_alarm.wait(10)
    finally:
        monitor.stop()
    assert not any(t.name == "remote-access-monitor" for t in threading.enumerate())
    assert [d["pid"] for t, d in sink.records if t == "alarm"] == [11]  # however many scans, one alarm
    monitor.stop()  # a second stop is harmless
    monitor.start()  # and it can start again
    monitor.stop()


class ProcessWithSockets(FakeProcess):
    """A process that answers for its own sockets (listing every socket is refused, as on macOS)."""

    def __init__(self, *args, conns=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.conns = conns

    def net_connections(self, kind):
        if self.conns is None:
            raise psutil.AccessDenied(self.info["pid"])
        return self.conns


def test_when_sockets_cannot_be_listed_each_tool_is_asked_for_its_own():
    def refused(kind):
        raise psutil.AccessDenied()

    procs = fake_process_iter(
        ProcessWithSockets(1, "AnyDesk", ["/Applications/AnyDesk.app/Contents/MacOS/AnyDesk"],
                           conns=[tcp(None, ("203.0.113.5", 443))]),
        ProcessWithSockets(2, "TeamViewer", ["/Applications/TeamViewer.app/Contents/MacOS/TeamViewer"], conns=None),
        ProcessWithSockets(3, "rustdesk", ["rustdesk"], conns=[]),
    )
    found = scan_remote_access(procs, refused, euid=501)
    assert [(f["pid"], f["tool"]) for f in found] == [(1, "AnyDesk"), (2, "TeamViewer")]
    assert found[0]["connections"] == [{"remote": "203.0.113.5:443", "status": "ESTABLISHED"}]
    assert "not visible" in found[1]["detail"]
