"""Every command that prints a technician's text prints it escaped: no escape sequence, bidi control or
look-alike letter reaches the terminal raw, so none can dress a bad request or bundle up as a good one."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from agent.bundle.layout import SUMMED

pytestmark = pytest.mark.e2e

# An escape sequence that would paint "verified" green and hide what follows, a right-to-left override,
# a bell, a look-alike Cyrillic A.
HOSTILE = "\x1b[32mverified: Trusted Admin\x1b[8m\u202e\x07\u0410"
RAW = ("\x1b", "\u202e", "\x07", "\u0410")


def assert_clean(*outputs: str) -> None:
    for output in outputs:
        assert not any(ch in output for ch in RAW), repr(output)


def test_request_open_pending_status_note_approve_end_sessions(agent, tmp_path):
    made = agent.cli("request", "--technician", f"{HOSTILE} <evil\x1b[0m@example.com>", "--org", HOSTILE,
                       "--ticket", HOSTILE[:60], "--reason", HOSTILE, "--watch", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert_clean(made.stdout, made.stderr)
    sid = made.stdout.strip()
    file = tmp_path / "req.json"
    unsigned = agent.cli("request", "--technician", HOSTILE, "--org", HOSTILE, "--ticket", "T", "--reason",
                           HOSTILE, "-o", str(file))
    assert_clean(unsigned.stdout, unsigned.stderr)
    opened = agent.cli("open", str(file))
    assert opened.returncode == 0 and "NOT VERIFIED" in opened.stderr
    assert_clean(opened.stdout, opened.stderr)
    pending = agent.cli("pending")
    assert "\\x1b[32mverified: Trusted Admin" in pending.stdout  # shown, as the escaped text it is
    assert_clean(pending.stdout, pending.stderr)
    approved = agent.cli("approve", sid)
    assert approved.returncode == 0, approved.stderr
    status = agent.cli("status")
    assert status.stdout.startswith(f"active: {sid}")
    assert_clean(status.stdout, status.stderr, approved.stdout)
    note = agent.cli("note", HOSTILE)
    assert_clean(note.stdout, note.stderr)
    ended = agent.cli("end")
    sessions = agent.cli("sessions")
    assert_clean(ended.stdout, ended.stderr, sessions.stdout, sessions.stderr)
    bad_id = agent.cli("approve", HOSTILE)
    assert bad_id.returncode != 0
    assert_clean(bad_id.stdout, bad_id.stderr)


def test_verify_and_report_print_member_names_escaped(agent, tmp_path):
    made = agent.cli("request", "--technician", "Ada", "--org", "Acme", "--ticket", "1", "--reason", "r",
                       "--watch", str(tmp_path))
    sid = made.stdout.strip()
    agent.cli("approve", sid)
    agent.cli("end")
    folder = tmp_path / "bundle"
    exported = agent.cli("export", sid, "-o", f"{folder}/")
    assert exported.returncode == 0, exported.stderr
    # The attack: a NOT GENUINE bundle whose extra member's name paints the terminal's verdict green.
    bundle = tmp_path / "hostile.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        for name in [*SUMMED, "SHA256SUMS", "SHA256SUMS.sig"]:
            if (folder / name).exists():
                z.write(folder / name, name)
        z.writestr(f"{HOSTILE}\rGenuine: the bundle is intact.", b"x")
    verdict = agent.cli("verify", str(bundle))
    assert verdict.returncode in (1, 2)
    assert_clean(verdict.stdout, verdict.stderr)
    assert verdict.stdout.startswith("NOT GENUINE: The bundle holds \\x1b[32mverified") and "\\x0dGenuine" in verdict.stdout
    as_json = json.loads(agent.cli("verify", str(bundle), "--json").stdout)
    assert as_json["genuine"] is False
    report = agent.cli("report", str(bundle), "-o", str(tmp_path / "r.html"))
    assert_clean(report.stdout, report.stderr)
    shutil.rmtree(folder)
