"""Hypothesis: a secret embedded in random surrounding syntax, in any supported form, never survives."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.redact import Redactor, redact_cmdline, redact_line

SECRET_KEYS = ["password", "passwd", "db_password", "api_key", "apiKey", "client_secret", "token", "auth_token",
               "SECRET_KEY", "private_key", "passphrase", "psk", "AccountKey", "X-Api-Key", "mysql_pwd"]
# Values that look like secrets (the only values shown under a secret key are paths, references, switches).
secret_values = st.text(st.sampled_from("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!%+_-"),
                        min_size=8, max_size=32).filter(lambda s: not s.startswith("-"))
# Surrounding text: anything printable on one line, kept apart from the form by a separator.
junk = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
separators = st.sampled_from([" ", "; ", ", ", " && ", "\t", " | ", " # "])

FORMS = {
    "env": lambda k, v: f"{k}={v}",
    "ini": lambda k, v: f"{k} = {v}",
    "yaml": lambda k, v: f"{k}: {v}",
    "json": lambda k, v: f"{json.dumps(k)}: {json.dumps(v)}",
    "xml": lambda k, v: f"<{k}>{v}</{k}>",
    "xml-attr": lambda k, v: f'<add key="{k}" value="{v}"/>',
    "option": lambda k, v: f"--{k}={v}",
    "option-space": lambda k, v: f"--{k} {v}",
    "quoted": lambda k, v: f"{k}='{v}'",
    "php": lambda k, v: f"define('{k}', '{v}');",
    "arrow": lambda k, v: f"'{k}' => '{v}',",
    "walrus": lambda k, v: f"{k} := {v}",
    "make": lambda k, v: f"{k} ?= {v}",
}
# (the token as it stands, the secret in it): a webhook's secret is its path, known only inside its URL
TOKENS = [(row.split("\t")[3][len("rotated "):-len(" today")], row.split("\t")[4]) for row in
          (Path(__file__).resolve().parents[1] / "data" / "redact" / "tokens.tsv").read_text().splitlines()
          if not row.startswith("#") and "\talone\t" in row]


@settings(max_examples=400, deadline=None)
@given(form=st.sampled_from(sorted(FORMS)), key=st.sampled_from(SECRET_KEYS), secret=secret_values,
       before=junk, after=junk, sep1=separators, sep2=separators)
def test_a_secret_under_a_secret_key_in_random_surroundings_never_survives(form, key, secret, before, after, sep1, sep2):
    if form in ("xml",):
        key = key.replace("-", "_")
    assume(secret not in before and secret not in after)
    line = f"{before}{sep1}{FORMS[form](key, secret)}{sep2}{after}"
    assume("\n" not in line and "\r" not in line)
    assert secret not in redact_line(line)


@settings(max_examples=300, deadline=None)
@given(token=st.sampled_from(TOKENS), before=junk, after=junk, sep1=separators, sep2=separators,
       wrap=st.sampled_from(["{}", "'{}'", '"{}"', "({})", "[{}]", "x={}", "`{}`"]))
def test_a_token_format_in_random_surroundings_never_survives(token, before, after, sep1, sep2, wrap):
    token, secret = token
    assume(secret not in before and secret not in after)
    line = f"{before}{sep1}{wrap.format(token)}{sep2}{after}"
    assume("\n" not in line and "\r" not in line)
    assert secret not in redact_line(line)


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["https", "postgres", "mysql", "redis", "amqp", "mongodb+srv", "ftp", "sftp"]),
       user=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), secret=secret_values.filter(lambda s: "%" not in s),
       before=junk, after=junk)
def test_a_url_password_in_random_surroundings_never_survives(scheme, user, secret, before, after):
    assume(secret not in before and secret not in after and secret not in user)
    line = f"{before} {scheme}://{user}:{secret}@host.example:1234/db {after}"
    assume("\n" not in line)
    assert secret not in redact_line(line)


@settings(max_examples=200, deadline=None)
@given(secret=secret_values, around=st.lists(st.sampled_from(
    ["s/{}/x/", "'{}'", '"pw={}"', "/tmp/{}.bak", "--opt={}", "{}:{}", "a{}b", "{}"]), min_size=1, max_size=3),
       words=st.lists(st.from_regex(r"[a-z/.-]{1,10}", fullmatch=True), max_size=4))
def test_a_known_secret_anywhere_in_a_command_line_never_survives(secret, around, words):
    r = Redactor()
    r.learn(f"password={secret}\n")
    assume(r.knows(secret))
    argv = ["tool", *words, *(a.format(secret, secret) for a in around)]
    assert all(secret not in arg for arg in r.redact_cmdline(argv))
    assert secret not in r.redact_note(" ".join(argv)).text
    assert secret not in r.hide_known(" ".join(argv))


OPTION_FORMS = [
    lambda v: ["tool", "login", f"--password={v}"],
    lambda v: ["tool", "--token", v, "-v"],
    lambda v: ["tool", f"--api-key={v}"],
    lambda v: ["tool", "--client-secret", v],
    lambda v: ["sshpass", "-p", v, "ssh", "host"],
    lambda v: ["mysql", "-u", "root", f"-p{v}", "shop"],
    lambda v: ["docker", "login", "-u", "bob", "-p", v, "registry"],
    lambda v: ["redis-cli", "-p", "6380", "-a", v],
    lambda v: ["curl", f"-ubob:{v}", "https://x"],
    lambda v: ["smbclient", "//h/s", "-U", f"bob%{v}"],
]


@settings(max_examples=300, deadline=None)
@given(form=st.sampled_from(OPTION_FORMS), secret=secret_values)
def test_option_values_never_survive(form, secret):
    argv = form(secret)
    out = redact_cmdline(argv)
    assert all(secret not in a for a in out) and out[0] == argv[0]
