"""Remote-access tools seen running and connected while no session is active.

Most remote-access tools (TeamViewer, AnyDesk, RustDesk…) connect *outward*
to a relay, so a listening port says little: a tool is reported when a
process of that name holds an established connection. An sshd session
process (``sshd: bob@pts/0``, or ``sshd-session`` since OpenSSH 9.8) is a
live session by itself and is reported even when its socket cannot be seen.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from agent.errors import error_detail


@dataclass(frozen=True)
class RemoteTool:
    """A remote-access tool: its process names (lower case, no ``.exe``) and packages."""

    name: str
    processes: frozenset[str]
    prefixes: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    def matches(self, names: Iterable[str]) -> bool:
        return any(n in self.processes or n.startswith(self.prefixes or ("\0",)) for n in names)


def _tool(name: str, processes: str, prefixes: tuple[str, ...] = (), packages: str = "") -> RemoteTool:
    return RemoteTool(name, frozenset(processes.split()), prefixes, tuple(packages.split()))


SSH = "SSH session"
KNOWN_TOOLS: tuple[RemoteTool, ...] = (
    _tool(SSH, "", packages="openssh-server dropbear tinysshd"),
    _tool("RustDesk", "rustdesk", packages="rustdesk"),
    _tool("AnyDesk", "anydesk", packages="anydesk"),
    _tool(
        "TeamViewer",
        "teamviewer teamviewerd teamviewer_service teamviewer_desktop teamviewer_desk tv_bin tv_w32 tv_x64",
        packages="teamviewer teamviewer-host",
    ),
    _tool(
        "VNC server",
        "x11vnc xvnc xtigervnc x0vncserver x0tigervncserver vncserver vncserver-x11 vncserver-x11-core "
        "vncserver-virtual vncagent vino-server wayvnc krfb xtightvnc tightvncserver winvnc winvnc4 "
        "tvnserver uvnc_service kasmvncserver",
        packages="x11vnc tigervnc-standalone-server tigervnc-scraping-server tigervnc-server tightvncserver "
        "vino wayvnc krfb realvnc-vnc-server kasmvncserver",
    ),
    _tool("GNOME Remote Desktop", "gnome-remote-desktop-daemon gnome-remote-de", packages="gnome-remote-desktop"),
    _tool("xrdp", "xrdp xrdp-sesman", packages="xrdp"),
    _tool(
        "Chrome Remote Desktop",
        "chrome-remote-desktop-host chrome-remote-d remoting_host remoting_me2me_host remoting_me2me_ "
        "remoting_desktop remote_assistance_host",
        packages="chrome-remote-desktop",
    ),
    _tool("Splashtop", "splashtop-streamer srstreamer srservice srmanager srfeature srappservice",
          packages="splashtop-streamer"),
    _tool(
        "ScreenConnect (ConnectWise Control)",
        "screenconnect.clientservice screenconnect.windowsclient",
        prefixes=("screenconnect", "connectwisecontrol"),
    ),
    _tool("LogMeIn", "logmein lmiguardian logmeinsystray lmi_rescue lmi-rescue logmeinrescue lmiignition",
          packages="logmein-hamachi"),
    _tool("GoTo Resolve", "gotoassist g2ax_comm_customer gotoresolveprocesschecker", prefixes=("gotoresolve",)),
    _tool("Zoho Assist", "zohoassist zaservice zohours zohotray za_connect zohomeeting", prefixes=("zohoassist",)),
    _tool("Quick Assist", "quickassist"),
    _tool("Remote Desktop Connection", "mstsc"),
    _tool("NoMachine", "nxserver nxnode nxd nxserver.bin nxnode.bin", packages="nomachine"),
    _tool("DWService", "dwagent dwagsvc", packages="dwagent"),
    _tool("MeshCentral agent", "meshagent", packages="meshagent"),
    _tool("Ammyy Admin", "aa_v3 ammyy_admin"),
    _tool("UltraViewer", "ultraviewer ultraviewer_desktop ultraviewer_service"),
    _tool("Supremo", "supremo supremoservice"),
    _tool("RemotePC", "remotepcservice remotepcdesktop remotepc"),
    _tool("ngrok tunnel", "ngrok", packages="ngrok pyngrok"),
    _tool("Cloudflare tunnel", "cloudflared", packages="cloudflared"),
    _tool("frp tunnel", "frpc", packages="frpc"),
    _tool("chisel tunnel", "chisel", packages="chisel"),
    _tool("web terminal", "ttyd gotty shellinaboxd", packages="ttyd gotty shellinabox"),
)

_SSHD_SESSION = re.compile(r"^sshd(?:-session)?: ([^\s@\[]+)@(\S+)")


def tool_for_package(package: str) -> str | None:
    """The remote-access tool a package installs, or None."""
    name = package.lower().split(":", 1)[0]
    return next((t.name for t in KNOWN_TOOLS if name in t.packages), None)


def _names(info: dict) -> list[str]:
    """Every name a process goes by, lower case without ``.exe``."""
    raw = [info.get("name") or "", info.get("exe") or ""]
    cmdline = info.get("cmdline") or []
    if cmdline:
        raw.append(cmdline[0].split(" ", 1)[0] if len(cmdline) == 1 else cmdline[0])
    names = []
    for r in raw:
        base = re.split(r"[/\\]", r)[-1].lower()
        names.append(base[:-4] if base.endswith(".exe") else base)
    return [n for n in names if n]


def _identify(info: dict) -> tuple[str | None, str | None]:
    """(tool name, ssh user) for a process, or (None, None)."""
    names = _names(info)
    if names and names[0] in ("sshd", "sshd-session"):
        m = _SSHD_SESSION.match(" ".join(info.get("cmdline") or []))
        return (SSH, m.group(1)) if m else (None, None)
    for tool in KNOWN_TOOLS[1:]:
        if tool.matches(names):
            return tool.name, None
    return None, None


def _established(conns: Iterable, pid: int | None = None) -> tuple[dict[int, list[dict]], bool]:
    """pid -> its established connections; and whether some sockets had no pid (not ours to see)."""
    by_pid: dict[int, list[dict]] = {}
    hidden = False
    for c in conns:
        if not c.raddr:
            continue
        tcp = getattr(c, "type", None) != socket.SOCK_DGRAM
        if tcp and c.status != psutil.CONN_ESTABLISHED:
            continue
        owner = getattr(c, "pid", None) if pid is None else pid
        if owner is None:
            hidden = True
            continue
        host, port = c.raddr[0], c.raddr[1]
        remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        by_pid.setdefault(owner, []).append({"remote": remote, "status": c.status if tcp else "UDP"})
    return by_pid, hidden


def _per_process(procs: list) -> tuple[dict[int, list[dict]], set[int]]:
    """Connections asked of each process (when listing every socket is not allowed, as on macOS)."""
    by_pid: dict[int, list[dict]] = {}
    unseen: set[int] = set()
    for proc in procs:
        pid = proc.info["pid"]
        try:
            ask = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 names it connections
            conns = ask(kind="inet")
        except (psutil.AccessDenied, psutil.ZombieProcess):
            unseen.add(pid)
            continue
        except psutil.NoSuchProcess:
            continue
        by_pid.update(_established(conns, pid)[0])
    return by_pid, unseen


def scan_remote_access(
    process_iter=psutil.process_iter, net_connections=psutil.net_connections, euid: int | None = None
) -> list[dict]:
    """Remote-access tools running now with live connections: alarm data, sorted by pid.

    ``euid`` is whose eyes the scan has (default: this process's); it tells
    whether other users' sockets could be seen at all.
    """
    candidates = []
    for proc in process_iter(["pid", "name", "exe", "cmdline", "username", "uids"]):
        tool, ssh_user = _identify(proc.info)
        if tool:
            candidates.append((proc, tool, ssh_user))
    if not candidates:
        return []  # the usual case: no need to list every socket
    me = euid if euid is not None else os.geteuid() if hasattr(os, "geteuid") else None
    try:
        by_pid, hidden = _established(net_connections(kind="inet"))
        unseen: set[int] = set()
    except psutil.AccessDenied:
        (by_pid, unseen), hidden = _per_process([proc for proc, _, _ in candidates]), False
    found = []
    for proc, tool, ssh_user in candidates:
        info = proc.info
        pid = info["pid"]
        conns = sorted(by_pid.get(pid, []), key=lambda c: (c["remote"], c["status"]))
        uids = info.get("uids")
        not_visible = pid in unseen or (hidden and me not in (0, None) and (uids is None or uids[0] != me))
        process = " ".join(info.get("cmdline") or []) if tool == SSH else (info.get("name") or "")
        if conns:
            remotes = ", ".join(c["remote"] for c in conns)
            detail = (
                f"an SSH session of {ssh_user} from {remotes}" if tool == SSH
                else f"{tool} is running and connected to {remotes}"
            )
        elif tool == SSH:
            detail = f"an SSH session of {ssh_user} is open"
        elif not_visible:
            detail = f"{tool} is running; its connections are not visible to this agent"
        else:
            continue  # running but connected to no one: not in use
        found.append({
            "tool": tool,
            "pid": pid,
            "process": process[:200],
            "user": info.get("username"),
            "connections": conns,
            "detail": detail,
        })
    return sorted(found, key=lambda f: f["pid"])


class RemoteAccessMonitor:
    """Scans every ``interval`` s while no session is active and raises an ``alarm`` for each tool newly seen.

    A tool stays reported while it stays connected; once it is gone (or a
    session became active) and it shows up again, it is reported again.
    Nothing is remembered across restarts.
    """

    def __init__(self, sink, interval: float = 5.0, session_active: Callable[[], bool] = lambda: False,
                 scanner: Callable[[], list[dict]] = scan_remote_access):
        self._sink = sink
        self._interval = interval
        self._session_active = session_active
        self._scanner = scanner
        self._seen: set[tuple] = set()
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[dict]:
        """One scan now; emits and returns the alarms for tools not reported yet."""
        if self._session_active():
            self._seen.clear()  # what is still connected when the session ends is reported then
            return []
        try:
            found = self._scanner()
        except Exception as exc:  # noqa: BLE001 - a failed scan is recorded; the monitor keeps watching
            message = error_detail(exc)
            if message != self._last_error:
                self._last_error = message
                self._sink.emit("capture-error", {"what": "remote-access scan", "path": None, "error": message})
            return []
        self._last_error = None
        current = {(f["tool"], f["pid"], f["process"]): f for f in found}
        new = [f for key, f in current.items() if key not in self._seen]
        self._seen = set(current)
        for alarm in new:
            self._sink.emit("alarm", alarm)
        return new

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self._interval)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the remote-access monitor is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="remote-access-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread to end (a scan in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
