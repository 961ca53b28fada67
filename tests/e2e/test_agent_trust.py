"""Signed requests through a real agent: trusted keys, forgeries, tampering, expiry, certificates."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import pytest

from agent.clock import utc_now
from agent.devicekey import DeviceKey
from agent.session.request import FILE_LIFETIME, SessionRequest
from agent.session.request_file import request_file_text, stamp
from tests.e2e.agent_helpers import TECHNICIAN, assert_sealed_and_genuine, records


@pytest.fixture
def keys(technician_keys):
    return technician_keys


def _trust(home, line: str) -> None:
    home.trusted_technicians_path.write_text(line + "\n")


def _device(home) -> str:
    return DeviceKey.load(home).fingerprint


def _pending(agent, sid: str) -> dict:
    return next(p for p in agent.call("pending") if p["id"] == sid)


def test_signed_request_file_from_a_trusted_key_is_verified(agent, home, keys, tmp_path):
    _trust(home, f"alice@example.com {keys['alice'].with_suffix('.pub').read_text().strip()}")
    req = tmp_path / "req.json"
    made = agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["alice"]),
                     "--device", _device(home), "-o", str(req))
    assert made.returncode == 0, made.stderr
    opened = agent.cli("open", str(req))
    assert opened.returncode == 0, opened.stderr
    item = _pending(agent, opened.stdout.strip())
    fingerprint = subprocess.run(["ssh-keygen", "-lf", keys["alice"].with_suffix(".pub")], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    assert item["verified"] is True and item["source"] == "file"
    assert item["verification"]["detail"] == f"verified: Alice Example (Acme IT), key {fingerprint}"
    assert f"identity:     verified: Alice Example (Acme IT), key {fingerprint}" in agent.cli("pending").stdout


def test_request_signed_directly_is_verified(agent, home, keys, tmp_path):
    _trust(home, f"alice@example.com {keys['alice'].with_suffix('.pub').read_text().strip()}")
    done = agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["alice"]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verification"]["verified"] is True


def test_forged_signature_is_not_verified_and_refused_when_required(agent, home, keys, tmp_path):
    _trust(home, f"alice@example.com {keys['alice'].with_suffix('.pub').read_text().strip()}")
    req = tmp_path / "forged.json"
    agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["mallory"]),
              "--device", _device(home), "-o", str(req))
    opened = agent.cli("open", str(req), "--json")
    result = json.loads(opened.stdout)
    assert result["verification"]["verified"] is False
    assert result["verification"]["detail"].startswith("NOT VERIFIED: The key SHA256:")
    assert "not trusted for alice@example.com" in result["verification"]["detail"]
    assert "the request file's signer is not trusted" in result["flags"]

    home.settings_path.write_text(json.dumps({"require_verified": True}))
    again = tmp_path / "forged-again.json"
    agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["mallory"]),
              "--device", _device(home), "-o", str(again))
    refused = json.loads(agent.cli("open", str(again), "--json").stdout)
    assert refused["state"] == "refused"
    decision = next(r["data"] for r in records(home, refused["id"]) if r["type"] == "decision")
    assert decision["how"] == "policy" and "NOT VERIFIED: The key SHA256:" in decision["reason"]
    assert_sealed_and_genuine(home, refused["id"])


def test_tampered_request_file_is_refused_with_a_sentence(agent, home, keys, tmp_path):
    req = tmp_path / "req.json"
    agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["alice"]),
                     "--device", _device(home), "-o", str(req))
    doc = json.loads(req.read_text())
    doc["request"]["capabilities"] = ["files", "shell", "admin"]
    req.write_text(json.dumps(doc))
    opened = agent.cli("open", str(req))
    assert opened.returncode == 2
    assert opened.stderr.strip() == ("chaperone: The request's signature does not match its content; it may have "
                                     "been altered, so ask the technician for a new one.")
    assert agent.call("pending") == []


def test_expired_request_file_is_refused(agent, tmp_path):
    old = stamp(SessionRequest.from_fields({"technician": "Alice", "org": "Acme", "ticket": "1", "reason": "r"}),
                now=utc_now() - FILE_LIFETIME - timedelta(minutes=1))
    req = tmp_path / "old.json"
    req.write_text(request_file_text(old, None))
    opened = agent.cli("open", str(req))
    assert opened.returncode == 2 and f"The request file expired at {old.expires}" in opened.stderr


def test_unreadable_request_files(agent, tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00junk")
    assert "is not a text file" in agent.cli("open", str(binary)).stderr
    assert "There is no file" in agent.cli("open", str(tmp_path / "missing")).stderr
    assert agent.call("pending") == []


def test_cert_authority_technician(agent, home, keys, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-s", keys["ca"], "-I", "alice-laptop", "-n", "alice@example.com",
                    "-V", "-5m:+1h", keys["alice"].with_suffix(".pub")], check=True)
    _trust(home, f"*@example.com cert-authority {keys['ca'].with_suffix('.pub').read_text().strip()}")
    done = agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["alice"]), "--json")
    assert done.returncode == 0, done.stderr
    verification = json.loads(done.stdout)["verification"]
    assert verification["verified"] is True and verification["principal"] == "alice@example.com"
    assert verification["detail"].startswith("verified: Alice Example (Acme IT), key SHA256:")
    assert verification["detail"].endswith(", certificate 'alice-laptop' from a trusted authority")


def test_a_request_file_opens_one_session_only(agent, home, keys, tmp_path):
    """The attack: one signed file used for three "verified" requests."""
    _trust(home, f"alice@example.com {keys['alice'].with_suffix('.pub').read_text().strip()}")
    req = tmp_path / "req.json"
    agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["alice"]),
              "--device", _device(home), "-o", str(req))
    first = agent.cli("open", str(req))
    assert first.returncode == 0, first.stderr
    sid = first.stdout.strip()
    agent.call("decide", id=sid, decision="deny", how="terminal")
    for _ in range(2):
        again = agent.cli("open", str(req))
        assert again.returncode == 2
        assert again.stderr.strip() == (f"chaperone: This request file was already used (for {sid}); a request "
                                        "file opens one session only, so ask the technician for a new one.")
    assert agent.call("pending") == []


def test_a_request_file_for_another_computer_or_for_none_is_refused(agent, home, keys, tmp_path):
    _trust(home, f"alice@example.com {keys['alice'].with_suffix('.pub').read_text().strip()}")
    other = "SHA256:" + "A" * 43
    req = tmp_path / "other.json"
    agent.cli("request", *TECHNICIAN, "--watch", str(tmp_path), "--sign-key", str(keys["alice"]),
              "--device", other, "-o", str(req))
    opened = agent.cli("open", str(req))
    assert opened.returncode == 2
    assert opened.stderr.strip() == (f"chaperone: This request file was made for another computer ({other}), not "
                                     f"this one ({_device(home)}); ask the technician for one made for this "
                                     "computer.")
    # A signed file that names no computer (made by hand, or by an older version) is refused too.
    unbound = stamp(SessionRequest.from_fields({"technician": "Alice", "email": "alice@example.com", "org": "Acme",
                                                "ticket": "1", "reason": "r"}))
    signed = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-n", "chaperone-request", "-f", str(keys["alice"]),
                             "-"], input=unbound.signed_bytes(), capture_output=True, check=True).stdout.decode()
    (tmp_path / "unbound.json").write_text(request_file_text(unbound, signed))
    opened = agent.cli("open", str(tmp_path / "unbound.json"))
    assert opened.returncode == 2 and "This request file names no computer" in opened.stderr
    assert agent.call("pending") == []
    # Making a signed file without naming the computer is refused before anything is signed.
    made = agent.cli("request", *TECHNICIAN, "--sign-key", str(keys["alice"]), "-o", str(tmp_path / "x.json"))
    assert made.returncode == 2 and "--device SHA256:" in made.stderr and not (tmp_path / "x.json").exists()
