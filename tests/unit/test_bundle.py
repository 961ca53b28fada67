"""Exporting bundles: the six files, VERIFY.txt, OpenSSH interop, the report, refusals."""

from __future__ import annotations

import hashlib
import re
import subprocess
import zipfile

import pytest

from agent.bundle import FILES, ReportCheck, export_bundle, render_report, verify_bundle
from agent.cli import main
from agent.errors import ChaperoneError, HomeError, UsageError
from agent.history import History
from agent.journal import Journal
from tests.conftest import require_program

REQUEST = {
    "technician": "Bob <script>alert(1)</script>", "email": "bob@acme.example", "org": "ACME & Co",
    "ticket": "T-42", "reason": "printer \u202eexe.txt", "duration_s": 1800, "capabilities": ["shell"],
    "watch": ["/etc"], "source": "cli", "flags": [],
    "verification": {"verified": True, "principal": "bob@acme", "fingerprint": "SHA256:abc", "detail": "trusted"},
}


def write_session(home, device_key, session_id="s-1", *, seal=True, records=(), facts=None):
    """A journal like the session manager writes, and its History row."""
    path = home.journal_path(session_id)
    with Journal.create(path, session_id, device_key, facts=facts) as j:
        j.append("request", REQUEST)
        j.append("decision", {"decision": "allow", "how": "click", "by": {"uid": 1000, "user": "alice"},
                              "granted": {"capabilities": ["shell"], "watch": ["/etc"],
                                          "until": "2026-11-22T04:00:00.000000Z"}, "reason": None})
        j.append("session-start", {"until": "2026-11-22T04:00:00.000000Z", "capabilities": ["shell"],
                                   "watch": ["/etc"]})
        for type_, data in records:
            j.append(type_, data)
        if seal:
            j.append("session-end", {"reason": "customer", "by": "alice"})
            j.seal({"reason": "customer"})
    with History(home) as history:
        history.upsert(session_id, state="sealed" if seal else "active", technician="Bob", org="ACME & Co",
                       ticket="T-42", requested="2026-11-22T03:00:00.000000Z", journal=str(path))
    return path


@pytest.fixture
def sealed(home, device_key):
    write_session(home, device_key)
    return home


def test_zip_holds_exactly_the_six_files_and_verifies(sealed, device_key, tmp_path):
    out = export_bundle(sealed, "s-1", tmp_path / "b.zip")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(FILES)
        journal = zf.read("session.jsonl")
        sums = zf.read("SHA256SUMS").decode()
        signers = zf.read("allowed_signers").decode()
    assert journal == sealed.journal_path("s-1").read_bytes()
    assert sums.splitlines() == [
        f"{hashlib.sha256(zipfile.ZipFile(out).read(n)).hexdigest()}  {n}"
        for n in ("session.jsonl", "report.html", "VERIFY.txt", "allowed_signers")
    ]
    assert signers == device_key.allowed_signers_line() + "\n"
    verdict = verify_bundle(out, fingerprint=device_key.fingerprint)
    assert verdict.genuine and verdict.pinned and verdict.exit_code == 0
    assert (verdict.session, verdict.records, verdict.unsealed) == ("s-1", 7, 0)
    assert verdict.principal == device_key.principal and verdict.fingerprint == device_key.fingerprint


def test_folder_export_when_output_ends_with_slash_or_is_a_folder(sealed, device_key, tmp_path):
    first = export_bundle(sealed, "s-1", f"{tmp_path}/new/")
    assert first.is_dir() and sorted(p.name for p in first.iterdir()) == sorted(FILES)
    existing = tmp_path / "existing"
    existing.mkdir()
    second = export_bundle(sealed, "s-1", existing)
    assert sorted(p.name for p in second.iterdir()) == sorted(FILES)
    again = export_bundle(sealed, "s-1", existing)  # re-export over its own files
    for folder in (first, second, again):
        assert verify_bundle(folder, device_key.fingerprint).genuine


def test_verify_txt_names_the_principal_and_the_exact_commands(sealed, device_key, tmp_path):
    text = (export_bundle(sealed, "s-1", f"{tmp_path}/b/") / "VERIFY.txt").read_text()
    command = (f"ssh-keygen -Y verify -f allowed_signers -I {device_key.principal} -n chaperone-session "
               "-s SHA256SUMS.sig < SHA256SUMS")
    assert f"{command} && sha256sum -c SHA256SUMS" in text
    assert f'cmd /c "{command}"' in text
    assert f"chaperone verify b --fingerprint {device_key.fingerprint}" in text
    assert "s-1" in text


