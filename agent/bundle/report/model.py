"""What a report shows, gathered from the journal in one pass and in bounded memory.

``Collected.see(record)`` sorts each record into what a person reads: the
session's facts, ways back in, configuration changes, the technician's
commands, other file changes by folder, the customer's own programs as
counts, the consent timeline, alarms and gaps. Every list is capped (see
``Limits``); what is left out is counted, never silently dropped, and the
full records stay in ``session.jsonl``.

A journal may have been tampered with, so nothing here trusts a field's type:
``_obj``, ``_str`` and ``_int`` read what is there or nothing.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Limits:
    """How much of each section a report shows (the rest is counted)."""

    ways_back: int = 300
    config_changes: int = 150
    diff_lines: int = 200  # per diff
    diff_chars: int = 24_000  # per diff
    diff_total_chars: int = 400_000  # all diffs together
    commands: int = 600
    command_depth: int = 24
    folders: int = 120
    files_per_folder: int = 25
    programs: int = 60
    system_changes: int = 150
    timeline: int = 200
    alarms: int = 200
    gaps: int = 200
    others: int = 50
    text: int = 400  # characters of one field (a command line, an item, a path)
    note: int = 4_000


LIMITS = Limits()

CONFIG_FOLDERS = ("/etc/", "/usr/local/etc/", "/boot/", "/var/spool/cron/")
FILE_TYPES = ("file", "file-burst")
GAP_TYPES = ("recovery", "overflow", "watch-limit", "capture-error", "gap", "loss", "records-lost")
TIMELINE_TYPES = ("request", "decision", "session-start", "time-warning", "note", "session-end", "seal",
                  "recovery", "ssh-connections")
QUIET_TYPES = ("journal-start", "checkpoint", "inventory")


def _obj(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_str(v)}" for k, v in sorted(value.items()) if v not in (None, "", [], {}))
    return str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def package_of(data: dict) -> str | None:
    """The package a change came with, as ``name version``, when capture said so: ``origin: "package"`` with
    its ``package`` (a file that merely belongs to a package is not explained by it), or, from capture that
    gives no ``origin``, a ``package``/``came_with`` field."""
    if "origin" in data and data.get("origin") != "package":
        return None
    for key in ("package", "came_with", "packages"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and value.get("name"):
            return " ".join(_str(value.get(k)) for k in ("name", "version") if value.get(k))
        if isinstance(value, list) and value:
            return ", ".join(filter(None, (package_of({"package": v}) for v in value))) or None
    return None


@dataclass
class WayBack:
    ts: str
    category: str
    op: str
    item: str
    why: str
    package: str | None
    seq: int


@dataclass
class ConfigChange:
    ts: str
    op: str
    path: str
    dest: str
    diff: str | None  # clipped
    diff_clipped: int  # lines left out
    note: str  # why there is no diff
    by: str
    secret: bool
    seq: int


@dataclass
class Process:
    pid: int | None
    ppid: int | None
    user: str
    command: str
    started: str
    ended: str
    seq: int
    children: list[Process] = field(default_factory=list)


@dataclass
class Folder:
    path: str
    counts: Counter[str] = field(default_factory=Counter)
    files: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # ts, op, name, size, by
    left_out: int = 0


@dataclass
class Event:
    ts: str
    kind: str
    text: str
    seq: int
    level: str = ""  # "", "warn" or "bad"
    data: dict = field(default_factory=dict)


def attribution(data: dict) -> str:
    who = _obj(data.get("attribution"))
    if not who:
        return ""
    exe = posixpath.basename(_str(who.get("exe"))) or "?"
    parts = [p for p in (_str(who.get("user")), f"pid {who['pid']}" if _int(who.get("pid")) is not None else "") if p]
    how = _str(who.get("how"))
    return f"{exe} ({', '.join(parts)})" + (" (a guess)" if how == "guess" else "")


class Collected:
    """Everything a report shows, read from records in order. Memory is bounded by ``Limits``."""

    def __init__(self, limits: Limits = LIMITS) -> None:
        self.limits = limits
        self.records = 0
        self.bad_lines: list[tuple[int, str]] = []
        self.bad_line_count = 0
        self.last_seal_index = -1
        self.session = self.device = self.principal = self.software = ""
        self.mode: str | None = None  # the agent's mode and the account that could read the key (journal-start)
        self.key_account: str | None = None
        self.request: dict = {}
        self.requested = ""
        self.decisions: list[tuple[str, dict]] = []
        self.started = self.ended = self.sealed = ""
        self.start: dict = {}
        self.end: dict = {}
        self.notes: list[tuple[str, str, str]] = []  # ts, author, text
        self.notes_total = 0
        self.ways_back: list[WayBack] = []
        self.ways_back_total: Counter[str] = Counter()  # "unexplained" / "package"
        self.config: list[ConfigChange] = []
        self.config_total = 0
        self.diff_chars = 0
        self.folders: dict[str, Folder] = {}
        self.folders_left_out: Counter[str] = Counter()
        self.other_files_total = 0
        self.processes: dict[tuple[int | None, str], Process] = {}
        self.processes_left_out = 0
        self.technician_total = 0
        self.programs: Counter[str] = Counter()
        self.customer_total = 0
        self.system_changes: list[tuple[str, str, str, str, str, int]] = []  # ts, category, op, item, package, seq
        self.system_total: Counter[str] = Counter()
        self.timeline: list[Event] = []
        self.timeline_total = 0
        self.alarms: list[Event] = []
        self.alarm_total = 0
        self.gaps: list[Event] = []
        self.gap_total = 0
        self.others: Counter[str] = Counter()
        self._seen_pids: set[int] = set()

    # --- reading -------------------------------------------------------------
    def bad_line(self, number: int, why: str) -> None:
        self.bad_line_count += 1
        if len(self.bad_lines) < self.limits.gaps:
            self.bad_lines.append((number, why[: self.limits.text]))

    def see(self, record: dict) -> None:
        # The hot path of every report and review: a few hundred records a session, each read once.
        kind, ts, seq, data = record.get("type"), record.get("ts"), record.get("seq"), record.get("data")
        kind = kind if type(kind) is str else _str(kind)
        ts = ts if type(ts) is str else _str(ts)
        seq = seq if type(seq) is int else 0
        data = data if type(data) is dict else _obj(data)
        self.records += 1
        if not self.session:
            self.session = _str(record.get("session"))
        if kind == "process" and data.get("technician") is not True:  # most records of many sessions: inline
            self._customer(data)
            return
        route = _ROUTES.get(kind) or _route(kind)
        handler = route[0]
        if handler is not None:
            handler(self, ts, seq, data)
        elif data.get("way_back_in") is True:
            self._way_back(ts, seq, data, kind)
        elif kind not in QUIET_TYPES:
            self.others[kind] += 1
        if route[1]:
            self._timeline(kind, ts, seq, data)
        if route[2]:
            self._gap(kind, ts, seq, data)

    @property
    def unsealed(self) -> int:
        """Records after the last seal (or all, with no seal)."""
        return self.records - 1 - self.last_seal_index

    # --- handlers ------------------------------------------------------------
    def _journal_start(self, ts: str, seq: int, data: dict) -> None:
        self.device = self.device or _str(data.get("device"))
        self.principal = self.principal or _str(data.get("principal"))
        self.software = self.software or _str(data.get("software"))
        self.mode = self.mode or _str(data.get("mode")) or None
        self.key_account = self.key_account or _str(data.get("key_account")) or None

    def _request(self, ts: str, seq: int, data: dict) -> None:
        self.request, self.requested = data, ts

    def _decision(self, ts: str, seq: int, data: dict) -> None:
        if len(self.decisions) < self.limits.timeline:
            self.decisions.append((ts, data))

    def _session_start(self, ts: str, seq: int, data: dict) -> None:
        self.started, self.start = self.started or ts, data

    def _session_end(self, ts: str, seq: int, data: dict) -> None:
        self.ended, self.end = ts, data

    def _seal(self, ts: str, seq: int, data: dict) -> None:
        self.sealed = ts
        self.last_seal_index = self.records - 1

    def _note(self, ts: str, seq: int, data: dict) -> None:
        self.notes_total += 1
        if len(self.notes) < self.limits.timeline:
            self.notes.append((ts, _str(data.get("author")), _str(data.get("text"))[: self.limits.note]))

    def _inventory_change(self, ts: str, seq: int, data: dict) -> None:
        if data.get("way_back_in") is True:
            self._way_back(ts, seq, data, "inventory-change")
            return
        category = _str(data.get("category")) or "other"
        self.system_total[category] += 1
        if len(self.system_changes) < self.limits.system_changes:
            self.system_changes.append((ts, category, _str(data.get("op")), _str(data.get("item")),
                                        package_of(data) or "", seq))

    def _way_back(self, ts: str, seq: int, data: dict, kind: str) -> None:
        package = package_of(data)
        self.ways_back_total["package" if package else "unexplained"] += 1
        if len(self.ways_back) < self.limits.ways_back:
            category = _str(data.get("category")) or ("file" if kind == "file" else kind)
            item = _str(data.get("item")) or _str(data.get("path"))
            why = _str(data.get("why"))
            if not package and data.get("origin_detail"):
                why = f"{why}; {_str(data.get('origin_detail'))}" if why else _str(data.get("origin_detail"))
            self.ways_back.append(WayBack(ts, category, _str(data.get("op")), item, why, package, seq))

    def _file(self, ts: str, seq: int, data: dict) -> None:
        if data.get("way_back_in") is True:
            self._way_back(ts, seq, data, "file")
        path = _str(data.get("path"))
        if self._is_config(path, data):
            self._config(ts, seq, data, path)
        else:
            self._other_file(ts, data, path)

    @staticmethod
    def _is_config(path: str, data: dict) -> bool:
        return isinstance(data.get("diff"), str) or data.get("secret") is True or path.startswith(CONFIG_FOLDERS)

    def _config(self, ts: str, seq: int, data: dict, path: str) -> None:
        self.config_total += 1
        if len(self.config) >= self.limits.config_changes:
            return
        diff, clipped = data.get("diff"), 0
        if isinstance(diff, str):
            diff, clipped = self._clip_diff(diff)
        else:
            diff = None
        note = ("a secret file: only its hashes are recorded" if data.get("secret") is True
                else _str(data.get("diff_omitted") or data.get("error")))
        self.config.append(ConfigChange(ts, _str(data.get("op")), path, _str(data.get("dest")), diff, clipped,
                                        note, attribution(data), data.get("secret") is True, seq))

    def _clip_diff(self, diff: str) -> tuple[str | None, int]:
        budget = min(self.limits.diff_chars, self.limits.diff_total_chars - self.diff_chars)
        lines = diff.splitlines()
        kept: list[str] = []
        size = 0
        for line in lines[: self.limits.diff_lines]:
            line = line[: self.limits.text * 2]
            if size + len(line) + 1 > budget:
                break
            kept.append(line)
            size += len(line) + 1
        self.diff_chars += size
        if not kept and lines:
            return None, len(lines)
        return "\n".join(kept), len(lines) - len(kept)

    def _other_file(self, ts: str, data: dict, path: str) -> None:
        op = _str(data.get("op")) or "changed"
        dest = _str(data.get("dest"))
        self.other_files_total += 1
        folder = self._folder(posixpath.dirname(path) or path or "?", 1, op)
        if folder is None:
            return
        if len(folder.files) < self.limits.files_per_folder:
            name = posixpath.basename(path) or path
            if dest:
                name += f" → {dest}"
            size = _int(data.get("size"))
            folder.files.append((ts, op, name, "" if size is None else f"{size:,}", attribution(data)))
        else:
            folder.left_out += 1

    def _folder(self, path: str, count: int, op: str) -> Folder | None:
        folder = self.folders.get(path)
        if folder is None:
            if len(self.folders) >= self.limits.folders:
                self.folders_left_out[op] += count
                return None
            folder = self.folders[path] = Folder(path[: self.limits.text * 2])
        folder.counts[op] += count
        return folder

    def _file_meta(self, ts: str, seq: int, data: dict) -> None:
        """A metadata change (mode, owner, setuid…): a way back in when capture says so, and a file change."""
        if data.get("way_back_in") is True:
            self._way_back(ts, seq, {**data, "why": data.get("why") or f"metadata: {_str(data.get('changed'))}"},
                           "file")
        changed = _str(data.get("changed")) or "metadata"
        self._other_file(ts, {**data, "op": f"{changed} changed"}, _str(data.get("path")))

    def _mount(self, ts: str, seq: int, data: dict) -> None:
        point = _str(data.get("mountpoint")) or "?"
        what = _str(data.get("fstype"))
        self._other_file(ts, {"op": _str(data.get("op")) or "mount", "path": point.rstrip("/") + "/",
                              "dest": what}, point.rstrip("/") + "/")

    def _file_burst(self, ts: str, seq: int, data: dict) -> None:
        counts = _obj(data.get("counts"))
        root = _str(data.get("root")) or "?"
        for op, n in counts.items():
            n = _int(n)
            if n:
                self.other_files_total += n
                self._folder(root, n, str(op))

    def _process(self, ts: str, seq: int, data: dict) -> None:
        if data.get("technician") is not True:
            self._customer(data)
            return
        pid = _int(data.get("pid"))
        key = (pid, _str(data.get("started")))
        node = self.processes.get(key)
        if node is None:
            node = next((p for p in self._by_pid(pid)), None) if data.get("op") == "ended" else None
        if node is None:
            self.technician_total += 1
            if len(self.processes) >= self.limits.commands:
                self.processes_left_out += 1
                return
            command = _str(data.get("cmdline")) or _str(data.get("exe"))
            node = self.processes[key] = Process(pid, _int(data.get("ppid")), _str(data.get("user")),
                                                 command[: self.limits.text], _str(data.get("started")) or ts,
                                                 "", seq)
        if data.get("op") == "ended":
            node.ended = _str(data.get("ended")) or ts

    def _by_pid(self, pid: int | None) -> Iterator[Process]:
        return (p for p in reversed(list(self.processes.values())) if p.pid == pid and not p.ended)

    def _customer(self, data: dict) -> None:
        pid = data.get("pid")
        if type(pid) is int:
            if pid in self._seen_pids and data.get("op") == "ended":
                return
            if len(self._seen_pids) < 200_000:
                self._seen_pids.add(pid)
        exe = data.get("exe")
        name = (exe if type(exe) is str else _str(exe)).rpartition("/")[2] or _str(data.get("name")) or "unknown"
        self._program(name[:80], 1)

    def _program(self, name: str, count: int) -> None:
        self.customer_total += count
        if name in self.programs or len(self.programs) < 5_000:
            self.programs[name] += count
        else:
            self.programs["(other programs)"] += count

    def _process_summary(self, ts: str, seq: int, data: dict) -> None:
        for name, count in _obj(data.get("programs") or data.get("counts")).items():
            if _int(count):
                self._program(str(name)[:80], count)
        others = _int(data.get("other_programs"))
        if others:
            self._program("(other programs)", others)

    def _alarm(self, ts: str, seq: int, data: dict) -> None:
        self.alarm_total += 1
        if len(self.alarms) < self.limits.alarms:
            tool = _str(data.get("tool")) or "alarm"
            process = _str(data.get("process"))
            if tool == "mount":
                process = f"a mount at {_str(data.get('mountpoint')) or '(gone before it could be read)'}"
            elif tool == "ledger":
                process = f"the device ledger: {_str(data.get('kind'))}"
            pid = _int(data.get("pid"))
            conns = data.get("connections")
            conn_text = (f", {len(conns)} connection{'s' if len(conns) != 1 else ''}" if isinstance(conns, list)
                         else f", {conns} connections" if _int(conns) else "")
            text = f"{tool}: {process}" + (f" (pid {pid})" if pid is not None else "") + conn_text
            detail = _str(data.get("detail"))
            self.alarms.append(Event(ts, "alarm", text + (f". {detail}" if detail else ""), seq, "bad"))

    def _timeline(self, kind: str, ts: str, seq: int, data: dict) -> None:
        self.timeline_total += 1
        if len(self.timeline) < self.limits.timeline:
            self.timeline.append(Event(ts, kind, "", seq, data=data))

    def _gap(self, kind: str, ts: str, seq: int, data: dict) -> None:
        if kind == "recovery" and not data.get("set_aside") and not _gap_seconds(data):
            return  # a restart with nothing set aside and no gap: shown in the timeline only
        self.gap_total += 1
        if len(self.gaps) < self.limits.gaps:
            self.gaps.append(Event(ts, kind, _gap_text(kind, data)[: self.limits.text * 2], seq, "warn"))


def _gap_seconds(data: dict) -> int | None:
    return _int(data.get("gap_s"))


def _gap_text(kind: str, data: dict) -> str:
    if kind == "recovery":
        parts = ["The agent restarted"]
        gap = _gap_seconds(data)
        if gap is not None:
            parts.append(f"after {gap} s without recording")
        aside = _obj(data.get("set_aside"))
        if aside:
            parts.append(f"and set aside {aside.get('bytes', '?')} bytes of a torn record ({_str(aside.get('file'))})")
        if data.get("resumed") is False:
            parts.append("; the session did not resume")
        return " ".join(parts) + "."
    if kind in ("overflow", "watch-limit"):
        rescanned = " (rescanned)" if data.get("rescanned") else ""
        return f"{_str(data.get('root'))}: {_str(data.get('detail'))}{rescanned}"
    if kind == "capture-error":
        where = _str(data.get("path"))
        return f"{_str(data.get('what'))}" + (f" ({where})" if where else "") + f": {_str(data.get('error'))}"
    return _str(data)


Route = tuple[Callable[["Collected", str, int, dict], None] | None, bool, bool]


def _route(kind: str) -> Route:
    """What to do with a record of type ``kind``: its handler, whether it is on the timeline, whether a gap."""
    return _HANDLERS.get(kind), kind in TIMELINE_TYPES, kind in GAP_TYPES or kind.endswith(("-error", "-lost"))


_HANDLERS = {
    "journal-start": Collected._journal_start,
    "request": Collected._request,
    "decision": Collected._decision,
    "session-start": Collected._session_start,
    "session-end": Collected._session_end,
    "seal": Collected._seal,
    "note": Collected._note,
    "inventory-change": Collected._inventory_change,
    "file": Collected._file,
    "file-burst": Collected._file_burst,
    "file-meta": Collected._file_meta,
    "mount": Collected._mount,
    "process": Collected._process,
    "process-summary": Collected._process_summary,
    "alarm": Collected._alarm,
}
#: The routes of the known types, worked out once (another type's is worked out at each record).
_ROUTES: dict[str, Route] = {kind: _route(kind) for kind in (*_HANDLERS, *TIMELINE_TYPES, *GAP_TYPES)}
