"""Secret file formats: hashes only, or their secrets hidden line by line, or read by value shape."""

from __future__ import annotations

import pytest

from agent.redact import Redactor, is_secret_file, redact_diff, redact_text


@pytest.mark.parametrize(
    "path",
    [
        "/etc/openvpn/client/auth.txt", "/etc/openvpn/login.conf.pass", "/etc/openvpn/credentials",
        "/etc/openvpn/client/office.auth", "/etc/openvpn/userpass",
        "/etc/exim4/passwd.client", "/etc/postfix/sasl_passwd", "/etc/postfix/sasl_passwd.db",
        "/etc/ipsec.secrets", "/root/.smbcredentials", "/etc/davfs2/secrets",
    ],
)
def test_credential_files_are_secret_files(path):
    assert is_secret_file(path)
    assert redact_diff(path, "a\n", "b\n") is None


@pytest.mark.parametrize("path", ["/etc/openvpn/client/office.conf", "/etc/openvpn/server.ovpn", "/etc/openvpn/ca.crt",
                                  "/etc/openvpn/update-resolv-conf.sh", "/etc/exim4/exim4.conf.template"])
def test_openvpn_configurations_are_not(path):
    assert not is_secret_file(path)


ENV = (
    "APP_NAME=Shop\nAPP_ENV=production\nAPP_DEBUG=false\nAPP_URL=https://shop.example.com\nDB_HOST=10.0.0.5\n"
    "DB_PORT=5432\nLOG_LEVEL=debug\nTZ=Europe/Berlin\nMAIL_FROM=noreply@example.com\nSESSION_LIFETIME=120\n"
    "VALUE_1=a8f5f167f44f4964e6c998dee827110c\nVALUE_2=Zm9vYmFyYmF6cXV4\nVALUE_3='q7T!x9#Lm2'\nEXTRA=hunter2hunter2\n"
)
ENV_SECRETS = ["a8f5f167f44f4964e6c998dee827110c", "Zm9vYmFyYmF6cXV4", "q7T!x9#Lm2", "hunter2hunter2"]


def test_env_file_values_are_judged_by_shape_whatever_the_key():
    out = redact_text(ENV, path="/srv/app/.env")
    assert all(s not in out for s in ENV_SECRETS)
    kept = [line for line in out.splitlines() if "redacted" not in line]
    assert kept == ENV.splitlines()[:10]


def test_the_same_lines_outside_an_env_file_keep_neutral_values():
    out = redact_text("VALUE_2=Zm9vYmFyYmF6cXV4\n", path="/etc/app/settings.conf")
    assert out == "VALUE_2=Zm9vYmFyYmF6cXV4\n"


def test_a_diff_of_an_env_file_hides_by_shape():
    diff = redact_diff("/srv/app/.env.production", "VALUE_1=oldTok3nValue9\n", "VALUE_1=newTok3nValue9\n")
    assert "oldTok3nValue9" not in diff and "newTok3nValue9" not in diff


