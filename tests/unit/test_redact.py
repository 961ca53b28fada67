"""Redaction: a corpus of realistic secrets, harmless look-alikes, command lines and files.

Every corpus case states the exact expected line: the secret replaced by its
marker and every other character unchanged. That checks at once that the
secret is gone, that the rest stays readable and that the marker is the
first 8 hex digits of the value's SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest

from agent.redact import (
    default_redactor,
    is_secret_file,
    is_text_config,
    marker,
    redact_cmdline,
    redact_diff,
    redact_line,
    redact_text,
)


def expected_marker(value: str) -> str:
    digest = hmac.new(default_redactor()._marker._key, value.encode(), hashlib.sha256).hexdigest()
    return f"[redacted: sha256 {digest[:8]}]"


PEM_ONE_LINE = (
    "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
    "\\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\\n-----END PRIVATE KEY-----\\n"
)

# (format, line with {S} where the secret goes, the secret)
CORPUS = [
    ("env password", "DB_PASSWORD={S}", "hunter2-Pr0d!"),
    ("ini password", "password = {S}", "correct horse battery staple"),
    ("ini passwd colon", "passwd: {S}", "Tr0ub4dor&3"),
    ("yaml password", "  password: {S}", "s3cr3t-yaml"),
    ("yaml quoted api key", '  api_key: "{S}"', "0123456789abcdef0123456789abcdef"),
    ("json client secret", '  "client_secret": "{S}",', "aB3dE5fG7hI9jK1lM3nO5pQ7"),
    ("json inline token", '{"user": "svc", "token": "{S}", "ttl": 3600}', "tok_4f9a8b7c6d5e"),
    ("toml secret key", 'secret_key = "{S}"', "django-insecure-7x!k@q$w"),
    ("xml element", "    <password>{S}</password>", "MavenRepoPass1"),
    ("xml attribute", '<datasource user="app" password="{S}" url="jdbc:postgresql://db/app"/>', "Jdbc-Pass-99"),
    (".NET appSettings", '<add key="SmtpPassword" value="{S}" />', "SmtpS3cret"),
    ("Hadoop property", "<name>fs.s3a.secret.key</name><value>{S}</value>", "Hadoop/S3+Secret=1"),
    ("AWS access key id", "aws_access_key_id = {S}", "AKIAIOSFODNN7EXAMPLE"),
    ("AWS secret key", "aws_secret_access_key = {S}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("AWS key id in prose", "the key {S} was rotated", "AKIAI44QH8DHBEXAMPLE"),
    ("GCP private_key", '  "private_key": "{S}",', PEM_ONE_LINE),
    ("Azure storage account key", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={S};EndpointSuffix=core.windows.net",
     "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="),
    ("Azure SAS signature", "https://acct.blob.core.windows.net/c/f.txt?sv=2021-08-06&se=2030-01-01&sr=b&sp=r&sig={S}",
     "3fQ0dHc%2FkqyLhS9wr3a8pHnQ%3D"),
    ("Azure Service Bus key", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={S}",
     "xZp4cSO9kFQhX3u2mEw1T0rYb7nG5aV8dLk6jHs3QfM="),
    ("GitHub token in remote URL", "git remote set-url origin https://{S}@github.com/org/repo.git",
     "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("GitHub OAuth token", "    oauth_token: {S}", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("GitHub fine-grained token in a script", "echo {S} | gh auth login --with-token",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"),
    ("GitLab token", "GITLAB_TOKEN={S}", "glpat-xxXXxx1234567890ABCD"),
    ("GitLab token header", "curl --header 'PRIVATE-TOKEN: {S}' https://gitlab.example.com/api/v4/projects",
     "glpat-9aBcDeFgHiJkLmNoPqRs"),
    ("Slack bot token", "slack_bot = {S}", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("Slack webhook", "webhook_url: https://hooks.slack.com/services/{S}", "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("Stripe live key", "stripe.api_key = '{S}'", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("SendGrid key", "SENDGRID={S}", "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"),
    ("Twilio API key", "TWILIO_SID_KEY={S}", "SK2a0747c9bd8c0a4e2d8b1a5b6c7d8e9f"),
    ("Twilio auth token", "twilio_auth_token: {S}", "0123456789abcdef0123456789abcdef"),
    ("npm token", "//registry.npmjs.org/:_authToken={S}", "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("PyPI token", "password = {S}", "pypi-AgEIcHlwaS5vcmcCJGI4YmNhMDA5LTg0ZGUtNDM2MC1iZjA3LWY5ZTVjNzUxNTY3NQ"),
    ("Docker registry auth", '      "auth": "{S}"', "dXNlcm5hbWU6cGFzc3dvcmQ="),
    ("Google API key in a URL", "maps_url = https://maps.googleapis.com/maps/api/js?key={S}&v=3",
     "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
    ("Heroku API key", "HEROKU_API_KEY={S}", "01234567-89ab-cdef-0123-456789abcdef"),
    ("JWT in a custom header", 'curl -H "X-Session: {S}" https://api.example.com',
     "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("Bearer header", "Authorization: Bearer {S}", "mF_9.B5f-4.1JqM"),
    ("Basic header in curl", 'curl -H "Authorization: Basic {S}" https://x.example', "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("Digest proxy header", "Proxy-Authorization: Digest {S}",
     'username="bob", realm="proxy", nonce="dcd98b", response="6629fae49393a05397450978507c4ef1"'),
    ("Postgres URL", "DATABASE_URL=postgres://app:{S}@db.internal:5432/app", "S3cr3t!pg"),
    ("MongoDB SRV URL", "uri: mongodb+srv://admin:{S}@cluster0.abcde.mongodb.net/?retryWrites=true", "m0ng0Pass"),
    ("Redis URL without user", "REDIS_URL=redis://:{S}@cache:6379/0", "r3disPass"),
    ("AMQP URL", "broker_url = amqp://guest:{S}@rabbit//", "guestpw123"),
    ("SQL Server connection string", "Server=db;Database=app;User Id=sa;Password={S};", "Pa$$w0rd!"),
    ("ODBC connection string", "DRIVER={ODBC Driver 17};SERVER=db;UID=sa;PWD={S}", "odbcPw42"),
    ("JDBC query parameter", "jdbc:mysql://db:3306/app?user=app&password={S}&useSSL=true", "jdbcPw77"),
    ("redis.conf requirepass", "requirepass {S}", "foobared-2024"),
    ("redis.conf masterauth", "masterauth {S}", "replica-pw"),
    ("slapd rootpw", "rootpw {S}", "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
    ("wpa_supplicant psk", '    psk="{S}"', "wifi passphrase 123"),
    ("NetworkManager psk", "psk={S}", "HomeWifi2024!"),
    ("htpasswd line", "admin:{S}", "$apr1$ZjTqBB3f$IF9gdYAGlMrs2fuINjHsz."),
    ("shadow-style line", "bob:{S}:19500:0:99999:7:::", "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"),
    ("GRUB password hash", "password_pbkdf2 root {S}", "grub.pbkdf2.sha512.10000.6A1B2C3D4E5F.9F8E7D6C5B4A"),
    ("mysqldump in a script", "mysqldump -u backup -p{S} --all-databases > /backup/all.sql", "Backup#2024"),
    ("sshpass in a script", "sshpass -p '{S}' ssh deploy@host", "deploy pass"),
    ("curl user:password", "curl -u admin:{S} https://jenkins.local/api/json", "j3nkins"),
    ("OpenAI key", "client = OpenAI(api_key='{S}')", "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
    ("Anthropic key", 'headers = {{"x-api-key": "{S}"}}', "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"),
    ("private key in an env var", 'SSH_KEY="{S}"', PEM_ONE_LINE),
    ("DigitalOcean token", "DIGITALOCEAN_ACCESS_TOKEN={S}", "dop_v1_" + "a1" * 32),
    # found by hypothesis: an INI section's trailing comment hid the assignment after it from the rules
    ("after an INI section header", "[0]; 'password' => '{S}',", "22222222"),
    ("in a section header's comment", "[db] # password = {S}", "22222222"),
    ("Vault token", "VAULT_TOKEN={S}", "hvs.CAESIJ3vW0xQp1kFzq6rA8Y2nB5mT"),
    ("Databricks token", "token = {S}", "dapi0123456789abcdef0123456789abcdef"),
    ("Telegram bot token in a URL", "https://api.telegram.org/bot{S}/sendMessage", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"),
    ("Azure AD client secret", "AZURE_CLIENT_SECRET={S}", "Q~8Q~abcDEF.ghiJKL_mnoPQR-stuVWX1234"),
    ("Kubernetes secret data", "  password: {S}", "cGFzc3dvcmQxMjM="),
    ("kubeconfig client key", "    client-key-data: {S}", "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo="),
    ("kubeconfig token", "    token: {S}", "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9"),
    ("git config credential URL", "\turl = https://x-access-token:{S}@github.com/org/repo", "ghs_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("pip.conf index URL", "index-url = https://user:{S}@pypi.example.com/simple", "pipPass9"),
    (".npmrc _auth", "_auth = {S}", "dXNlcjpwYXNzd29yZA=="),
    ("Maven passphrase", "<passphrase>{S}</passphrase>", "gpg-signing-pass"),
    ("systemd Environment", "Environment=API_TOKEN={S}", "tok-42-secret"),
    ("command-line option", "ExecStart=/usr/bin/sync --client-secret={S} --verbose", "cs-77-secret"),
    ("API key header", "X-Api-Key: {S}", "k_live_8f7e6d5c4b3a"),
    ("Cookie header", "Cookie: {S}", "sessionid=abc123def456; csrftoken=xyz789"),
    ("Mailgun key", "MAILGUN={S}", "key-0123456789abcdef0123456789abcdef"),
    ("Shopify token", "SHOP={S}", "shpat_0123456789abcdef0123456789abcdef"),
    ("age secret key", "# secret: {S}", "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"),
    ("PHP define", "define('DB_PASSWORD', '{S}');", "wp-db-pass"),
    ("properties file", "spring.datasource.password={S}", "springPw1"),
    ("OpenVPN-style directive with quotes", 'secret "{S}";', "c2VjcmV0IGtleQ=="),
    ("PHP variable", "$db_pass = '{S}';", "php-db-pass"),
    ("Ruby instance variable", "  @api_token = '{S}'", "rb_tok_123"),
    ("netrc-style line in a script", "machine api.heroku.com login me@example.com password {S}", "herokuPw9"),
    ("key of several words", "Database Password = {S}", "two words"),
    ("self-closing XML element", '<Password value="{S}"/>', "xmlSelfClosing1"),
    ("MySQL SET PASSWORD", "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('{S}');", "sqlRootPw"),
    ("SQL IDENTIFIED BY", "CREATE USER 'app'@'%' IDENTIFIED WITH mysql_native_password BY '{S}';", "sqlAppPw"),
    ("password piped to passwd", "echo '{S}' | passwd --stdin bob", "pipedPw1"),
    ("password piped to chpasswd", "echo {S} | chpasswd", "bob:pipedPw2"),
    ("here-string to docker login", "docker login -u bob --password-stdin <<< {S}", "hereStringPw"),
    ("Windows net use", "net use Z: \\\\srv\\share {S} /user:ACME\\bob", "netUsePw"),
]


@pytest.mark.parametrize(("fmt", "template", "secret"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_hides_the_secret_and_keeps_the_rest(fmt, template, secret):
    line = template.replace("{S}", secret)
    out = redact_line(line)
    assert secret not in out
    assert out == template.replace("{S}", expected_marker(secret))


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 50
    assert len({c[2] for c in CORPUS}) >= 50


def test_marker_is_stable_and_differs_between_values():
    assert marker("hunter2") == expected_marker("hunter2") == marker("hunter2")
    assert marker("hunter2") != marker("hunter3")
    assert redact_line("password=hunter2") == redact_line("password=hunter2")


def test_a_marker_cannot_be_used_to_test_guesses_offline():
    # A bare SHA-256 prefix of "hunter2" would let anyone holding the log confirm the guess.
    assert hashlib.sha256(b"hunter2").hexdigest()[:8] not in marker("hunter2")
    code = "from agent.redact import marker; print(marker('hunter2'))"
    other_runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
                  for _ in range(2)}
    assert len(other_runs) == 2 and marker("hunter2") not in other_runs


def test_the_same_secret_gets_the_same_marker_in_any_format():
    outs = [redact_line(line) for line in ("password=hunter2", '"password": "hunter2"', "<password>hunter2</password>")]
    assert all(expected_marker("hunter2") in out for out in outs)


HARMLESS = [
    "max_keys = 10",
    "PasswordAuthentication yes",
    "PermitEmptyPasswords no",
    "KbdInteractiveAuthentication no",
    "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2",
    "HostKey /etc/ssh/ssh_host_ed25519_key",
    "SSLCertificateKeyFile /etc/ssl/private/site.key",
    "key_size = 2048",
    "token_expiry: 3600",
    "password_min_length = 12",
    "auth_method = password",
    "password required pam_unix.so obscure yescrypt",
    "session optional pam_keyinit.so force revoke",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
    "deb http://deb.debian.org/debian bookworm main contrib",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bob@laptop",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  archive.tar.gz",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "UUID=4b8f9c2e-1d3a-4f5b-9c7d-2e1f0a3b4c5d /boot ext4 defaults 0 2",
    "ExecStart=/usr/sbin/sshd -D $SSHD_OPTS",
    "127.0.0.1 localhost",
    "password: ${DB_PASSWORD}",
    'api_key: "{{ vault_api_key }}"',
    "password: |",
    "# Set the admin account below.",
    "server_tokens off;",
    "keyboard_layout = de",
    "X11Forwarding yes",
    "/usr/lib/x86_64-linux-gnu/libreoffice/program/soffice.bin --splash-pipe=5",
    "Exec=/usr/bin/python3 /opt/Tools/SomeApplicationName/launcher_Version2.py",
    # found over-redacted in a real /etc, then fixed:
    "Pin: origin deb.nodesource.com",
    "Pin-Priority: 600",
    "passwd:         files systemd",
    "kpasswd\t\t464/tcp",
    '[credential "https://source.developers.google.com"]',
    "mozilla/Entrust_Root_Certification_Authority_-_G2.crt",
    "mozilla/Autoridad_de_Certificacion_Firmaprofesional_CIF_A62634068.crt",
    "#HandlePowerKey=poweroff",
    "#   StrictHostKeyChecking ask",
    "keyUsage = nonRepudiation, digitalSignature, keyEncipherment",
    "# Trust Anchor Certificates - CA Basic Constraint check",
    "jdk.http.auth.tunneling.disabledSchemes=Basic",
    "<Key>q: Quit() \\n\\",
    "#password_encryption = scram-sha-256",
    "# the password expires after 90 days",
    "# METHOD can be \"trust\", \"reject\", \"md5\", \"password\", \"scram-sha-256\",",
    "EAP_PREAUTH\t88C7\t\t# EAPOL Pre-Authentication [802.11i]",
    "  map NMTOKEN #REQUIRED>",
]


@pytest.mark.parametrize("line", HARMLESS)
def test_harmless_lines_stay_as_they_are(line):
    assert redact_line(line) == line


def test_lines_around_a_secret_stay_readable():
    text = "[database]\nhost = db.internal\nport = 5432\npassword = hunter2\nuser = app\n"
    out = redact_text(text)
    assert out == f"[database]\nhost = db.internal\nport = 5432\npassword = {expected_marker('hunter2')}\nuser = app\n"


# -- things that span lines --------------------------------------------------


def test_pem_block_bodies_are_hidden_line_by_line():
    body = ["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW", "QyNTUxOQAAACDDKqp5Fc65tEnRulDqKiirGm4B+QvaJFotHYdpfRiiZQAAAJi0fbTetH20"]
    text = "comment: deploy\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END OPENSSH PRIVATE KEY-----\ndone\n"
    out = redact_text(text)
    assert all(b not in out for b in body)
    assert out.splitlines() == [
        "comment: deploy",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        expected_marker(body[0]),
        expected_marker(body[1]),
        "-----END OPENSSH PRIVATE KEY-----",
        "done",
    ]


def test_an_unterminated_pem_block_hides_everything_after_it():
    out = redact_text("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nmore: yes\n")
    assert "MIIEowIBAAKCAQEA" not in out and "more: yes" not in out


def test_a_pem_header_inside_a_line_does_not_hide_the_lines_after_it():
    text = '<mime type="application/pgp-keys" magic="-----BEGIN PGP PUBLIC KEY BLOCK-----" priority="50" />\n<next/>\n'
    assert redact_text(text).splitlines()[1] == "<next/>"


def test_a_stray_quote_stops_hiding_after_a_bounded_number_of_lines():
    lines = ['token = "unterminated'] + [f"line {i}" for i in range(300)]
    out = redact_text("\n".join(lines) + "\n").splitlines()
    assert "unterminated" not in out[0] and out[1] != "line 0"
    assert out[-1] == "line 299"  # hiding stopped well before the end


def test_certificates_are_hidden_too():
    out = redact_text("-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----\n")
    assert "MIIDdzCCAl" not in out


def test_yaml_block_scalar_under_a_secret_key():
    text = "tls:\n  private_key: |\n    MIIEvQIBADANBgkqhkiG9w0B\n    AQEFAASCBKcwggSjAgEAAoIB\n  cert_file: /etc/x.pem\nname: web\n"
    out = redact_text(text)
    assert "MIIEvQIBADANBgkqhkiG9w0B" not in out and "AQEFAASCBKcwggSjAgEAAoIB" not in out
    assert out.splitlines()[-2:] == ["  cert_file: /etc/x.pem", "name: web"]
    assert out.splitlines()[1] == "  private_key: |"


def test_yaml_block_scalar_under_a_harmless_key_stays():
    text = "script: |\n  echo hello\n  make all\n"
    assert redact_text(text) == text


def test_toml_multiline_string():
    text = 'name = "app"\nsecret = """\nline one\nline two\n"""\nport = 80\n'
    out = redact_text(text)
    assert "line one" not in out and "line two" not in out
    assert out.startswith('name = "app"\nsecret = """\n') and out.endswith('"""\nport = 80\n')


def test_shell_multiline_quoted_value():
    text = 'export TOKEN="first part\nsecond part"\necho done\n'
    out = redact_text(text)
    assert "first part" not in out and "second part" not in out
    assert out.endswith('"\necho done\n')


def test_xml_element_over_several_lines():
    text = "<config>\n  <password>\n    Sup3rS3cret\n  </password>\n  <user>bob</user>\n</config>\n"
    out = redact_text(text)
    assert "Sup3rS3cret" not in out
    assert "  <user>bob</user>" in out.splitlines()


def test_name_value_pairs_over_two_lines():
    text = "<property>\n  <name>javax.jdo.option.ConnectionPassword</name>\n  <value>HiveMetaPw</value>\n</property>\n"
    out = redact_text(text)
    assert "HiveMetaPw" not in out
    assert "  <name>javax.jdo.option.ConnectionPassword</name>" in out.splitlines()


def test_plist_password_key():
    text = "<dict>\n\t<key>Label</key>\n\t<string>com.example.agent</string>\n\t<key>Password</key>\n\t<string>PlistPw1</string>\n</dict>\n"
    out = redact_text(text)
    assert "PlistPw1" not in out
    assert "\t<key>Label</key>" in out and "\t<string>com.example.agent</string>" in out


def test_putty_private_key():
    text = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: eddsa-key-20240101\nPublic-Lines: 2\n"
        "AAAAC3NzaC1lZDI1NTE5AAAAIHsdRzv5\nPc6Ej6Ur6bbKRPKlGyI2\nPrivate-Lines: 1\nAAAAIDg2ODc4NzQ2MzkwNTgzMjE=\n"
        "Private-MAC: 2a6e9f1c3b5d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9\n"
    )
    out = redact_text(text)
    assert "AAAAIDg2ODc4NzQ2MzkwNTgzMjE=" not in out and "2a6e9f1c3b5d7e9f" not in out
    assert "Comment: eddsa-key-20240101" in out.splitlines()


def test_line_endings_are_kept():
    assert redact_text("a=1\r\npassword=x\r\nb=2") == f"a=1\r\npassword={expected_marker('x')}\r\nb=2"


def test_redact_line_given_several_lines_treats_them_as_text():
    assert redact_line("a=1\npassword=x") == f"a=1\npassword={expected_marker('x')}"


# -- command lines ------------------------------------------------------------

CMDLINES = [
    (["mysql", "-uroot", "-pS3cret", "shop"], [2], "S3cret"),
    (["/usr/bin/mysqldump", "--password=S3cret", "db"], [1], "S3cret"),
    (["sshpass", "-p", "hunter2", "ssh", "host"], [2], "hunter2"),
    (["curl", "-u", "bob:pw123", "https://x"], [2], "pw123"),
    (["env", "PGPASSWORD=pg-secret", "psql", "-h", "db"], [1], "pg-secret"),
    (["docker", "login", "-u", "bob", "-p", "dockerPw", "registry.io"], [5], "dockerPw"),
    (["ldapsearch", "-x", "-D", "cn=admin", "-w", "ldapPw", "-b", "dc=x"], [5], "ldapPw"),
    (["redis-cli", "-a", "redisPw", "ping"], [2], "redisPw"),
    (["smbclient", "//srv/share", "-U", "bob%smbPw"], [3], "smbPw"),
    (["xfreerdp", "/v:host", "/u:bob", "/p:rdpPw"], [3], "rdpPw"),
    (["plink", "-pw", "puttyPw", "host"], [2], "puttyPw"),
    (["openssl", "pkcs12", "-export", "-passout", "pass:p12pw", "-out", "a.p12"], [4], "pass:p12pw"),
    (["htpasswd", "-b", "/etc/nginx/.htpasswd", "bob", "webPw"], [4], "webPw"),
    (["app", "--api-token", "tok123456"], [2], "tok123456"),
    (["git", "clone", "https://bob:gitPw@git.example.com/r.git"], [2], "gitPw"),
    (["useradd", "-p", "$6$salt$hashhashhash", "eve"], [2], "$6$salt$hashhashhash"),
    (["7z", "x", "-parchivePw", "a.7z"], [2], "archivePw"),
    (["mysqladmin", "-u", "root", "password", "newRootPw"], [4], "newRootPw"),
    (["sh", "-c", "mysql -u root -pShellPw db"], [2], "ShellPw"),
    (["ssh-keygen", "-t", "ed25519", "-N", "keyPass", "-f", "k"], [4], "keyPass"),
]


@pytest.mark.parametrize(("argv", "changed", "secret"), CMDLINES, ids=[a[0] for a, _, _ in CMDLINES])
def test_cmdline_hides_secret_arguments_only(argv, changed, secret):
    out = redact_cmdline(argv)
    assert len(out) == len(argv)
    assert all(secret not in arg for arg in out)
    assert [i for i, (a, b) in enumerate(zip(argv, out)) if a != b] == changed
    assert any(expected_marker(secret) in arg for arg in out)


@pytest.mark.parametrize(
    "argv",
    [
        ["ssh", "-p", "2222", "host"],
        ["docker", "run", "-p", "8080:80", "nginx"],
        ["psql", "--no-password", "-h", "db", "app"],
        ["mysql", "-p", "shop"],
        ["sleep", "30"],
        ["python3", "-m", "http.server", "--bind", "127.0.0.1"],
        ["app", "--password-file", "/run/secrets/pw"],
    ],
)
def test_cmdline_without_secrets_is_unchanged(argv):
    assert redact_cmdline(argv) == argv


# -- diffs ----------------------------------------------------------------------


def test_diff_shows_that_a_secret_changed_without_showing_it():
    diff = redact_diff("/etc/app.conf", "host=db\npassword=old-pw\n", "host=db\npassword=new-pw\n")
    assert "old-pw" not in diff and "new-pw" not in diff
    assert f"-password={expected_marker('old-pw')}\n" in diff
    assert f"+password={expected_marker('new-pw')}\n" in diff
    assert " host=db\n" in diff
    assert diff.startswith("--- /etc/app.conf\n+++ /etc/app.conf\n")


def test_diff_of_created_and_deleted_files():
    created = redact_diff("/etc/new.conf", None, "token=abc123\n")
    assert created.startswith("--- /dev/null\n+++ /etc/new.conf\n") and "abc123" not in created
    deleted = redact_diff("/etc/old.conf", "a=1\n", None)
    assert deleted.startswith("--- /etc/old.conf\n+++ /dev/null\n") and "-a=1\n" in deleted


def test_diff_marks_a_missing_final_newline():
    diff = redact_diff("/etc/x.conf", "a=1\n", "a=1\nb=2")
    assert diff.endswith("+b=2\n\\ No newline at end of file\n")


def test_diff_of_identical_texts_is_empty():
    assert redact_diff("/etc/x.conf", "a=1\n", "a=1\n") == ""


def test_diff_of_a_secret_file_is_none():
    assert redact_diff("/home/bob/.ssh/id_ed25519", "a", "b") is None
    assert redact_diff("/etc/shadow", "root:x:1\n", "root:y:1\n") is None


# -- files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/home/bob/.ssh/id_rsa", "/home/bob/.ssh/id_ed25519", "/root/.ssh/id_ecdsa_sk", "/etc/ssh/ssh_host_rsa_key",
        "/etc/ssl/private/site.key", "/etc/letsencrypt/live/x/privkey.pem", "/home/bob/cert.p12", "C:\\Users\\bob\\cert.pfx",
        "/home/bob/.netrc", "/home/bob/.pgpass", "/etc/shadow", "/etc/gshadow", "/etc/shadow-",
        "/home/bob/.local/share/keyrings/login.keyring", "/home/bob/.config/google-chrome/Default/Login Data",
        "/home/bob/.config/chromium/Default/Cookies", "/home/bob/.mozilla/firefox/x.default/logins.json",
        "/home/bob/.mozilla/firefox/x.default/key4.db", "/home/bob/.mozilla/firefox/x.default/cookies.sqlite",
        "/home/bob/.git-credentials", "/home/bob/.aws/credentials", "/home/bob/.config/gcloud/credentials.db",
        "/home/bob/.config/gcloud/application_default_credentials.json", "/home/bob/.azure/msal_token_cache.json",
        "/home/bob/Passwords.kdbx", "/home/bob/.gnupg/private-keys-v1.d/ABC.key", "/home/bob/work.ppk",
        "/etc/krb5.keytab", "/etc/ppp/chap-secrets", "/etc/postfix/sasl_passwd",
    ],
)
def test_secret_files(path):
    assert is_secret_file(path)


@pytest.mark.parametrize(
    "path",
    [
        "/home/bob/.ssh/id_rsa.pub", "/home/bob/.ssh/authorized_keys", "/home/bob/.ssh/config", "/etc/ssh/sshd_config",
        "/etc/ssh/ssh_host_rsa_key.pub", "/etc/passwd", "/etc/group", "/etc/hosts", "/home/bob/.bashrc",
        "/home/bob/.aws/config", "/etc/nginx/nginx.conf", "/home/bob/keys.txt",
    ],
)
def test_ordinary_files(path):
    assert not is_secret_file(path)


def test_text_config_detection():
    assert is_text_config("/etc/nginx/nginx.conf", b"server {\n  listen 80;\n}\n")
    assert is_text_config("/etc/hosts", "127.0.0.1 h\u00f6st\n".encode())
    assert is_text_config("/etc/x.conf", "caf\u00e9".encode()[:-1])  # a character cut by the sample's end
    assert not is_text_config("/usr/bin/ls", b"\x7fELF\x02\x01\x01\x00\x00")
    assert not is_text_config("/etc/latin1.conf", b"caf\xe9 au lait\n")
    assert not is_text_config("/var/log/syslog.log", b"Nov 22 line\n")
    assert not is_text_config("/etc/app/bundle.json", b"{" + b'"a":1,' * 3000 + b"}")
    assert not is_text_config("/home/bob/.ssh/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----\n")


# -- whole files (tests/data/redaction: each file with a .secrets list) ------------

DATA = Path(__file__).resolve().parent.parent / "data" / "redaction"
FIXTURES = sorted(p for p in DATA.iterdir() if not p.name.endswith(".secrets"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_realistic_files_hide_their_secrets_and_nothing_else(path):
    text = path.read_text()
    secrets = [s for s in (path.parent / (path.name + ".secrets")).read_text().splitlines() if s]
    out = redact_text(text)
    for secret in secrets:
        assert secret not in out
    for before, after in zip(text.splitlines(), out.splitlines(), strict=True):
        if any(secret in before for secret in secrets):
            assert after != before
        else:
            assert after == before, "a line without a secret changed"


def test_fixture_corpus_covers_many_formats():
    assert len(FIXTURES) >= 8


def test_only_newlines_end_lines():
    # str.splitlines() would cut here, and "rest" would escape the rule that sees "password=".
    for sep in ("\x0b", "\x0c", "\x1c", "\x85", "\u2028"):
        out = redact_text(f"password=secret{sep}rest\nnext=1\n")
        assert "rest" not in out and out.endswith("\nnext=1\n")
