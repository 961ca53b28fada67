"""Command lines of the programs technicians use: as a process's argv, and inside a shell line."""

from __future__ import annotations

import pytest

from agent.redact import Redactor, redact_cmdline, redact_line, redact_text

# (argv, the exact secret that must not survive)
ARGV = [
    (["lftp", "-u", "bob,lftpPw1", "sftp://files.example"], "lftpPw1"),
    (["lftp", "-e", "open -u bob,lftpPw2 files.example; mirror", "x"], "lftpPw2"),
    (["nmcli", "dev", "wifi", "connect", "HomeNet", "password", "wifiPw123"], "wifiPw123"),
    (["nmcli", "con", "modify", "Home", "wifi-sec.psk", "pskValue9"], "pskValue9"),
    (["nmcli", "con", "add", "type", "vpn", "vpn.secrets", "password=vpnPw77"], "vpnPw77"),
    (["smbclient", "//fs01/share", "smbPwPositional", "-U", "bob"], "smbPwPositional"),
    (["smbclient", "//fs01/share", "-U", "bob%smbPw2"], "smbPw2"),
    (["sqlplus", "scott/tigerPw1@orcl"], "tigerPw1"),
    (["sqlplus", "-s", "system/oraPw2@//db:1521/XE"], "oraPw2"),
    (["expdp", "userid=scott/tigerPw3@orcl", "schemas=scott"], "tigerPw3"),
    (["git", "clone", "https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/org/r.git"],
     "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    (["git", "clone", "https://oauth2:glpatShort99@gitlab.example/r.git"], "glpatShort99"),
    (["git", "clone", "https://Zx8vQ2mN5pL7kR3t@git.example/r.git"], "Zx8vQ2mN5pL7kR3t"),
    (["vault", "login", "s.Abcdefghij0123456789wxyz"], "s.Abcdefghij0123456789wxyz"),
    (["vault", "login", "vaultTokenPlain42"], "vaultTokenPlain42"),
    (["vault", "login", "-method=userpass", "username=bob", "password=vaultPw5"], "vaultPw5"),
    (["az", "login", "-u", "bob@example.com", "-p", "azPw123!"], "azPw123!"),
    (["az", "login", "--service-principal", "-u", "app", "--password", "spSecret9", "--tenant", "t"], "spSecret9"),
    (["curl", "-ubob:curlPw1", "https://x.example"], "curlPw1"),
    (["curl", "--user=bob:curlPw2", "https://x.example"], "curlPw2"),
    (["curl", "-u", "bob:curlPw3", "https://x.example"], "curlPw3"),
    (["sshpass", "-p", "sshpassPw1", "ssh", "host"], "sshpassPw1"),
    (["sshpass", "-psshpassPw2", "ssh", "host"], "sshpassPw2"),
    (["psql", "postgresql://app:psqlPw1@db:5432/app"], "psqlPw1"),
    (["psql", "host=db user=app password=psqlPw2 dbname=app"], "psqlPw2"),
    (["psql", "-d", "postgres://app:psqlPw3@db/app?sslmode=require"], "psqlPw3"),
    (["redis-cli", "-a", "redisPw1", "ping"], "redisPw1"),
    (["redis-cli", "-h", "cache", "AUTH", "default", "redisPw2"], "redisPw2"),
    (["redis-cli", "CONFIG", "SET", "requirepass", "redisPw3"], "redisPw3"),
    (["redis-cli", "-u", "redis://default:redisPw4@cache:6379"], "redisPw4"),
    (["mongosh", "mongodb+srv://admin:mongoPw1@cluster0.example.net/app"], "mongoPw1"),
    (["mongosh", "--username", "admin", "--password", "mongoPw2"], "mongoPw2"),
    (["htpasswd", "-b", "/etc/nginx/.htpasswd", "bob", "htPw1"], "htPw1"),
    (["htpasswd", "-bc", "/etc/apache2/.htpasswd", "bob", "htPw2"], "htPw2"),
    (["htpasswd", "-nb", "bob", "htPw3"], "htPw3"),
    (["openssl", "enc", "-aes-256-cbc", "-pass", "pass:osslPw1", "-in", "a"], "osslPw1"),
    (["openssl", "rsa", "-passin", "pass:osslPw2", "-in", "k.pem"], "osslPw2"),
    (["openssl", "pkcs12", "-export", "-passout", "pass:osslPw3"], "osslPw3"),
    (["docker", "login", "-u", "bob", "-p", "dockerPw1", "registry.example"], "dockerPw1"),
    (["docker", "login", "--password=dockerPw2", "registry.example"], "dockerPw2"),
    (["kubectl", "--token", "kubeTok3n1", "get", "pods"], "kubeTok3n1"),
    (["kubectl", "--token=kubeTok3n2", "get", "pods"], "kubeTok3n2"),
    (["kubectl", "create", "secret", "generic", "db", "--from-literal=password=kubePw3"], "kubePw3"),
    (["aws", "configure", "set", "aws_secret_access_key", "awsSecret1"], "awsSecret1"),
    (["aws", "configure", "set", "default.aws_session_token", "awsSession2"], "awsSession2"),
    (["env", "PGPASSWORD=pgEnvPw1", "psql", "-h", "db"], "pgEnvPw1"),
    (["env", "MYSQL_PWD=myEnvPw2", "mysql", "-h", "db"], "myEnvPw2"),
    (["ipmitool", "-I", "lanplus", "-H", "bmc", "-U", "admin", "-P", "ipmiPw1", "power", "status"], "ipmiPw1"),
    (["keytool", "-importkeystore", "-srcstorepass", "ksPw1", "-deststorepass", "ksPw2"], "ksPw1"),
    (["wpa_passphrase", "HomeNet", "wpaPassphrase1"], "wpaPassphrase1"),
    (["rabbitmqctl", "change_password", "bob", "rabbitPw1"], "rabbitPw1"),
    (["mount", "-t", "cifs", "//fs/share", "/mnt", "-o", "username=bob,password=cifsPw1"], "cifsPw1"),
]


@pytest.mark.parametrize(("argv", "secret"), ARGV, ids=[" ".join(a[:2]) + f" {s}" for a, s in ARGV])
def test_argv_hides_the_secret(argv, secret):
    out = redact_cmdline(argv)
    assert len(out) == len(argv)
    assert all(secret not in arg for arg in out)
    assert out[0] == argv[0]


# The same commands typed on a shell line (a script, `sh -c`, a history line)
SHELL = [
    ("lftp -u bob,lftpPw1 sftp://files.example", "lftpPw1"),
    ("nmcli dev wifi connect HomeNet password wifiPw123", "wifiPw123"),
    ("smbclient //fs01/share smbPwPositional -U bob", "smbPwPositional"),
    ("sqlplus scott/tigerPw1@orcl @report.sql", "tigerPw1"),
    ("git clone https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/org/r.git", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("vault login vaultTokenPlain42", "vaultTokenPlain42"),
    ("az login -u bob@example.com -p 'azPw123!'", "azPw123!"),
    ("curl -ubob:curlPw1 https://x.example", "curlPw1"),
    ("sshpass -p sshpassPw1 ssh host", "sshpassPw1"),
    ("psql 'postgresql://app:psqlPw1@db:5432/app'", "psqlPw1"),
    ("redis-cli -a redisPw1 ping", "redisPw1"),
    ("mongosh mongodb://admin:mongoPw1@db/app", "mongoPw1"),
    ("htpasswd -b /etc/nginx/.htpasswd bob htPw1", "htPw1"),
    ("openssl rsa -passin pass:osslPw2 -in k.pem", "osslPw2"),
    ("docker login -u bob -p dockerPw1 registry.example", "dockerPw1"),
    ("kubectl --token kubeTok3n1 get pods", "kubeTok3n1"),
    ("aws configure set aws_secret_access_key awsSecret1", "awsSecret1"),
    ("echo ghToken0123456789abcdefXYZ | gh auth login --with-token", "ghToken0123456789abcdefXYZ"),
    ("gh auth login --with-token <<< ghToken0123456789abcdefXYZ", "ghToken0123456789abcdefXYZ"),
    ("PGPASSWORD=pgEnvPw1 psql -h db -U app", "pgEnvPw1"),
    ("MYSQL_PWD='myEnvPw2' mysqldump shop > /tmp/shop.sql", "myEnvPw2"),
    ("chpasswd <<< 'bob:hereStringPw'", "bob:hereStringPw"),
    ("vault login - <<< vaultStdinTok9", "vaultStdinTok9"),
    ("echo 'dockerStdinPw' | docker login --password-stdin -u bob registry", "dockerStdinPw"),
]


@pytest.mark.parametrize(("line", "secret"), SHELL, ids=[s for _, s in SHELL])
def test_shell_line_hides_the_secret(line, secret):
    assert secret not in redact_line(line)
    assert secret not in redact_cmdline(["sh", "-c", line])[2]


def test_an_environment_assignment_hides_its_value_not_the_command():
    out = redact_line("PGPASSWORD=pgEnvPw1 psql -h db -U app")
    assert out.endswith(" psql -h db -U app") and "pgEnvPw1" not in out


HEREDOCS = [
    ("chpasswd <<EOF\nbob:heredocPw1\nalice:heredocPw2\nEOF\necho done\n", ["bob:heredocPw1", "alice:heredocPw2"]),
    ("docker login -u bob --password-stdin registry <<-'END'\n\theredocPw3\n\tEND\nls\n", ["heredocPw3"]),
    ("gh auth login --with-token << TOKEN\ngho_16C7e42F292c6912E7710c838347Ae178B4a\nTOKEN\n", ["gho_16C7e42F292c6912E7710c838347Ae178B4a"]),
    ("cat > /etc/app.conf <<EOF\nhost=db\npassword=heredocPw4\nEOF\n", ["heredocPw4"]),
]


@pytest.mark.parametrize(("script", "secrets"), HEREDOCS, ids=["chpasswd", "docker", "gh", "cat"])
def test_here_documents(script, secrets):
    out = redact_text(script)
    assert all(s not in out for s in secrets)
    assert out.count("\n") == script.count("\n")
    assert all(s not in redact_cmdline(["bash", "-c", script])[2] for s in secrets)


def test_the_body_of_an_ordinary_here_document_stays_readable():
    script = "cat > /etc/motd <<EOF\nWelcome to the server\nEOF\necho done\n"
    assert redact_text(script) == script


@pytest.mark.parametrize(
    "argv",
    [
        ["ssh", "-p", "2222", "host"],
        ["nmcli", "con", "show"],
        ["nmcli", "con", "add", "type", "wifi", "wifi-sec.key-mgmt", "wpa-psk"],
        ["smbclient", "-L", "//fs01", "-N"],
        ["sqlplus", "/nolog"],
        ["sqlplus", "-s", "/", "as", "sysdba"],
        ["git", "clone", "https://bob@github.com/org/repo.git"],
        ["git", "clone", "https://github.com/org/repo.git"],
        ["vault", "status"],
        ["az", "vm", "list", "-o", "table"],
        ["curl", "-fsSL", "https://example.com/install.sh"],
        ["redis-cli", "-h", "cache", "ping"],
        ["aws", "configure", "set", "region", "eu-west-1"],
        ["lftp", "-e", "mirror /pub /srv", "ftp.example"],
        ["psql", "-h", "db", "-U", "app", "-c", "select 1"],
        ["openssl", "x509", "-in", "cert.pem", "-noout", "-text"],
        ["docker", "run", "-p", "8080:80", "nginx"],
        ["kubectl", "get", "pods", "-n", "web"],
    ],
)
def test_harmless_command_lines_stay(argv):
    assert redact_cmdline(argv) == argv


def test_a_known_secret_in_a_sed_expression_hides_the_new_value_too():
    r = Redactor()
    r.learn("host=db\npassword=OLDPASSWORD\n", "/srv/service.conf")
    out = r.redact_cmdline(["sed", "-i", "s/OLDPASSWORD/NEWPASSWORD/", "/srv/service.conf"])
    assert "OLDPASSWORD" not in " ".join(out) and "NEWPASSWORD" not in " ".join(out)
    assert out[0:2] == ["sed", "-i"] and out[3] == "/srv/service.conf"
    assert r.knows("NEWPASSWORD")
    assert "NEWPASSWORD" not in r.redact_line("echo NEWPASSWORD > /tmp/x")
