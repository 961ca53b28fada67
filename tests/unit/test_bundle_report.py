"""The report survives any journal content, stays bounded for big sessions, and shows local times."""

from __future__ import annotations

import io
import re
from datetime import UTC
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bundle import BundleCopy, ReportCheck, render_report
from agent.bundle.report import LIMITS, Limits, write_report
from agent.canonical import canonical_bytes
from tests.samples import SyntheticJournal, realistic_session

TYPES = ["journal-start", "request", "decision", "session-start", "session-end", "seal", "recovery", "file",
         "file-burst", "overflow", "process", "inventory-change", "alarm", "note", "capture-error", "odd-type",
         "process-summary", "time-warning", "ssh-connections"]
KEYS = ["by", "granted", "set_aside", "verification", "flags", "cmdline", "path", "dest", "diff", "attribution",
        "way_back_in", "technician", "email", "reason", "capabilities", "watch", "sha256_after", "text", "pid",
        "ppid", "op", "package", "counts", "programs", "gap_s", "connections", "remaining_s", "secret", "started"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=6,
)


def record(seq: int, type_: str, data: dict, ts: str = "2026-11-22T03:04:05.000000Z") -> bytes:
    return canonical_bytes({"v": 1, "seq": seq, "ts": ts, "session": "s",
                            "type": type_, "data": data, "prev": "0" * 64}) + b"\n"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TYPES), st.dictionaries(st.sampled_from(KEYS), values, max_size=6)),
                max_size=8),
       st.lists(st.binary(max_size=30), max_size=2))
def test_any_content_renders_without_error_and_escaped(records, junk):
    lines = [record(i, t, d) for i, (t, d) in enumerate(records)] + junk
    html = render_report(lines, check=ReportCheck(False, "<b>x</b>"))
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")
    assert not re.search(r"<(script|img|iframe|object|link|embed|form)", html)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_sections_are_capped_and_say_how_much_they_left_out():
    notes = [record(i, "note", {"author": "t", "text": f"n{i}"}) for i in range(LIMITS.timeline + 7)]
    files = [record(i, "file", {"op": "created", "path": f"/srv/d{i % 500}/f{i}", "kind": "file"})
             for i in range(20_000)]
    calls = []

    def read_lines():
        calls.append(1)
        return iter(notes + files)

    out = io.StringIO()
    write_report(out, read_lines)
    html = out.getvalue()
    assert len(calls) == 1  # streamed once, never held whole
    timeline = html.split("id=timeline>")[1].split("<h2")[0]
    assert timeline.count("<tr>") == 1 + LIMITS.timeline
    assert "7 more events not shown here" in timeline
    files_section = html.split("id=files>")[1].split("<h2")[0]
    assert "Other file changes <span class=n>(20,000)</span>" in html
    assert files_section.count("<details>") == LIMITS.folders
    assert f"{20_000 - LIMITS.folders * 40:,} more changes in other folders" in files_section
    assert len(html) < 400_000


def test_diffs_are_clipped_per_diff_and_in_total():
    limits = Limits(diff_lines=5, diff_total_chars=300)
    diff = "".join(f"+line {i}\n" for i in range(50))
    lines = [record(i, "file", {"op": "modified", "path": f"/etc/f{i}", "diff": diff}) for i in range(10)]
    html = render_report(lines, limits=limits)
    assert html.count("+line 4") == 7 and "+line 5" not in html  # 7 diffs of 40 characters fit in 300
    assert html.count("45 more lines of this diff in session.jsonl") >= 1
    assert "left out: the report&#x27;s size limit was reached" in html


def test_times_are_local_with_their_zone_and_to_the_second(device_key):
    journal = SyntheticJournal("s-tz", device_key)
    realistic_session(journal)
    lines = journal.bytes().splitlines(keepends=True)
    paris = render_report(lines, tz=ZoneInfo("Europe/Paris"))
    utc = render_report(lines, tz=UTC)
    assert "Times are in CET (UTC+01:00)" in paris and "Sun 22 Nov 2026, 10:02:21 – 10:03:32 CET" in paris
    assert "Times are in UTC" in utc and "09:02:21 – 09:03:32 UTC" in utc
    assert "(1 min 11 s, ended by the technician)" in paris
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", paris) and "T09:02" not in paris


def test_ways_back_in_unexplained_first_then_those_packages_brought(device_key):
    journal = SyntheticJournal("s-wb", device_key)
    realistic_session(journal)
    html = render_report(journal.bytes().splitlines(keepends=True))
    section = html.split("id=back>")[1].split("<h2")[0]
    assert section.index("Not explained by a package (1)") < section.index("authorized_keys") < \
        section.index("Came with a package (1)") < section.index("/etc/cron.d/gutenprint")
    assert "came with package <b>printer-driver-gutenprint 5.3.4-1</b>" in section
    assert "2</span><span class=l>ways back in (1 came with packages)" in html


