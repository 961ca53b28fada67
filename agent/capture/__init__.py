"""What the technician touched: files, processes and the machine's inventory.

The session manager drives one :class:`Capture` per session::

    cap = Capture(sink, watch_paths, state_dir=path, technician_pids=callable_or_None,
                  lineage=the_agents_lineage, label=session_id)
    cap.prepare()   # before the session is active
    ...
    cap.stop()      # returns once every record is emitted

Every record goes through ``sink.emit(type, data)`` (thread-safe). The
lineage (:class:`agent.capture.lineage.Lineage`) is the agent's, built and
started by the service and shared with consent; without one, capture starts
its own for the session. Parts: files below the watch paths
(:mod:`~agent.capture.files`), every exec (:mod:`~agent.capture.processes`),
the technician's writes anywhere and metadata changes
(:mod:`~agent.capture.writes`, as root), mounts
(:mod:`~agent.capture.mounts`), the inventory before and after.

With a ``state_dir`` (the session's folder), ``prepare`` keeps the file
baseline there (``baseline.bin``: signatures and hashes, no contents) and
records its SHA-256 (a ``baseline`` record); the inventory keeps its
"before" there too (``SessionInventory``). When the journal there shows that
the agent started again during the session, ``prepare`` uses the saved
baseline instead of a new scan and records what changed during the gap
(``agent.capture.resume``). ``after_gap(gap)`` does the same after a stall
of a running agent; ``dead_workers()`` names the threads that died.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.capture.baseline import BASELINE_FILE, ContentBaseline, TreeIndex, load_baseline, save_baseline
from agent.capture.classify import MAX_DIFF_BYTES, ConfigPlaces, decode_text
from agent.capture.fanotify import FanotifyUnavailable, GuessAttributor
from agent.capture.files import FileWatcher
from agent.capture.hashing import hash_file
from agent.capture.inotify import died
from agent.capture.inventory.session_inventory import SessionInventory
from agent.capture.lineage import Lineage
from agent.capture.mountinfo import Mount
from agent.capture.mounts import MountWatcher
from agent.capture.paths import path_fields
from agent.capture.processes import ProcessRecorder
from agent.capture.resume import JOURNAL_NAME, JournalView, processes_since, read_journal
from agent.capture.writes import WriteRecorder
from agent.errors import error_detail
from agent.records import RecordType
from agent.redact import Redactor, default_redactor, is_secret_file, is_text_config

__all__ = ["Capture", "default_watch_paths", "system_config_paths"]

BASELINE_MAX_FILES = 50_000
BASELINE_MAX_BYTES = 256 << 20


def _linux_system_paths() -> list[str]:
    return ["/etc"]


def _macos_system_paths() -> list[str]:
    return ["/etc", "/private/etc", "/Library/LaunchDaemons", "/Library/LaunchAgents", "/Library/Preferences"]


def _windows_system_paths() -> list[str]:
    system_root = os.environ.get("SystemRoot", r"C:\Windows")
    program_data = os.environ.get("ProgramData", r"C:\ProgramData")
    return [program_data, rf"{system_root}\System32\drivers\etc", rf"{system_root}\System32\Tasks"]


_SYSTEM_PATHS: dict[str, Callable[[], list[str]]] = {
    "linux": _linux_system_paths,
    "darwin": _macos_system_paths,
    "win32": _windows_system_paths,
}


def system_config_paths(platform: str = sys.platform) -> list[str]:
    """The system configuration folders of ``platform`` (those that exist are watched)."""
    key = next((k for k in _SYSTEM_PATHS if platform.startswith(k)), "linux")
    return _SYSTEM_PATHS[key]()


def customer_home() -> Path:
    """The home of the person at the machine: the sudo caller when run through sudo, else ours."""
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sys.platform != "win32":
        import pwd

        try:
            return Path(pwd.getpwnam(sudo_user).pw_dir)
        except KeyError:
            pass
    return Path.home()


def default_watch_paths(platform: str = sys.platform) -> list[str]:
    """The customer's home and the system configuration folders that exist here."""
    paths = [str(customer_home()), *system_config_paths(platform)]
    return [p for p in dict.fromkeys(paths) if os.path.isdir(p)]


