"""Sessions made in-process, signed by a real device key, at any time: for the report, review and bench.

``SyntheticJournal`` writes the exact lines ``agent.journal.Journal`` writes
(canonical JSON, the hash chain, checkpoints and a seal signed with the
device key), but with timestamps chosen by the caller, so a 71-second
session or a year of sessions is made in milliseconds. ``realistic_session``
returns the records of a short support session as capture writes them today.
``write_bundle`` writes a bundle zip (or folder) from journal bytes, signed as
``export_bundle`` signs one.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from agent.bundle.layout import (
    JOURNAL,
    REPORT,
    SIG,
    SIGNERS,
    SUMS,
    VERIFY,
    sums_text,
    verify_text,
)
from agent.bundle.report import BundleCopy, write_report
from agent.journal import checkpoint_message

START = datetime(2026, 11, 22, 9, 2, 13, 250000, tzinfo=UTC)


def ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SyntheticJournal:
    """A journal written in memory with chosen times; ``bytes()`` is the file."""

    def __init__(self, session: str, key, start: datetime = START) -> None:
        self.session, self.key, self.now = session, key, start
        self.lines: list[bytes] = []
        self.head = "0" * 64
        self.add("journal-start", {"device": key.fingerprint, "principal": key.principal,
                                   "software": "chaperone 0.1.0", "mode": "system", "key_account": "root"})
        self.checkpoint()

    def at(self, seconds: float) -> SyntheticJournal:
        self.now = self.now + timedelta(seconds=seconds)
        return self

    def _write(self, type_: str, data: dict) -> None:
        record = {"data": data, "prev": self.head, "seq": len(self.lines), "session": self.session,
                  "ts": ts(self.now), "type": type_, "v": 1}
        # orjson with sorted keys writes agent.canonical's bytes (the journal's writer relies on it too), faster
        line = orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"
        self.lines.append(line)
        self.head = hashlib.sha256(line).hexdigest()

    def add(self, type_: str, data: dict) -> None:
        self._write(type_, data)

    def _signed(self, type_: str, extra: dict) -> None:
        data = {**extra, "count": len(self.lines), "head": self.head, "key": self.key.fingerprint}
        record = {"data": data, "seq": len(self.lines), "session": self.session, "ts": ts(self.now), "type": type_}
        data["sig"] = self.key.sign(checkpoint_message(record))
        self._write(type_, data)

    def checkpoint(self) -> None:
        self._signed("checkpoint", {})

    def seal(self, reason: str = "customer") -> None:
        self._signed("seal", {"reason": reason})

    def bytes(self) -> bytes:
        return b"".join(self.lines)


REQUEST = {
    "technician": "Ada Lovelace", "email": "ada@acme.example", "org": "Acme IT", "ticket": "INC-20431",
    "reason": "Printer driver reinstall", "duration_s": 2700, "capabilities": ["files", "shell"],
    "watch": ["/home/alice", "/etc"], "source": "ssh", "flags": [],
    "requested_by": {"uid": 0, "user": "root"},
    "verification": {"verified": True, "principal": "ada@acme.example", "fingerprint": "SHA256:" + "A" * 43,
                     "detail": "trusted by trusted_technicians line 1"},
}
_CUSTOMER_PROGRAMS = ["firefox", "gnome-shell", "Xwayland", "pipewire", "wireplumber", "dbus-daemon", "gvfsd",
                      "tracker-miner-fs-3", "evolution-data-server", "gsd-color", "gsd-power", "ibus-daemon",
                      "snapd", "update-notifier", "python3", "bash", "sh", "sleep", "cat", "grep", "systemd",
                      "kworker/u8:2", "nautilus", "gnome-terminal-server", "thunderbird"]
_DIFF = """\
--- /etc/cups/printers.conf
+++ /etc/cups/printers.conf
@@ -1,9 +1,9 @@
 # Printer configuration file for CUPS v2.4.2
 # Written by cupsd
 <Printer Office>
-PrinterId 3
+PrinterId 4
 UUID urn:uuid:0b3d9a0c-5d38-3a6b-5c5a-12a3f7fb2a10
 Info Office printer
-DeviceURI ipp://10.0.0.41/ipp/print
+DeviceURI ipp://10.0.0.42/ipp/print
 State Idle
