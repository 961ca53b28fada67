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
