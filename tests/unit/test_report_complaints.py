"""The complaints about the report, reproduced (issue 14): each failed on the report before its rewrite.

- the report of a 71-second session was dozens of pages (248 process rows of the whole machine, raw
  JSON, a table of every record): it must stay short (tests/e2e/test_report_browser.py prints it);
- a 1.36 MB zip made a 221 MB report: the report's size is bounded whatever the journal holds;
- the report.html inside a bundle said "Verified" in green, even in a tampered bundle;
- ``chaperone report`` on a tampered bundle exited 0.
"""

from __future__ import annotations

import io
import re
import zipfile

from agent.bundle import export_bundle, render_report
from agent.cli import main
from tests.samples import SyntheticJournal, realistic_session
from tests.unit.test_bundle import write_session

MAX_REPORT_BYTES = 3 << 20


def short_session_lines(device_key) -> list[bytes]:
    journal = SyntheticJournal("s-20261122-7KQ3XZ", device_key)
    realistic_session(journal)
    return journal.bytes().splitlines(keepends=True)


def test_short_session_report_has_no_whole_machine_process_table_nor_raw_json(device_key):
    html = render_report(short_session_lines(device_key))
    rows = html.count("<tr")
    assert rows < 120, f"{rows} table rows for a 71-second session"
    assert "{'uid'" not in html and "{&quot;" not in html and '{"' not in html  # no dicts, no raw JSON
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{6}", html)  # no microsecond timestamps
    assert "Driver reinstalled; test page printed." in html[:html.find("Configuration changes")]  # note at the top


def test_report_size_is_bounded_whatever_the_journal_holds(device_key):
    journal = SyntheticJournal("s-big", device_key)
    journal.add("session-start", {"until": "2026-11-22T10:00:00.000000Z", "capabilities": ["files"], "watch": ["/"]})
    diff = "".join(f"-line {i} of a long configuration file\n+line {i} changed\n" for i in range(120))
    for n in range(3000):
        journal.add("file", {"op": "modified", "path": f"/etc/app/conf-{n}.conf", "kind": "file", "size": 9000,
                             "sha256_after": "a" * 64, "diff": diff})
        journal.add("process", {"op": "started", "pid": 10000 + n, "ppid": 9999 + n, "user": "root",
                                "exe": "/usr/bin/sed", "cmdline": ["sed", "-i", "x" * 2000, f"/etc/app/conf-{n}"],
                                "technician": True})
    journal.seal()
    raw = journal.bytes()
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("session.jsonl", raw)
    html = render_report(raw.splitlines(keepends=True))
    assert len(html.encode()) <= MAX_REPORT_BYTES, (
        f"a {len(packed.getvalue()) / 1e6:.2f} MB zip made a {len(html.encode()) / 1e6:.1f} MB report")
    assert "3000" in html or "3,000" in html  # what is left out is counted


def test_the_copy_inside_a_bundle_never_says_verified(home, device_key, tmp_path):
    write_session(home, device_key)
    bundle = export_bundle(home, "s-1", tmp_path / "b.zip")
    with zipfile.ZipFile(bundle) as zf:
        html = zf.read("report.html").decode()
    assert "Verified" not in html and "Genuine" not in html
    assert "not a verification" in html and "chaperone verify" in html and device_key.fingerprint in html


def test_chaperone_report_on_a_tampered_bundle_exits_1_and_says_so(home, device_key, tmp_path):
    write_session(home, device_key, records=[("note", {"author": "bob", "text": "all good"})])
    folder = export_bundle(home, "s-1", f"{tmp_path}/b/")
    journal = folder / "session.jsonl"
    journal.write_bytes(journal.read_bytes().replace(b"all good", b"all fine"))
    out = tmp_path / "r.html"
    assert main(["report", str(folder), "-o", str(out)]) == 1
    html = out.read_text()
    assert "NOT GENUINE" in html and "Verified" not in html