# (path, text, secrets): each secret must not survive, and the line count is kept
FILES = [
    ("/root/.docker/config.json",
     ('{\n  "auths": {\n    "registry.example": {\n      "auth": "Ym9iOmRvY2tlclB3MQ=="\n    }\n  },\n'
     '  "identitytoken": "idTok3nValue55"\n}\n'), ["Ym9iOmRvY2tlclB3MQ==", "idTok3nValue55"]),
    ("/root/.kube/config",
     ("users:\n- name: admin\n  user:\n    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=\n"
     "    token: kubeTok3nValue1\n    password: kubePw1\n"), ["LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=", "kubeTok3nValue1", "kubePw1"]),
    ("/root/.config/rclone/rclone.conf",
     ("[s3]\ntype = s3\naccess_key_id = AKIAIOSFODNN7EXAMPLE\nsecret_access_key = rcloneSecret1\n[drive]\n"
     'token = {"access_token":"ya29.a0Afh6SMBxyz0123456789abcdef","refresh_token":"1//0gRefreshTok"}\npass = rclObscured9\n'),
     ["AKIAIOSFODNN7EXAMPLE", "rcloneSecret1", "ya29.a0Afh6SMBxyz0123456789abcdef", "1//0gRefreshTok", "rclObscured9"]),
    ("/root/.s3cfg",
     "[default]\naccess_key = AKIAI44QH8DHBEXAMPLE\nsecret_key = s3cmdSecret1\ngpg_passphrase = s3cmdGpg2\nhost_base = s3.amazonaws.com\n",
     ["AKIAI44QH8DHBEXAMPLE", "s3cmdSecret1", "s3cmdGpg2"]),
    ("/etc/boto.cfg",
     ("[Credentials]\naws_access_key_id = AKIAI44QH8DHBEXAMPLE\naws_secret_access_key = botoSecret1\n"
     "gs_oauth2_refresh_token = botoRefresh2\n"), ["AKIAI44QH8DHBEXAMPLE", "botoSecret1", "botoRefresh2"]),
    ("/etc/wpa_supplicant/wpa_supplicant.conf",
     ('network={\n  ssid="Home"\n  psk="wpa secret phrase"\n}\nnetwork={\n  ssid="Office"\n  key_mgmt=WPA-EAP\n'
     '  identity="bob"\n  password="eapPw1"\n  private_key_passwd="keyPw2"\n  wep_key0=0102030405\n}\n'),
     ["wpa secret phrase", "eapPw1", "keyPw2", "0102030405"]),
    ("/etc/NetworkManager/system-connections/Home.nmconnection",
     ("[connection]\nid=Home\ntype=wifi\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=nmPsk12345\n[802-1x]\npassword=nmPw2\n"
     "[vpn-secrets]\nXauth password=nmXauth3\n[wireguard]\nprivate-key=yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"),
     ["nmPsk12345", "nmPw2", "nmXauth3", "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="]),
    ("/etc/openvpn/client/office.ovpn",
     ("client\nremote vpn.example 1194\n<auth-user-pass>\nbob\novpnInlinePw\n</auth-user-pass>\n<tls-auth>\n"
     "-----BEGIN OpenVPN Static key V1-----\n0123456789abcdef0123456789abcdef\n-----END OpenVPN Static key V1-----\n</tls-auth>\nverb 3\n"),
     ["ovpnInlinePw", "0123456789abcdef0123456789abcdef"]),
    ("/etc/msmtprc", "account default\nhost smtp.example\nuser bob\npassword msmtpPw1\n", ["msmtpPw1"]),
    ("/root/.fetchmailrc", "poll mail.example protocol imap user bob password fetchPw1\n", ["fetchPw1"]),
]


@pytest.mark.parametrize(("path", "text", "secrets"), FILES, ids=[f[0].rsplit("/", 1)[-1] for f in FILES])
def test_secret_file_formats(path, text, secrets):
    assert not is_secret_file(path)
    out = redact_text(text, path)
    assert all(s not in out for s in secrets), out
    assert out.count("\n") == text.count("\n")
    assert out.splitlines()[0].split()[0] == text.splitlines()[0].split()[0]  # the structure stays readable


@pytest.mark.parametrize(
    ("path", "text", "password"),
    [
        ("/etc/exim4/passwd.client", "*.example.com:bob:eximPw1\n", "eximPw1"),
        ("/etc/postfix/sasl_passwd", "[smtp.example]:587 bob:saslPw2\n", "saslPw2"),
        ("/root/.pgpass", "db:5432:*:app:pgpassPw3\n", "pgpassPw3"),
        ("/root/.netrc", "machine api.example login bob password netrcPw4\n", "netrcPw4"),
        ("/root/.git-credentials", "https://bob:gitcredPw5@git.example\n", "gitcredPw5"),
        ("/etc/openvpn/client/auth.txt", "bob\novpnFilePw6\n", "ovpnFilePw6"),
        ("/etc/ppp/chap-secrets", 'bob * "chapPw7" *\n', "chapPw7"),
    ],
)
def test_learning_a_secret_file_hides_its_password_later(path, text, password):
    r = Redactor()
    assert r.learn(text, path) >= 1
    out = r.redact_cmdline(["sh", "-c", f"echo {password} > /tmp/x"])
    assert password not in out[2]
    assert password not in r.hide_known(f"/tmp/{password}.bak")