def test_openssh_and_sha256sum_alone_accept_the_bundle(sealed, device_key, tmp_path):
    require_program("ssh-keygen", "sha256sum", "sh")
    out = export_bundle(sealed, "s-1", tmp_path / "b.zip")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(folder)
    command = re.search(r"^    (ssh-keygen .* && sha256sum -c SHA256SUMS)$",
                        (folder / "VERIFY.txt").read_text(), re.M).group(1)
    done = subprocess.run(["sh", "-c", command], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f'Good "chaperone-session" signature for {device_key.principal}' in done.stdout + done.stderr
    assert done.stdout.count(": OK") == 4
    (folder / "report.html").write_text("changed")
    assert subprocess.run(["sh", "-c", command], cwd=folder, capture_output=True).returncode != 0


def test_a_signature_made_by_ssh_keygen_is_accepted(sealed, device_key, tmp_path):
    require_program("ssh-keygen")
    folder = export_bundle(sealed, "s-1", f"{tmp_path}/b/")
    ours = (folder / "SHA256SUMS.sig").read_bytes()
    (folder / "SHA256SUMS.sig").unlink()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(sealed.key_path), "-n", "chaperone-session",
                    str(folder / "SHA256SUMS")], check=True, capture_output=True)
    assert (folder / "SHA256SUMS.sig").read_bytes() == ours
    assert verify_bundle(folder, device_key.fingerprint).genuine


def test_an_unsealed_session_is_refused_with_what_to_do(home, device_key, tmp_path):
    write_session(home, device_key, "s-open", seal=False)
    with pytest.raises(UsageError, match=r"not sealed yet; end it first with 'chaperone end s-open'"):
        export_bundle(home, "s-open", tmp_path / "b.zip")
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*tmp"))


def test_a_damaged_journal_is_refused(sealed, tmp_path):
    path = sealed.journal_path("s-1")
    data = bytearray(path.read_bytes())
    data[300] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChaperoneError, match="not intact"):
        export_bundle(sealed, "s-1", tmp_path / "b.zip")
    assert list(tmp_path.iterdir()) == [sealed.path]


