"""``chaperone-tray [REQUEST_FILE]``: the tray app's entry point and its single-instance guard."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, QSocketNotifier, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QApplication

from agent.errors import ChaperoneError
from agent.home import Home
from ui.compat import bindings_problem
from ui.icons import state_icon

log = logging.getLogger("ui")


class SingleInstance(QObject):
    """One tray per user and home: a ``QLockFile`` decides, a ``QLocalServer`` takes messages.

    A second start forwards its request file (or just "come forward") to the
    first one and exits.
    """

    messageReceived = Signal(dict)

    def __init__(self, home: Home, parent: QObject | None = None):
        super().__init__(parent)
        digest = hashlib.sha256(str(home.path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.name = f"chaperone-tray-{os.getuid()}-{digest}"
        self._lock = QLockFile(str(home.path / "tray.lock"))
        self._lock.setStaleLockTime(0)   # stale only when its process is gone
        self._server: QLocalServer | None = None

    def acquire(self) -> bool:
        if not self._lock.tryLock(100):
            return False
        QLocalServer.removeServer(self.name)
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)
        if not self._server.listen(self.name):
            log.warning("cannot listen for other tray starts: %s", self._server.errorString())
        return True

    def forward(self, message: dict, timeout_ms: int = 3000) -> bool:
        """Send ``message`` to the running instance; False when it does not answer."""
        sock = QLocalSocket()
        sock.connectToServer(self.name)
        if not sock.waitForConnected(timeout_ms):
            return False
        sock.write(json.dumps(message).encode("utf-8") + b"\n")
        ok = sock.waitForBytesWritten(timeout_ms)
        sock.disconnectFromServer()
        return ok

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
        self._lock.unlock()

    def _accept(self) -> None:
        while self._server.hasPendingConnections():
            conn = self._server.nextPendingConnection()
            conn.readyRead.connect(self._read)
            conn.disconnected.connect(conn.deleteLater)

    def _read(self) -> None:
        conn = self.sender()
        if not isinstance(conn, QLocalSocket) or not conn.canReadLine():
            if isinstance(conn, QLocalSocket) and conn.bytesAvailable() > 64 * 1024:
                conn.abort()
            return
        line = bytes(conn.readLine().data())
        try:
            message = json.loads(line)
        except ValueError:
            return
        if isinstance(message, dict):
            self.messageReceived.emit(message)


def install_signal_handlers(app: QApplication) -> QSocketNotifier:
    """SIGTERM and SIGINT quit the app through the event loop, so shutdown runs in order."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno())
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read, app)

    def wake() -> None:
        try:
            reader.recv(64)
        except OSError:
            pass

    notifier.activated.connect(wake)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: app.quit())
    notifier._sockets = (reader, writer)   # keep both ends alive with the notifier
    return notifier


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chaperone-tray", description="The Chaperone tray app.")
    parser.add_argument("request_file", nargs="?", help="a request file to open")
    parser.add_argument("--home", help="the Chaperone home folder (default: $CHAPERONE_HOME or the user data folder)")
    parser.add_argument("--no-start-agent", action="store_true",
                        help="do not start an agent when none answers; wait for one")
    parser.add_argument("--tray-retries", type=int, default=15,
                        help="how many times (2 s apart) to look for a system tray before showing a window")
    return parser.parse_args(argv)


def display_problem(env, platform: str) -> str | None:
    """One sentence when there is no desktop to show the tray on (Qt would abort), else None."""
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return ("there is no desktop session to show the tray in (neither DISPLAY nor WAYLAND_DISPLAY is set); "
            "run it from a desktop session, or run 'chaperone agent' for the service without a tray.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("CHAPERONE_LOG", "WARNING").upper(),
                        format="chaperone-tray: %(levelname)s %(name)s: %(message)s")
    try:
        home = Home.at(args.home)
        home.create()
    except ChaperoneError as exc:
        print(f"chaperone-tray: {exc}", file=sys.stderr)
        return 2
    problem = bindings_problem() or display_problem(os.environ, sys.platform)
    if problem:
        print(f"chaperone-tray: {problem}", file=sys.stderr)
        return 2

    app = QApplication.instance() or QApplication(["chaperone-tray"])
    app.setApplicationName("Chaperone")
    app.setQuitOnLastWindowClosed(False)
    app.setWindowIcon(state_icon("idle"))

    request_file = str(Path(args.request_file).absolute()) if args.request_file else None
    instance = SingleInstance(home)
    if not instance.acquire():
        message = {"open": request_file} if request_file else {"show": True}
        if instance.forward(message):
            return 0
        print("chaperone-tray: another Chaperone tray is running for this home but does not answer; "
              "quit it first.", file=sys.stderr)
        return 1

    from ui.controller import TrayApp

    tray_app = TrayApp(home, start_agent=not args.no_start_agent, tray_retries=args.tray_retries)
    instance.messageReceived.connect(tray_app.handle_message)
    tray_app.quitRequested.connect(app.quit)
    wake = install_signal_handlers(app)
    tray_app.start()
    if request_file:
        tray_app.open_request_file(Path(request_file))
    try:
        return app.exec()
    finally:
        tray_app.shutdown()
        instance.release()
        wake.setEnabled(False)


if __name__ == "__main__":
    raise SystemExit(main())
