"""SessionRequest: validation of untrusted fields, request files, signatures."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import utc_now
from agent.errors import RequestError
from agent.session.request import (
    DEFAULT_CAPABILITIES,
    DEFAULT_DURATION_S,
    FILE_LIFETIME,
    MAX_DURATION_S,
    SessionRequest,
    parse_duration,
    parse_technician,
    watch_flags,
)
from agent.session.request_file import (
    parse_request_file,
    request_file_text,
    sign_with_ssh_keygen,
    stamp,
    verify_request,
    verify_ssh_login,
)
from agent.trust import TrustStore
from tests.conftest import require_program

FIELDS = {"technician": "Alice Example", "email": "alice@example.com", "org": "Acme IT", "ticket": "4711",
          "reason": "printer queue stuck"}


def test_defaults_fill_in_duration_and_capabilities():
    r = SessionRequest.from_fields(FIELDS, minimum_duration_s=60)
    assert (r.duration_s, r.capabilities, r.watch) == (DEFAULT_DURATION_S, DEFAULT_CAPABILITIES, ())


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("45", 2700)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1d", "-5m", "1.5h", "m"])
def test_parse_duration_rejects_with_a_sentence(text):
    with pytest.raises(RequestError, match="not understood"):
        parse_duration(text)


def test_parse_technician():
    assert parse_technician("Alice Example <alice@example.com>") == ("Alice Example", "alice@example.com")
    assert parse_technician("Bob") == ("Bob", None)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"duration_s": MAX_DURATION_S + 1}, "out of range"),
        ({"duration_s": 59}, "out of range"),
        ({"duration_s": 0}, "out of range"),
        ({"duration_s": -5}, "out of range"),
        ({"duration_s": "30m"}, "whole number"),
        ({"duration_s": True}, "whole number"),
        ({"duration_s": 1800.0}, "whole number"),
        ({"technician": ""}, "no technician"),
        ({"technician": "   "}, "blank"),
        ({"org": None}, "no org"),
        ({"ticket": 42}, "must be text"),
        ({"reason": "x" * 1001}, "limit is 1000"),
        ({"email": "not-an-email"}, "not an email"),
        ({"capabilities": ["files", "root"]}, "Unknown capability"),
        ({"capabilities": "files"}, "list of names"),
        ({"watch": ["relative/path"]}, "relative"),
        ({"watch": ["/tmp/a\x00b"]}, "not a usable path"),
        ({"watch": ["/tmp"] * 33}, "limit is 32"),
        ({"technician": "Al\ud800ice"}, "lone surrogate"),
        ({"ssh": {"user": "bob"}}, "ssh details"),
    ],
)
def test_bad_fields_get_one_sentence(change, message):
    with pytest.raises(RequestError, match=message) as info:
        SessionRequest.from_fields({**FIELDS, **change}, minimum_duration_s=60)
    assert str(info.value).endswith(".")


def test_not_an_object_is_refused():
    with pytest.raises(RequestError, match="JSON object"):
        SessionRequest.from_fields(["technician"])


@given(st.dictionaries(
    st.sampled_from(["technician", "email", "org", "ticket", "reason", "duration_s", "capabilities", "watch",
                     "ssh", "created", "expires", "other"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=8),
))
@settings(max_examples=120, deadline=None)
def test_any_fields_either_validate_or_raise_request_error(data):
    try:
        r = SessionRequest.from_fields({**FIELDS, **data}, minimum_duration_s=60)
    except RequestError:
        return
    assert SessionRequest.from_fields(r.fields(), minimum_duration_s=60) == r


def test_hostile_names_are_flagged_and_shown_escaped():
    r = SessionRequest.from_fields({**FIELDS, "technician": "Alice\u202e\u2066 Admin", "org": "\u0410cme IT"},
                                   minimum_duration_s=60)
    flags = r.text_flags()
    assert any(f.startswith("technician contains unusual characters (bidirectional controls") for f in flags)
    assert any(f.startswith("org contains unusual characters (lookalike letters") for f in flags)
    assert r.display_name() == "Alice\\u202e\\u2066 Admin (\\u0410cme IT)"


def test_watch_flags_for_missing_paths(tmp_path):
    assert watch_flags([str(tmp_path)]) == []
    assert watch_flags([str(tmp_path / "gone")]) == [f"watch path {tmp_path / 'gone'} does not exist"]


# --- request files and signatures ------------------------------------------------------------

@pytest.fixture
def keys(technician_keys):
    return technician_keys


def _signed_file(key, **change) -> str:
    r = stamp(SessionRequest.from_fields({**FIELDS, **change}, minimum_duration_s=60))
    return request_file_text(r, sign_with_ssh_keygen(r.signed_bytes(), key))


def _verify(text, store):
    parsed = parse_request_file(text, minimum_duration_s=60)
    return verify_request(parsed.request, parsed.signature, parsed.signed_bytes, store)


def test_trusted_signature_is_verified(keys):
    store = TrustStore.parse(f"alice@example.com {keys['alice'].with_suffix('.pub').read_text()}")
    v = _verify(_signed_file(keys["alice"]), store)
    assert v.verified and v.principal == "alice@example.com"
    assert v.detail.startswith("verified: Alice Example (Acme IT), key SHA256:")


def test_signature_by_another_key_is_not_verified(keys):
    store = TrustStore.parse(f"alice@example.com {keys['alice'].with_suffix('.pub').read_text()}")
    v = _verify(_signed_file(keys["mallory"]), store)
    assert not v.verified
    assert v.detail.startswith("NOT VERIFIED: The key SHA256:")
    assert v.fingerprint and v.fingerprint.startswith("SHA256:")


def test_unsigned_file_is_not_verified():
    r = stamp(SessionRequest.from_fields(FIELDS, minimum_duration_s=60))
    v = _verify(request_file_text(r, None), TrustStore())
    assert v.detail == "NOT VERIFIED: the request is not signed."


def test_tampered_file_is_refused(keys):
    doc = json.loads(_signed_file(keys["alice"]))
    doc["request"]["duration_s"] = MAX_DURATION_S
    with pytest.raises(RequestError, match="does not match its content"):
        _verify(json.dumps(doc), TrustStore())


def test_garbage_signature_is_refused(keys):
    doc = json.loads(_signed_file(keys["alice"]))
    doc["signature"] = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"
    with pytest.raises(RequestError, match="does not match its content"):
        _verify(json.dumps(doc), TrustStore())


def test_expired_file_is_refused():
    r = stamp(SessionRequest.from_fields(FIELDS, minimum_duration_s=60), now=utc_now() - FILE_LIFETIME - timedelta(1))
    with pytest.raises(RequestError, match="expired at"):
        parse_request_file(request_file_text(r, None), minimum_duration_s=60)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a Chaperone request file"),
    ("[" * 60000, "not valid JSON"),
    ('{"format": "chaperone-request/1", "request": {}, "signature": 5}', "signature is malformed"),
    ("x" * (70 * 1024), "larger than 64 KiB"),
])
def test_bad_request_files(text, message):
    with pytest.raises(RequestError, match=message):
        parse_request_file(text)


def test_certificate_from_trusted_authority_is_verified(keys, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-s", keys["ca"], "-I", "alice-laptop", "-n", "alice@example.com",
                    "-V", "-5m:+1h", keys["alice"].with_suffix(".pub")], check=True)
    store = TrustStore.parse(f"*@example.com cert-authority {keys['ca'].with_suffix('.pub').read_text()}")
    v = _verify(_signed_file(keys["alice"]), store)  # ssh-keygen picks up alice-cert.pub
    assert v.verified, v.detail
    assert "certificate 'alice-laptop' from a trusted authority" in v.detail


def test_expired_certificate_is_not_verified(keys):
    subprocess.run(["ssh-keygen", "-q", "-s", keys["ca"], "-I", "old", "-n", "alice@example.com",
                    "-V", "20200101:20200102", keys["alice"].with_suffix(".pub")], check=True)
    store = TrustStore.parse(f"*@example.com cert-authority {keys['ca'].with_suffix('.pub').read_text()}")
    v = _verify(_signed_file(keys["alice"]), store)
    assert not v.verified and v.detail.startswith("NOT VERIFIED:")


def test_signing_with_a_missing_key_is_a_sentence(tmp_path):
    require_program("ssh-keygen")
    with pytest.raises(RequestError, match="does not exist"):
        sign_with_ssh_keygen(b"x", tmp_path / "nokey")


def test_request_file_round_trip_keeps_ssh_details(keys):
    r = stamp(replace(SessionRequest.from_fields(FIELDS, minimum_duration_s=60),
                      ssh={"user": "bob", "key_fingerprint": "SHA256:x", "key_type": "ssh-ed25519"}))
    parsed = parse_request_file(request_file_text(r, None), minimum_duration_s=60)
    assert parsed.request.ssh == {"user": "bob", "key_fingerprint": "SHA256:x", "key_type": "ssh-ed25519"}
    assert parsed.signed_bytes == r.signed_bytes()


def test_ssh_login_key_is_verified_by_the_agent_itself(keys):
    import base64

    from agent.sshkeys import line_to_blob

    pub = keys["alice"].with_suffix(".pub").read_text().strip()
    ssh = {"user": "root", "key_fingerprint": "SHA256:x", "key_type": "ssh-ed25519",
           "key": base64.b64encode(line_to_blob(pub)).decode(), "via_ca": False, "key_id": None}
    r = SessionRequest.from_fields({**FIELDS, "ssh": ssh}, minimum_duration_s=60)
    assert r.ssh["key"] == ssh["key"] and "key_id" not in r.ssh
    trusted = verify_ssh_login(r, TrustStore.parse(f"alice@example.com {pub}"))
    assert trusted.verified and trusted.detail.endswith(", SSH login as root")
    assert trusted.detail.startswith("verified: Alice Example (Acme IT), key SHA256:")
    stranger = verify_ssh_login(r, TrustStore())
    assert not stranger.verified and stranger.detail.startswith("NOT VERIFIED: The key SHA256:")
    keyless = verify_ssh_login(replace(r, ssh={k: v for k, v in r.ssh.items() if k != "key"}), TrustStore())
    assert keyless.detail == "NOT VERIFIED: the SSH login's key was not given."


@given(st.one_of(
    st.text(max_size=200),
    st.builds(lambda req, sig: json.dumps({"format": "chaperone-request/1", "request": req, "signature": sig}),
              st.dictionaries(st.sampled_from(sorted(FIELDS) + ["duration_s", "watch", "expires", "ssh"]),
                              st.none() | st.integers() | st.text(max_size=20) | st.lists(st.text(max_size=5)),
                              max_size=8),
              st.none() | st.text(max_size=50) | st.integers()),
))
@settings(max_examples=200, deadline=None)
def test_any_request_file_text_parses_or_raises_request_error(text):
    try:
        parsed = parse_request_file(text, minimum_duration_s=60)
    except RequestError as exc:
        assert str(exc).endswith(".")
    else:
        assert parsed.signed_bytes  # what a signature would cover
