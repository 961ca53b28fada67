"""settings.json: one schema, validated once, a sentence naming the key for a bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import SettingsError
from agent.settings import Settings, SSHSettings, document, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def test_no_file_gives_the_defaults(tmp_path):
    s = load_settings(tmp_path / "settings.json")
    assert s == Settings()
    assert (s.ssh.consent_wait_s, s.ssh.on_session_end, s.witness.quorum, s.witness.on_lag,
            s.retention.keep_days, s.publish.url, s.remote_access_interval_s) == (100.0, "end", 1, "end", 90, None, 15.0)


def test_every_documented_contract_key_is_read():
    s = parse_settings({
        "consent": {"customers": ["alice"]},
        "witness": {"witnesses": [{"url": "http://127.0.0.1:7380", "vkey": "w.example+01234567+AAAA"}],
                    "quorum": 1, "max_lag_s": 60, "on_lag": "end"},
        "publish": {"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:8333",
                    "retain_days": 365, "mode": "COMPLIANCE"},
        "retention": {"keep_days": 90},
    })
    assert s.consent.customers == ("alice",)
    assert s.witness.witnesses[0].url == "http://127.0.0.1:7380"
    assert s.witness.max_lag_s == 60.0
    assert (s.publish.url, s.publish.endpoint_url, s.publish.retain_days) == ("s3://bucket/prefix",
                                                                              "http://127.0.0.1:8333", 365)


def test_all_ssh_settings():
    s = parse_settings({"ssh": {"consent_wait_s": 30, "from": "10.0.0.0/8,*.acme.example",
                                "users": ["support"], "on_session_end": "warn", "duration": "1h30m",
                                "capabilities": ["shell"], "watch": ["/srv"]}}).ssh
    assert s == SSHSettings(30.0, "10.0.0.0/8,*.acme.example", ("support",), "warn", 5400, ("shell",), ("/srv",))


def test_the_old_top_level_require_verified_is_still_read():
    assert parse_settings({"require_verified": True}).consent.require_verified is True


@pytest.mark.parametrize("raw, sentence", [
    ({"ssh": {"consent_wait_s": -1}}, "ssh.consent_wait_s must be a number of seconds between 0 and 3600 (it is -1)"),
    ({"ssh": {"consent_wait_s": True}}, "ssh.consent_wait_s must be"),
    ({"ssh": {"from": 'x" ssh-ed25519 AAAA'}}, "ssh.from must be an sshd pattern list"),  # could inject options
    ({"ssh": {"users": "root"}}, "ssh.users must be a list of account names"),
    ({"ssh": {"on_session_end": "maybe"}}, 'ssh.on_session_end must be "end" or "warn"'),
    ({"ssh": {"duration": "soon"}}, "ssh.duration must be a duration"),
    ({"ssh": {"watch": "/etc"}}, "ssh.watch must be a list of absolute paths"),
    ({"witness": {"quorum": 0}}, "witness.quorum must be a whole number between 1 and 64 (it is 0)"),
    ({"witness": {"on_lag": "panic"}}, 'witness.on_lag must be "warn" or "end"'),
    ({"witness": {"witnesses": [{"url": "http://x"}]}}, "witness.witnesses[0] needs the key 'vkey'"),
    ({"witness": {"witnesses": [{"url": "ftp://x", "vkey": "a+01234567+AA"}]}}, "witness.witnesses[0].url must be"),
    ({"publish": {"url": "https://bucket"}}, "publish.url must be an s3://bucket/prefix URL"),
    ({"retention": {"keep_days": 1.5}}, "retention.keep_days must be a whole number"),
    ({"witnes": {}}, "unknown key 'witnes'"),
    ({"ssh": {"on_session_ends": "end"}}, "unknown key 'ssh.on_session_ends'"),
    ({"ssh": []}, "ssh must be a JSON object"),
    ([], "the file must be a JSON object"),
])
def test_a_bad_value_names_the_key_and_what_it_takes(raw, sentence):
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    assert sentence in str(err.value)


def test_a_file_error_names_the_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{not json")
    with pytest.raises(SettingsError, match=r"settings.json is not valid JSON \(line 1\)"):
        load_settings(path)
    path.write_text(json.dumps({"witness": {"quorum": "two"}}))
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}: witness.quorum must be")
    path.write_bytes(b'{"ssh": "\xff"}')
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(path)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                                max_size=2))


@given(st.dictionaries(st.sampled_from(["consent_wait_s", "from", "users", "on_session_end", "duration",
                                        "capabilities", "watch"]), _VALUES))
def test_ssh_settings_are_valid_or_refused_never_loosened(ssh):
    try:
        s = parse_settings({"ssh": ssh}).ssh
    except SettingsError as exc:
        assert str(exc).startswith("settings.json: ssh.")
        return
    assert 0 < s.consent_wait_s <= 3600
    assert s.on_session_end in ("end", "warn")
    assert s.from_pattern is None or '"' not in s.from_pattern and " " not in s.from_pattern


def test_docs_settings_md_is_generated_from_the_schema():
    assert (ROOT / "docs" / "SETTINGS.md").read_text(encoding="utf-8") == document(), \
        "regenerate it: python -m agent.settings > docs/SETTINGS.md"