"""


def realistic_session(journal: SyntheticJournal, *, customer_processes: int = 248, seed: int = 1,
                      technician: str = "Ada Lovelace", ticket: str = "INC-20431", length_s: int = 71) -> None:
    """A short support session as today's capture records it: the whole machine's processes, a few
    configuration diffs, some other files, a new way back in, a note; ``length_s`` seconds long."""
    rnd = random.Random(seed)
    step = length_s / (customer_processes + 40)
    journal.at(1).add("request", {**REQUEST, "technician": technician, "ticket": ticket})
    journal.checkpoint()
    journal.at(6).add("decision", {"decision": "allow", "how": "click", "by": {"uid": 1000, "user": "alice"},
                                   "granted": {"capabilities": ["files", "shell"], "watch": ["/home/alice", "/etc"],
                                               "until": ts(journal.now + timedelta(minutes=45))}, "reason": None})
    journal.checkpoint()
    journal.at(1).add("session-start", {"until": ts(journal.now + timedelta(minutes=45)),
                                        "capabilities": ["files", "shell"], "watch": ["/home/alice", "/etc"]})
    journal.add("inventory", {"phase": "before", "category": "packages", "items": 1893, "sha256": "a" * 64})
    pid = 4100
    sshd = pid
    for i, (exe, argv, parent) in enumerate([
        ("/usr/sbin/sshd", ["sshd: ada [priv]"], 811), ("/usr/bin/bash", ["-bash"], sshd),
        ("/usr/bin/sudo", ["sudo", "-i"], sshd + 1), ("/usr/bin/bash", ["-bash"], sshd + 2),
        ("/usr/bin/systemctl", ["systemctl", "stop", "cups"], sshd + 3),
        ("/usr/bin/vim", ["vim", "/etc/cups/printers.conf"], sshd + 3),
        ("/usr/bin/apt-get", ["apt-get", "install", "-y", "printer-driver-gutenprint"], sshd + 3),
        ("/usr/bin/dpkg", ["/usr/bin/dpkg", "--status-fd", "37", "--configure", "--pending"], sshd + 6),
        ("/usr/bin/systemctl", ["systemctl", "start", "cups"], sshd + 3),
        ("/usr/bin/lpstat", ["lpstat", "-p"], sshd + 3),
        ("/usr/bin/lp", ["lp", "-d", "Office", "/usr/share/cups/data/testprint"], sshd + 3),
        ("/usr/bin/crontab", ["crontab", "-l"], sshd + 3),
    ]):
        journal.at(step).add("process", {"op": "started", "pid": sshd + i, "ppid": parent,
                                         "user": "ada" if i < 2 else "root", "exe": exe, "cmdline": argv,
                                         "started": ts(journal.now), "ended": None, "technician": True,
                                         "how": "sampled"})
    for n in range(customer_processes):
        name = rnd.choice(_CUSTOMER_PROGRAMS)
        journal.at(step).add("process", {
            "op": "started" if n % 3 else "ended", "pid": 20000 + n, "ppid": 1, "user": "alice",
            "exe": f"/usr/bin/{name}", "cmdline": [name, "--type=renderer", f"--field-trial-handle={rnd.random()}",
                                                   "--enable-features=" + ",".join(["A" * 12] * 8)],
            "started": ts(journal.now), "ended": None, "technician": False, "how": "sampled"})
        if n % 50 == 0:
            journal.checkpoint()
    journal.at(2).add("file", {"op": "modified", "path": "/etc/cups/printers.conf", "kind": "file", "size": 412,
                               "sha256_before": "1" * 64, "sha256_after": "2" * 64, "diff": _DIFF, "secret": False,
                               "attribution": {"pid": sshd + 5, "exe": "/usr/bin/vim", "user": "root",
                                               "how": "fanotify"}})
    journal.add("file", {"op": "modified", "path": "/etc/cups/cupsd.conf", "kind": "file", "size": 6402,
                         "sha256_before": "3" * 64, "sha256_after": "4" * 64,
                         "diff": "--- a\n+++ b\n@@ -12 +12 @@\n-LogLevel warn\n+LogLevel debug\n", "secret": False})
    journal.add("file", {"op": "modified", "path": "/etc/shadow", "kind": "file", "size": 1302,
                         "sha256_before": "5" * 64, "sha256_after": "6" * 64, "secret": True,
                         "diff_omitted": "secret file: hashes only"})
    for n in range(18):
        folder = ["/usr/share/cups/model/gutenprint", "/var/cache/cups", "/home/alice/.cache/thumbnails"][n % 3]
        journal.add("file", {"op": "created" if n % 4 else "modified", "path": f"{folder}/file-{n}.ppd.gz",
                             "kind": "file", "size": 1000 + n, "sha256_after": f"{n:064x}",
                             "diff_omitted": "not a text configuration file"})
    journal.add("file-burst", {"root": "/var/lib/dpkg/info", "counts": {"created": 212, "modified": 9,
                                                                      "deleted": 0, "moved": 3},
                               "paths": 224, "names_sha256": "7" * 64})
    journal.at(3).add("inventory-change", {"category": "authorized_keys", "op": "added",
                                           "item": "root: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH ada@laptop",
                                           "detail": {"file": "/root/.ssh/authorized_keys"}, "way_back_in": True,
                                           "why": "a new SSH key lets its owner log in as root"})
    journal.add("inventory-change", {"category": "scheduled", "op": "added", "item": "/etc/cron.d/gutenprint",
                                     "detail": {"line": "0 3 * * * root /usr/sbin/cups-genppdupdate"},
                                     "way_back_in": True, "why": "a scheduled job runs as root",
                                     "origin": "package", "origin_detail": "came with package "
                                                                            "printer-driver-gutenprint 5.3.4-1",
                                     "package": {"manager": "dpkg", "name": "printer-driver-gutenprint",
                                                 "version": "5.3.4-1", "path": "/etc/cron.d/gutenprint",
                                                 "shipped": True, "in_session": True}})
    journal.add("inventory-change", {"category": "packages", "op": "added",
                                     "item": "printer-driver-gutenprint 5.3.4-1", "detail": {}, "way_back_in": False,
                                     "why": None})
    journal.add("note", {"author": technician, "text": "Driver reinstalled; test page printed.", "uid": 0})
    journal.checkpoint()
    journal.at(length_s - journal_elapsed(journal)).add("session-end", {"reason": "technician", "by": "ada"})
    journal.add("inventory", {"phase": "after", "category": "packages", "items": 1894, "sha256": "b" * 64})
    journal.seal("technician")


#: The journal writer's cadence (``agent.journal.writer``): a checkpoint at most every ``CHECKPOINT_S`` while
#: records come (at the writer's next tick, ``TICK_S``, after the first), a heartbeat checkpoint after
#: ``HEARTBEAT_S`` without a signed line; the customer's programs are counted once a minute.
CHECKPOINT_S, TICK_S, HEARTBEAT_S, SUMMARY_S = 5.0, 0.2, 30.0, 60.0


def agent_session(journal: SyntheticJournal, *, customer_processes: int = 248, seed: int = 1,
                  technician: str = "Ada Lovelace", ticket: str = "INC-20431", length_s: float = 71) -> None:
    """A support session over SSH as the agent writes it today, ``length_s`` seconds long.

    What ``realistic_session`` records, with two differences that make it what a bundle really holds: the
    customer's own programs are counted by name in a ``process-summary`` record each minute (capture knows
    the technician's login, so it records only their programs in full), and checkpoints come at the
    journal writer's cadence: one within a few seconds of records, one after every 30 s of quiet. A
    session of an hour has about 120 of them, each signed; that is most of what verifying it costs."""
    rnd = random.Random(seed)
    events: list[tuple[float, str, dict]] = []  # (seconds after the start, type, data)
    started = 7.0
    events.append((1.0, "request", {**REQUEST, "technician": technician, "ticket": ticket}))
    events.append((6.0, "decision", {"decision": "allow", "how": "click", "by": {"uid": 1000, "user": "alice"},
                                     "granted": {"capabilities": ["files", "shell"], "watch": ["/home/alice", "/etc"],
                                                 "until": ts(journal.now + timedelta(seconds=6 + 2700))},
                                     "reason": None}))
    events.append((started, "session-start", {"until": ts(journal.now + timedelta(seconds=started + 2700)),
                                              "capabilities": ["files", "shell"], "watch": ["/home/alice", "/etc"]}))
    events.append((started, "inventory", {"phase": "before", "category": "packages", "items": 1893,
                                          "sha256": "a" * 64}))
    work = max(10.0, length_s - started - 5)  # the technician's work, spread over the session
    sshd = 4100
    for i, (exe, argv, parent) in enumerate(_TECHNICIAN_COMMANDS):
        at = started + 1 + work * i / (len(_TECHNICIAN_COMMANDS) + 6)
        events.append((at, "process", {"op": "started", "pid": sshd + i, "ppid": parent if parent else sshd + i - 1,
                                       "user": "ada" if i < 2 else "root", "exe": exe, "cmdline": argv,
                                       "started": ts(journal.now + timedelta(seconds=at)), "ended": None,
                                       "technician": True, "how": "proc-connector",
                                       "lineage": {"label": "ssh", "via": "login", "chain": []}}))
    changes = started + 1 + work * 0.7
    events.append((changes, "file", {"op": "modified", "path": "/etc/cups/printers.conf", "kind": "file",
                                     "size": 412, "sha256_before": "1" * 64, "sha256_after": "2" * 64, "diff": _DIFF,
                                     "secret": False, "attribution": {"pid": sshd + 5, "exe": "/usr/bin/vim",
                                                                      "user": "root", "how": "fanotify"}}))
    events.append((changes, "file", {"op": "modified", "path": "/etc/cups/cupsd.conf", "kind": "file", "size": 6402,
                                     "sha256_before": "3" * 64, "sha256_after": "4" * 64, "secret": False,
                                     "diff": "--- a\n+++ b\n@@ -12 +12 @@\n-LogLevel warn\n+LogLevel debug\n"}))
    events.append((changes, "file", {"op": "modified", "path": "/etc/shadow", "kind": "file", "size": 1302,
                                     "sha256_before": "5" * 64, "sha256_after": "6" * 64, "secret": True,
                                     "diff_omitted": "secret file: hashes only"}))
    for n in range(18):
        folder = ["/usr/share/cups/model/gutenprint", "/var/cache/cups", "/home/alice/.cache/thumbnails"][n % 3]
        events.append((changes + 1, "file", {"op": "created" if n % 4 else "modified", "kind": "file",
                                             "path": f"{folder}/file-{n}.ppd.gz", "size": 1000 + n,
                                             "sha256_after": f"{n:064x}",
                                             "diff_omitted": "not a text configuration file"}))
    events.append((changes + 2, "file-burst", {"root": "/var/lib/dpkg/info", "paths": 224, "names_sha256": "7" * 64,
                                               "counts": {"created": 212, "modified": 9, "deleted": 0, "moved": 3}}))
    events.append((changes + 3, "inventory-change", {
        "category": "authorized_keys", "op": "added", "item": "root: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH ada@laptop",
        "detail": {"file": "/root/.ssh/authorized_keys"}, "way_back_in": True,
        "why": "a new SSH key lets its owner log in as root"}))
    events.append((changes + 3, "inventory-change", {
        "category": "scheduled", "op": "added", "item": "/etc/cron.d/gutenprint",
        "detail": {"line": "0 3 * * * root /usr/sbin/cups-genppdupdate"}, "way_back_in": True,
        "why": "a scheduled job runs as root", "origin": "package",
        "origin_detail": "came with package printer-driver-gutenprint 5.3.4-1",
        "package": {"manager": "dpkg", "name": "printer-driver-gutenprint", "version": "5.3.4-1",
                    "path": "/etc/cron.d/gutenprint", "shipped": True, "in_session": True}}))
    events.append((started + work, "note", {"author": technician, "text": "Driver reinstalled; test page printed.",
                                            "uid": 0}))
    # the customer's programs, counted by name once a minute (and at the end)
    minutes = max(1, int((length_s - started) // SUMMARY_S) + 1)
    counts: list[dict[str, int]] = [{} for _ in range(minutes)]
    for _ in range(customer_processes):
        bucket = counts[rnd.randrange(minutes)]
        name = rnd.choice(_PROGRAM_NAMES)
        bucket[name] = bucket.get(name, 0) + 1
    for m, programs in enumerate(counts):
        until = min(started + (m + 1) * SUMMARY_S, length_s)
        if programs:
            events.append((until, "process-summary", {
                "since": ts(journal.now + timedelta(seconds=started + m * SUMMARY_S)),
                "until": ts(journal.now + timedelta(seconds=until)), "programs": dict(sorted(programs.items())),
                "execs": sum(programs.values()), "other_programs": 0, "how": "proc-connector",
                "detail": "The customer's own programs, counted by name only (no arguments, no paths)."}))
    end = max(length_s, started + work + 1)
    events.append((end, "session-end", {"reason": "technician", "by": "ada"}))
    events.append((end, "inventory", {"phase": "after", "category": "packages", "items": 1894, "sha256": "b" * 64}))
    _replay(journal, sorted(events, key=lambda e: e[0]), signed_at=("request", "decision", "session-start"))
    journal.seal("technician")


#: The customer's programs as capture names them (an executable's base name: a kernel thread execs nothing).
_PROGRAM_NAMES = [name for name in _CUSTOMER_PROGRAMS if "/" not in name]
_TECHNICIAN_COMMANDS = [
    ("/usr/sbin/sshd", ["sshd: ada [priv]"], 811), ("/usr/bin/bash", ["-bash"], 0),
    ("/usr/bin/sudo", ["sudo", "-i"], 0), ("/usr/bin/bash", ["-bash"], 0),
    ("/usr/bin/systemctl", ["systemctl", "stop", "cups"], 4103),
    ("/usr/bin/vim", ["vim", "/etc/cups/printers.conf"], 4103),
    ("/usr/bin/apt-get", ["apt-get", "install", "-y", "printer-driver-gutenprint"], 4103),
    ("/usr/bin/dpkg", ["/usr/bin/dpkg", "--status-fd", "37", "--configure", "--pending"], 4106),
    ("/usr/bin/systemctl", ["systemctl", "start", "cups"], 4103),
    ("/usr/bin/lpstat", ["lpstat", "-p"], 4103),
    ("/usr/bin/lp", ["lp", "-d", "Office", "/usr/share/cups/data/testprint"], 4103),
    ("/usr/bin/crontab", ["crontab", "-l"], 4103),
]


def _replay(journal: SyntheticJournal, events: list[tuple[float, str, dict]], signed_at: tuple[str, ...]) -> None:
    """Write ``events`` (seconds after the journal's current time) with checkpoints where the journal's
    writer makes them: right after the records in ``signed_at`` (the agent signs consent at once), at its
    next tick after records came and at most every ``CHECKPOINT_S``, and after ``HEARTBEAT_S`` of quiet."""
    origin = journal.now
    now = 0.0
    last_signed = last_interval = -CHECKPOINT_S
    pending: float | None = None  # when the oldest record not yet under a checkpoint came

    def sign_at(when: float) -> None:
        nonlocal now, last_signed, pending
        journal.now = origin + timedelta(seconds=when)
        journal.checkpoint()
        now, last_signed, pending = when, when, None

    for when, type_, data in events:
        while True:  # what the writer's thread signs before this record comes
            due = (max(pending + TICK_S, last_interval + CHECKPOINT_S) if pending is not None
                   else last_signed + HEARTBEAT_S)
            if due > when:
                break
            if pending is not None:
                last_interval = due
            sign_at(due)
        now = max(now, when)
        journal.now = origin + timedelta(seconds=now)
        journal.add(type_, data)
        pending = now if pending is None else pending
        if type_ in signed_at:
            sign_at(now)
    journal.now = origin + timedelta(seconds=now)


def journal_elapsed(journal: SyntheticJournal) -> float:
    """Seconds since the session's start record (or 0)."""
    for line in journal.lines:
        if b'"type":"session-start"' in line:
            start = datetime.strptime(line.split(b'"ts":"')[1][:27].decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
            return (journal.now.replace(tzinfo=None) - start).total_seconds()
    return 0.0


def write_bundle(out: Path, key, journal: bytes, *, as_folder: bool = False, report: bool = True) -> Path:
    """A bundle of ``journal`` signed by ``key``, as ``export_bundle`` writes one."""
    session = journal.split(b'"session":"', 1)[1].split(b'"', 1)[0].decode()
    files: dict[str, bytes] = {JOURNAL: journal}
    text = io.StringIO()
    if report:
        write_report(text, lambda: iter(journal.splitlines(keepends=True)),
                     copy=BundleCopy(out.name, key.fingerprint))
    files[REPORT] = text.getvalue().encode()
    files[VERIFY] = verify_text(session, key.principal, key.fingerprint, out.name).encode()
    files[SIGNERS] = (key.allowed_signers_line() + "\n").encode()
    sums = sums_text({name: hashlib.sha256(data).hexdigest() for name, data in files.items()})
    files[SUMS] = sums
    files[SIG] = key.sign(sums).encode()
    if as_folder:
        out.mkdir(parents=True)
        for name, data in files.items():
            (out / name).write_bytes(data)
        return out
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out