class Capture:
    """Files, processes and inventory of one session, recorded through ``sink``."""

    def __init__(
        self,
        sink,
        watch_paths: Iterable[str | os.PathLike],
        *,
        state_dir: Path | None = None,
        technician_pids: Callable[[], Iterable[int]] | None = None,
        lineage: Lineage | None = None,
        label: str | None = None,
        process_interval: float = 0.1,
        inventory: bool = True,
        fanotify: bool = True,
        redactor: Redactor | None = None,
    ):
        """``state_dir``: the session's folder, where the inventory's "before" (redacted summaries) and
        the file baseline's signatures and hashes are kept (0600) so that they survive an agent restart;
        the text of configuration files stays in memory, so that no copy of the customer's configuration
        (and its secrets) is written to disk.
        ``technician_pids``: the session's login processes (SSH), marked in the lineage as ``label``
        (default: the session id of the sink's journal); ``process_interval``: the sampling interval
        when the lineage cannot follow the kernel's events; ``fanotify=False``: attribute file changes
        by guess and do not watch writes outside the watch paths."""
        self._sink = sink
        self.state_dir = state_dir
        self.roots = _top_roots(watch_paths)
        self._index = TreeIndex()
        self._contents = ContentBaseline()
        self._config_prefixes = tuple(
            os.fsencode(os.path.realpath(p)).rstrip(b"/") + b"/" for p in system_config_paths()
        )
        self._config_places = ConfigPlaces(self.roots, self._config_prefixes)
        self._technician_pids = technician_pids
        self._lineage = lineage
        self._own_lineage = lineage is None
        self.label = label or _session_of(sink)
        self._process_interval = process_interval
        self.redactor = redactor or default_redactor()
        self._use_fanotify = fanotify
        self._inventory = SessionInventory(sink, state_dir=state_dir, journal_path=getattr(
            getattr(sink, "journal", None), "path", None)) if inventory else None
        self._baseline_files = self._baseline_bytes = 0
        self._baseline_capped = False
        self._stopped = False
        self._attributor = None
        self._watcher: FileWatcher | None = None
        self._processes: ProcessRecorder | None = None
        self._writes: WriteRecorder | None = None
        self._mounts: MountWatcher | None = None
        self._baseline_loaded = False

    @property
    def lineage(self) -> Lineage | None:
        return self._lineage

    def prepare(self) -> None:
        """Baseline, inventory "before", then the lineage's recorders, the mounts and the file watcher.

        After a restart, the saved ones, then what changed during the gap (``after-gap`` records)."""
        view = read_journal(self.state_dir / JOURNAL_NAME) if self.state_dir is not None else None
        resumed = view if view is not None and view.resumed else None
        present = []
        for root in self.roots:
            if os.path.isdir(root):
                present.append(root)
            else:
                self._sink.emit(
                    "capture-error",
                    {"what": "watch-path-missing", **path_fields(root), "error": "The folder to watch does not exist."},
                )
        if not (resumed is not None and self._load_baseline(resumed)):
            for root in present:
                self._index.scan(root, on_file=self._remember_start)
            self._save_baseline()
        if self._inventory is not None:
            self._inventory.begin()  # the "before" (or the saved one after a restart), then its live watcher
        if self._lineage is None:
            self._lineage = Lineage(sample_interval=self._process_interval)
            self._lineage.start()
        lineage = self._lineage
        if lineage.why_sampled and os.name == "posix" and os.geteuid() == 0:
            self._sink.emit("capture-error", {"what": "process-events", "path": None,
                                              "error": f"{lineage.why_sampled} Programs are sampled (a guess)."})
        self._processes = ProcessRecorder(self._sink, lineage, label=self.label,
                                          technician_roots=self._technician_pids, redactor=self.redactor)
        self._processes.start()
        self._attributor = self._start_writes(present, lineage)
        if sys.platform.startswith("linux"):
            self._mounts = MountWatcher(self._sink, present, on_mount=self._mounted,
                                        describe=lambda pid: lineage.describe(pid, fresh=True))
            self._mounts.start()
        self._watcher = FileWatcher(
            self._sink,
            present,
            index=self._index,
            contents=self._contents,
            config_roots=tuple(p.rstrip(b"/") for p in self._config_prefixes),
            attributor=self._attributor,
            redactor=self.redactor,
        )
        self._watcher.start()
        if resumed is not None:
            self._after_restart(resumed)

    def _start_writes(self, present: list[bytes], lineage: Lineage):
        """The filesystem-wide capture as root (it also names who wrote below the watch paths), else
        the labelled guess."""
        since = time.monotonic_ns()
        guess = GuessAttributor(lambda: lineage.recent(since_ns=since))
        if not self._use_fanotify or os.name != "posix" or os.geteuid() != 0:
            return guess
        writes = WriteRecorder(self._sink, lineage, present)
        try:
            writes.start()
        except FanotifyUnavailable as exc:
            self._sink.emit("capture-error", {
                "what": "attribution", "path": None,
                "error": f"{exc} File changes are attributed by guess, and writes outside the watch paths "
                         "are not seen."})
            return guess
        self._writes = writes
        return writes

    def _mounted(self, mount: Mount) -> None:
        if self._writes is not None:
            self._writes.on_mount(mount)
        if self._lineage is not None:
            self._lineage.on_mount(mount)

    def stop(self) -> None:
        """Stop watching, record the last processes and writes, recheck the baseline, record the
        inventory's changes. Safe after a failed or missing ``prepare()``; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._watcher is not None:
            self._watcher.stop()
        for part in (self._processes, self._writes, self._mounts):
            if part is not None:
                part.stop()
        if self._own_lineage and self._lineage is not None:
            self._lineage.stop()
        if self._inventory is not None:
            self._inventory.end()  # the live watcher stopped, the "after", the session's changes

    def _remember_start(self, path: bytes, st: os.stat_result) -> None:
        """Keep the "before" of configuration files (hash; the text too unless the file is a secret)."""
        if st.st_size > MAX_DIFF_BYTES or path not in self._config_places:
            return
        if self._baseline_files >= BASELINE_MAX_FILES or self._baseline_bytes + st.st_size > BASELINE_MAX_BYTES:
            if not self._baseline_capped:
                self._baseline_capped = True
                self._sink.emit(
                    "capture-error",
                    {
                        "what": "baseline-cap",
                        **path_fields(path),
                        "error": "Too many configuration files to read at the start; from this one on, "
                        "changes have no hash or text from before the session.",
                    },
                )
            return
        self._baseline_files += 1
        self._baseline_bytes += st.st_size
        sha, text = self._read_config(path)
        if sha is not None:
            self._contents.remember_start(path, sha, text)

    def _read_config(self, path: bytes) -> tuple[str | None, str | None]:
        """Hash a configuration file and teach the redactor what it holds; (SHA-256, the text to keep)."""
        name = os.fsdecode(path)
        secret = is_secret_file(name)
        # A secret file is read too, only for the redactor to remember its passwords (never kept or diffed).
        result = hash_file(path, max_bytes=MAX_DIFF_BYTES, keep_bytes=MAX_DIFF_BYTES)
        if result.sha256 is None:
            return None, None
        text = None
        if result.data is not None and b"\0" not in result.data[:4096]:
            if secret:
                secret_text = decode_text(result.data)
                if secret_text is not None:
                    self.redactor.learn(secret_text, name)
            elif path.startswith(self._config_prefixes) or is_text_config(name, result.data[:4096]):
                text = decode_text(result.data)
                if text is not None:
                    self.redactor.learn(text, name)
        return result.sha256, text

    # --- after a gap (agent.capture.resume) -------------------------------------------------------
    def after_gap(self, gap: dict) -> None:
        """The agent was stalled (stopped, hung) from ``gap["from"]`` to ``gap["to"]`` and runs again:
        rescan the watched folders and record what changed as found after the gap. (The lineage, the
        writes and the live inventory read what the kernel queued meanwhile on their own.)"""
        if self._watcher is not None and not self._stopped:
            self._watcher.after_gap(gap)

    def dead_workers(self) -> list[str]:
        """Capture's threads that died while the session runs (each one means lost records)."""
        if self._stopped or self._watcher is None:
            return []
        dead = self._watcher.dead_workers()
        parts = {"process recorder": self._processes, "write recorder": self._writes, "mount watcher": self._mounts,
                 "process lineage": self._lineage, "live inventory": getattr(self._inventory, "live", None)}
        for name, part in parts.items():
            if died(getattr(part, "_thread", None)):  # each keeps its thread there from start() until stop()
                dead.append(name)
        return dead

    def _load_baseline(self, view: JournalView) -> bool:
        """Use the baseline saved before the restart, if the journal vouches for it."""
        assert self.state_dir is not None  # the journal that says "resumed" is there
        try:
            saved = load_baseline(self.state_dir / BASELINE_FILE, (view.baseline or {}).get("sha256"))
        except ValueError as exc:
            self._sink.emit(RecordType.CAPTURE_ERROR, {
                "what": "baseline-unusable", "path": None,
                "error": f"{str(exc).capitalize()}; the folders were indexed again, so changes made before this "
                         "restart are found only where the journal's records show them."})
            if "not the one the journal recorded" in str(exc):
                self._sink.emit(RecordType.ALARM, {
                    "kind": "baseline-changed", "tool": None, "pid": None, "process": None, "connections": [],
                    "detail": "The file baseline kept for this session was changed while the agent was not running."})
            return False
        self._index = saved.index
        for path, sha in saved.start_hashes.items():
            # the redactor of this run learns the configuration's secrets again; the text is kept as the
            # "before" only if the file is as it was at the start (the journal holds its hash, not its text)
            now, text = self._read_config(path)
            self._contents.remember_start(path, sha, text if now == sha else None)
            if path in view.known:  # what the journal recorded since is the latest, not the start
                if view.known[path] is None:
                    self._contents.forget(path)
                else:
                    self._contents.remember(path, view.known[path] or None, None)
        self._baseline_loaded = True
        return True

    def _save_baseline(self) -> None:
        if self.state_dir is None:
            return
        try:
            record = save_baseline(self.state_dir / BASELINE_FILE, self._index, self._contents)
        except OSError as exc:
            self._sink.emit(RecordType.CAPTURE_ERROR, {
                "what": "baseline-not-saved", "path": None,
                "error": f"{error_detail(exc)}; if the agent stops during the session, what changes meanwhile "
                         "can only be compared with a new scan."})
            return
        self._sink.emit(RecordType.BASELINE, {"phase": "saved", **record})

    def _after_restart(self, view: JournalView) -> None:
        gap = {k: v for k, v in (view.gap or {}).items() if k in ("from", "to")}
        for record in processes_since(gap.get("from"), gap, self.redactor):
            self._sink.emit(RecordType.PROCESS, record)
        if self._baseline_loaded and self._watcher is not None:
            self._watcher.after_gap(gap, view.known)


def _session_of(sink) -> str | None:
    """The session id of a session's sink (its journal's), the label of the session's technicians."""
    return getattr(getattr(sink, "journal", None), "session", None)


def _top_roots(paths: Iterable[str | os.PathLike]) -> list[bytes]:
    """Absolute, de-duplicated roots as bytes; a root inside another is watched through it."""
    roots = sorted({os.fsencode(os.path.abspath(os.fspath(p))).rstrip(b"/") or b"/" for p in paths})
    tops: list[bytes] = []
    for root in roots:
        if not any(root == t or root.startswith(t.rstrip(b"/") + b"/") for t in tops):
            tops.append(root)
    return tops
