"""The agent's mode is part of the signed record: a personal-mode bundle says, wherever it is checked or read,
that the customer's account could read the device key (DESIGN.md, "Personal mode")."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from agent.bundle import export_bundle, verify_bundle
from agent.cli import main
from tests.unit.test_bundle import write_session

PERSONAL = {"mode": "personal", "key_account": "alice"}
SYSTEM = {"mode": "system", "key_account": "root"}


def export(home, device_key, tmp_path, facts):
    write_session(home, device_key, facts=facts)
    return export_bundle(home, "s-1", tmp_path / "b.zip")


def test_a_personal_mode_bundle_says_so_in_verify_its_json_verify_txt_and_the_report(home, device_key, tmp_path,
                                                                                        capsys):
    bundle = export(home, device_key, tmp_path, PERSONAL)
    assert main(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "Personal mode: the agent ran as the account alice, which could read the device key" in out
    assert main(["verify", "--json", str(bundle)]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["mode"], verdict["key_account"]) == ("personal", "alice")
    with zipfile.ZipFile(bundle) as z:
        verify_txt = z.read("VERIFY.txt").decode()
        report = z.read("report.html").decode()
    assert "Personal mode: the agent ran as the account alice" in " ".join(verify_txt.split())
    assert re.search(r"<dt>Agent</dt><dd><span class=flag>Personal mode: the agent ran as the account alice", report)


def test_a_system_mode_bundle_says_only_root_could_read_the_key(home, device_key, tmp_path, capsys):
    bundle = export(home, device_key, tmp_path, SYSTEM)
    assert main(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "System mode: the agent ran as a system service; only root could read the device key." in out
    assert "Personal mode" not in out


def test_a_journal_that_does_not_say_is_not_taken_for_either(home, device_key, tmp_path, capsys):
    bundle = export(home, device_key, tmp_path, None)
    verdict = verify_bundle(bundle)
    assert verdict.genuine and verdict.mode is None
    assert main(["verify", str(bundle)]) == 0
    assert "does not say whether its agent ran as a system service or in personal mode" in capsys.readouterr().out


@pytest.mark.parametrize("hostile", ["alice\x1b[32m Genuine", "a" * 5000])
def test_the_account_name_from_the_journal_is_printed_escaped(home, device_key, tmp_path, capsys, hostile):
    bundle = export(home, device_key, tmp_path, {"mode": "personal", "key_account": hostile})
    assert main(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "Personal mode" in out