def test_unknown_session_bad_id_and_bad_outputs(sealed, tmp_path):
    with pytest.raises(UsageError, match="no session nope"):
        export_bundle(sealed, "nope", tmp_path / "b.zip")
    with pytest.raises(UsageError, match="not a session id"):
        export_bundle(sealed, "../s-1", tmp_path / "b.zip")
    with pytest.raises(UsageError, match="does not exist"):
        export_bundle(sealed, "s-1", tmp_path / "missing" / "b.zip")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds other files"):
        export_bundle(sealed, "s-1", busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(HomeError, match="chaperone init"):
        from agent.home import Home

        export_bundle(Home(tmp_path / "no-home"), "s-1", tmp_path / "b.zip")


def test_export_finds_the_journal_without_a_history_row(home, device_key, tmp_path):
    path = home.journal_path("s-2")
    with Journal.create(path, "s-2", device_key) as j:
        j.seal()
    assert verify_bundle(export_bundle(home, "s-2", tmp_path / "b.zip")).genuine


def test_cli_export_verify_report(sealed, device_key, tmp_path, capsys):
    out = tmp_path / "b.zip"
    assert main(["export", "s-1", "-o", str(out), "--home", str(sealed.path)]) == 0
    assert f"--fingerprint {device_key.fingerprint}" in capsys.readouterr().out
    assert main(["verify", str(out), "--fingerprint", device_key.fingerprint]) == 0
    assert "matches the pinned fingerprint" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0
    said = capsys.readouterr().out
    assert "not pinned" in said and device_key.fingerprint in said
    report = tmp_path / "r.html"
    assert main(["report", str(out), "-o", str(report)]) == 0
    assert "genuine" in capsys.readouterr().out
    assert "Genuine: checked when this report was written" in report.read_text()


# --- the report -----------------------------------------------------------------------------

RECORDS = [
    ("file", {"op": "modified", "path": "/etc/ssh/sshd_config", "kind": "file", "size": 3301,
              "sha256_after": "b" * 64, "diff": "-PermitRootLogin no\n+PermitRootLogin yes\n</pre><img src=x>",
              "attribution": {"pid": 7, "exe": "/usr/bin/vim", "user": "bob", "how": "fanotify"}}),
    ("process", {"op": "started", "pid": 7, "ppid": 1, "user": "bob", "exe": "/usr/bin/vim",
                 "cmdline": ["vim", "/etc/ssh/sshd_config"], "technician": True}),
    ("inventory-change", {"category": "authorized_keys", "op": "added", "item": "ssh-ed25519 AAAA bob@evil",
                          "detail": "", "way_back_in": True, "why": "a new SSH key lets its owner log in"}),
    ("inventory-change", {"category": "packages", "op": "added", "item": "htop 3.2", "detail": "",
                          "way_back_in": False, "why": ""}),
    ("alarm", {"tool": "anydesk", "pid": 99, "process": "anydesk", "connections": 1, "detail": "connected"}),
    ("note", {"author": "bob", "text": "rebooted the spooler"}),
]


def _sections(html: str) -> dict[str, str]:
    parts = re.split(r"<h2[^>]*>", html)[1:]
    return {p.split(" <span")[0].split("<")[0]: p for p in parts}


def test_report_is_self_contained_escaped_and_sorted_into_sections(home, device_key, tmp_path):
    write_session(home, device_key, records=RECORDS)
    html = (export_bundle(home, "s-1", f"{tmp_path}/b/") / "report.html").read_text()
    assert "<script" not in html and "<img" not in html
    assert not re.search(r"<[^>]*\ssrc\s*=", html) and "@import" not in html and "url(" not in html
    assert all(link.startswith("#") for link in re.findall(r"href=['\"]?([^'\" >]*)", html))  # in-page links only
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "Bob &lt;script&gt;" in html and "ACME &amp; Co" in html
    assert "printer \\u202eexe.txt" in html and "\u202e" not in html
    for label in ("Technician", "Why", "Consent", "When", "Device"):
        assert f"<dt>{label}</dt>" in html
    assert "Allowed by alice with a click" in html and device_key.fingerprint in html
    sections = _sections(html)
    assert list(sections) == ["Ways back in", "Configuration changes", "The technician&#x27;s commands",
                              "Other file changes", "Software and system changes", "The customer&#x27;s own activity",
                              "Consent timeline", "Alarms", "Gaps in recording"]
    assert "authorized_keys" in sections["Ways back in"] and "anydesk" in sections["Alarms"]
    assert "htop" not in sections["Ways back in"] and "htop 3.2" in sections["Software and system changes"]
    diff = sections["Configuration changes"]
    assert "<span class=d>-PermitRootLogin no</span><span class=a>+PermitRootLogin yes</span>" in diff
    assert "&lt;/pre&gt;&lt;img src=x&gt;" in diff and "vim (bob, pid 7)" in diff
    assert "vim /etc/ssh/sshd_config" in sections["The technician&#x27;s commands"]
    assert "rebooted the spooler" in sections["Consent timeline"]
    assert "rebooted the spooler" in html.split("<h2")[0]  # the note is in the summary at the top

def test_report_with_empty_sections_and_bad_lines_stays_readable():
    html = render_report([b"not json\n", b'{"truncated'], check=ReportCheck(False, "It was cut."))
    assert "NOT GENUINE" in html and "It was cut." in html
    assert html.count("class=empty") == 8
    assert html.count("not a record") == 2 and "Gaps in recording <span class=n>(2)</span>" in html
    assert html.rstrip().endswith("</html>")


def test_export_last_names_the_file_after_the_ticket(home, device_key, tmp_path, monkeypatch, capsys):
    write_session(home, device_key, "s-1")
    write_session(home, device_key, "s-2")
    write_session(home, device_key, "s-3", seal=False)
    with History(home) as history:
        history.upsert("s-2", ticket="INC 42/../x", requested="2026-11-23T03:00:00.000000Z")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--last", "--home", str(home.path)]) == 0
    assert "of session s-2 to " in capsys.readouterr().out
    assert verify_bundle(tmp_path / "INC-42-..-x.zip").session == "s-2"
    assert main(["export", "--last", "--home", str(home.path)]) == 0  # the ticket's file exists: not overwritten
    assert (tmp_path / "INC-42-..-x-s-2.zip").is_file()
    assert main(["export", "s-1", "--home", str(home.path)]) == 0
    assert verify_bundle(tmp_path / "T-42.zip").session == "s-1"
    assert main(["export", "--home", str(home.path)]) == 2
    assert "Give a session's id or --last" in capsys.readouterr().err


def test_the_trays_report_checks_the_homes_journal(home, device_key, tmp_path):
    from agent.bundle.home_report import write_home_report

    write_session(home, device_key, "s-1", records=[("note", {"author": "t", "text": "all good"})])
    write_session(home, device_key, "s-2", seal=False)
    with History(home) as history:
        rows = {r["id"]: r for r in history.list()}
    out = tmp_path / "r.html"
    assert write_home_report(home, rows["s-1"], out).genuine
    assert "Genuine: checked when this report was written" in out.read_text()
    check = write_home_report(home, rows["s-2"], out)
    assert not check.genuine and not check.sealed and "Not sealed yet" in out.read_text()
    journal = home.journal_path("s-1")
    journal.write_bytes(journal.read_bytes().replace(b"all good", b"all fine"))
    check = write_home_report(home, rows["s-1"], out)
    assert not check.genuine and "NOT GENUINE" in out.read_text() and "line" in check.reason


def test_report_with_a_pinned_fingerprint_that_differs_exits_1(home, device_key, tmp_path, capsys):
    write_session(home, device_key)
    bundle = export_bundle(home, "s-1", tmp_path / "b.zip")
    out = tmp_path / "r.html"
    other = "SHA256:" + "A" * 43
    assert main(["report", str(bundle), "-o", str(out), "--fingerprint", other]) == 1
    assert "not by the pinned device key" in out.read_text()
    assert main(["report", str(bundle), "-o", str(out), "--fingerprint", device_key.fingerprint]) == 0
    assert "The key matches the pinned fingerprint." in out.read_text()