def test_the_technicians_commands_are_a_tree_by_lineage(device_key):
    journal = SyntheticJournal("s-tree", device_key)
    realistic_session(journal)
    html = render_report(journal.bytes().splitlines(keepends=True))
    tree = html.split("<ul class=tree>")[1].split("<h2")[0]
    # sshd > bash > sudo > bash > apt-get > dpkg: each nested one level deeper
    depth = {}
    level = 0
    for token in re.finditer(r"<ul>|</ul>|<span class=cmd>([^<]*)</span>", tree):
        if token.group(0) == "<ul>":
            level += 1
        elif token.group(0) == "</ul>":
            level -= 1
        else:
            depth.setdefault(token.group(1), level)
    assert depth["sshd: ada [priv]"] == 0 and depth["-bash"] == 1 and depth["sudo -i"] == 2
    assert depth["apt-get install -y printer-driver-gutenprint"] == 4
    assert depth["/usr/bin/dpkg --status-fd 37 --configure --pending"] == 5
    assert "firefox" not in tree  # the customer's programs are only counted
    customer = html.split("id=customer>")[1].split("<h2")[0]
    assert "248 program starts not by the technician" in customer and "--field-trial-handle" not in html


def test_a_deep_or_looping_process_chain_cannot_break_the_tree():
    lines = [record(i, "process", {"op": "started", "pid": i + 2, "ppid": i + 1, "technician": True,
                                   "cmdline": [f"sh{i}"]}) for i in range(5000)]
    lines += [record(5001, "process", {"op": "started", "pid": 1, "ppid": 5001, "technician": True,
                                       "cmdline": ["loop"]})]
    html = render_report(lines)
    assert "nested too deep to show" in html and html.count("<ul>") <= LIMITS.command_depth + 1
    assert f"{5001 - LIMITS.commands:,} more of the technician" in html


def test_the_bundle_copy_names_the_command_that_checks_it():
    html = render_report([record(0, "note", {"text": "x"})], copy=BundleCopy("INC 1.zip", "SHA256:abc"))
    assert "This copy is not a verification" in html
    assert "chaperone verify &#x27;INC 1.zip&#x27; --fingerprint SHA256:abc" in html
    assert "Genuine" not in html and "Verified" not in html


def test_capture_s_origin_decides_what_a_package_explains_and_summaries_count():
    lines = [
        record(0, "inventory-change", {"category": "scheduled", "op": "added", "item": "/etc/cron.d/a",
                                       "way_back_in": True, "why": "runs as root", "origin": "package",
                                       "package": {"manager": "dpkg", "name": "cron", "version": "3.0",
                                                   "shipped": True, "in_session": True},
                                       "origin_detail": "came with package cron 3.0"}),
        record(1, "inventory-change", {"category": "scheduled", "op": "added", "item": "/etc/cron.d/b",
                                       "way_back_in": True, "why": "runs as root", "origin": "unexplained",
                                       "package": {"manager": "dpkg", "name": "cron", "version": "3.0",
                                                   "shipped": False, "in_session": True},
                                       "origin_detail": "belongs to package cron 3.0, but its content is not what "
                                                        "the package shipped"}),
        record(2, "process-summary", {"programs": {"firefox": 12, "bash": 3}, "other_programs": 4, "execs": 19}),
    ]
    html = render_report(lines)
    back = html.split("id=back>")[1].split("<h2")[0]
    unexplained, packaged = back.split("Came with a package")
    assert "/etc/cron.d/b" in unexplained and "not what the package shipped" in unexplained
    assert "/etc/cron.d/a" in packaged and "came with package <b>cron 3.0</b>" in packaged
    customer = html.split("id=customer>")[1].split("<h2")[0]
    assert "19 program starts" in customer and "firefox</code> × 12" in customer
    assert "(other programs)</code> × 4" in customer


def test_metadata_changes_mounts_and_ledger_alarms_are_shown():
    lines = [
        record(0, "file-meta", {"path": "/usr/local/bin/helper", "changed": ["mode"], "way_back_in": True,
                                "why": "a new setuid file", "after": {"mode": "4755", "user": "root"}}),
        record(1, "mount", {"op": "mounted", "mountpoint": "/mnt/usb", "fstype": "vfat", "source": "/dev/sdb1"}),
        record(2, "alarm", {"tool": "mount", "mountpoint": "/etc", "detail": "a mount over a watched path"}),
        record(3, "alarm", {"tool": "ledger", "kind": "fork", "detail": "a witness refused our head (409)"}),
    ]
    html = render_report(lines)
    back = html.split("id=back>")[1].split("<h2")[0]
    assert "/usr/local/bin/helper" in back and "a new setuid file" in back
    files = html.split("id=files>")[1].split("<h2")[0]
    assert "/usr/local/bin" in files and "/mnt/usb/" in files and "mounted" in files
    alarms = html.split("id=alarms>")[1].split("<h2")[0]
    assert "a mount at /etc" in alarms and "the device ledger: fork" in alarms and "409" in alarms
    assert "Other records" not in html
