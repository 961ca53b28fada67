"""Inventory parsers on recorded outputs (tests/data/inventory), and on arbitrary text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.inventory.accounts import (
    admin_groups_of,
    parse_group,
    parse_passwd,
    parse_sudoers,
)
from agent.capture.inventory.authorized_keys import (
    expand_keys_file,
    parse_authorized_keys,
    parse_authorized_keys_files,
)
from agent.capture.inventory.autostart import parse_desktop_entry
from agent.capture.inventory.listening import listening_items
from agent.capture.inventory.packages import (
    parse_dist_info_name,
    parse_dpkg_query,
    parse_rpm_qa,
)
from agent.capture.inventory.scheduled import parse_crontab
from agent.capture.inventory.services import (
    merge_units,
    parse_systemctl_list_unit_files,
    parse_systemctl_list_units,
)
from tests.conftest import require_program

DATA = Path(__file__).resolve().parent.parent / "data" / "inventory"


def data(name: str) -> str:
    return (DATA / name).read_text()


def test_dpkg_query_keeps_present_packages_with_their_state():
    pkgs = parse_dpkg_query(data("dpkg-query.txt"))
    assert pkgs["bash"] == {"name": "bash", "version": "5.2.15-2+b7", "arch": "amd64"}
    assert pkgs["libc6:i386"]["name"] == "libc6" and pkgs["libc6:amd64"]["arch"] == "amd64"
    assert pkgs["openssh-server"]["version"] == "1:9.2p1-2+deb12u5"
    assert pkgs["postgresql-15"]["state"] == "half-configured"
    assert "python3-old" not in pkgs and "vim" not in pkgs  # removed: config files only, or never installed
    assert len(pkgs) == 7


def test_rpm_qa_merges_several_versions_and_drops_epoch_zero():
    pkgs = parse_rpm_qa(data("rpm-qa.txt"))
    assert pkgs["bash.x86_64"] == {"name": "bash", "version": "5.1.8-9.el9", "arch": "x86_64"}
    assert pkgs["kernel-core.x86_64"]["version"] == "5.14.0-427.13.1.el9_4, 5.14.0-503.14.1.el9_5"
    assert pkgs["shadow-utils.x86_64"]["version"] == "2:4.9-9.el9"
    assert pkgs["gpg-pubkey.(none)"]["name"] == "gpg-pubkey"


@pytest.mark.parametrize(
    ("dirname", "expected"),
    [
        ("requests-2.31.0.dist-info", ("requests", "2.31.0")),
        ("typing_extensions-4.12.2.dist-info", ("typing-extensions", "4.12.2")),
        ("PyYAML-6.0.1.dist-info", ("pyyaml", "6.0.1")),
        ("pyngrok-7.0.0-py3.11.egg-info", ("pyngrok", "7.0.0")),
        ("zope.interface-6.0.dist-info", ("zope-interface", "6.0")),
        ("requests", None),
        ("__pycache__", None),
        ("README.txt", None),
    ],
)
def test_dist_info_names(dirname, expected):
    assert parse_dist_info_name(dirname) == expected


def test_passwd_never_keeps_the_password_field_and_skips_junk():
    users = parse_passwd(data("passwd"))
    assert users["root"] == {"uid": 0, "gid": 0, "home": "/root", "shell": "/bin/bash"}
    assert users["alice"]["home"] == "/home/alice"
    assert set(users) == {"root", "daemon", "bin", "sshd", "alice", "bob", "svc-backup"}
    assert all("x" not in u.values() for u in users.values())


def test_group_members_and_admin_groups():
    groups = parse_group(data("group"))
    assert groups["users"]["members"] == ["alice", "bob"]
    assert groups["sudo"] == {"gid": 27, "members": ["alice"], "admin": True}
    assert groups["wheel"]["admin"] and not groups["adm"]["admin"]
    users = parse_passwd(data("passwd"))
    admins = admin_groups_of(users, groups)
    assert admins["alice"] == ["sudo"] and admins["bob"] == []


def test_admin_by_primary_group():
    users = parse_passwd("eve:x:1005:27::/home/eve:/bin/sh\n")
    groups = parse_group("sudo:x:27:\n")
    assert admin_groups_of(users, groups) == {"eve": ["sudo"]}


def test_sudoers_rules_includes_and_continuations():
    rules, includes = parse_sudoers(data("sudoers"))
    assert "root ALL=(ALL:ALL) ALL" in rules
    assert "%sudo ALL=(ALL:ALL) ALL" in rules
    assert "Cmnd_Alias BACKUP = /usr/bin/rsync, /usr/bin/tar" in rules
    assert "#1001 ALL=(ALL) NOPASSWD: BACKUP" in rules  # a uid, not a comment
    assert "svc-backup ALL=(root) NOPASSWD: BACKUP" in rules
    assert not any("MUST be edited" in r for r in rules)
    assert includes == [("includedir", "/etc/sudoers.d"), ("include", "/etc/sudoers.local")]


def test_sudoers_rules_are_redacted():
    rules, _ = parse_sudoers('Defaults env_keep += "API_TOKEN"\nbob ALL=NOPASSWD: /usr/bin/tool --password=hunter2\n')
    assert not any("hunter2" in r for r in rules)
    assert rules[1].startswith("bob ALL=NOPASSWD: /usr/bin/tool --password=[redacted: sha256 ")


def test_sudo_tags_stay_readable():
    rules, _ = parse_sudoers("eve ALL=(ALL) NOPASSWD: ALL\nbob ALL = PASSWD: /bin/ls, NOEXEC: /usr/bin/vi\n")
    assert rules == ["eve ALL=(ALL) NOPASSWD: ALL", "bob ALL = PASSWD: /bin/ls, NOEXEC: /usr/bin/vi"]


def test_crontab_system_and_user():
    jobs = parse_crontab(data("crontab"), system=True)
    assert {"schedule": "17 * * * *", "user": "root", "command": "cd / && run-parts --report /etc/cron.hourly"} in jobs
    assert {"schedule": "*/5 * * * *", "user": "www-data", "command": "/usr/bin/php /var/www/cron.php"} in jobs
    reboot = next(j for j in jobs if j["schedule"] == "@reboot")
    assert reboot["user"] == "root" and "ak_live_123456789" not in reboot["command"]
    assert len(jobs) == 4  # env lines, comments and "not a job" are not jobs
    user_jobs = parse_crontab(data("crontab.user"), system=False)
    assert [j["schedule"] for j in user_jobs] == ["0 3 * * *", "@hourly"]
    assert "alicePw123" not in user_jobs[0]["command"] and "> /dev/null 2>&1" in user_jobs[0]["command"]
    assert user_jobs[1] == {"schedule": "@hourly", "command": "curl -s https://example.com/ping"}


def test_authorized_keys_fingerprints_match_ssh_keygen(tmp_path):
    require_program("ssh-keygen")
    keys = parse_authorized_keys(data("authorized_keys"))
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(DATA / "authorized_keys")], capture_output=True, text=True, check=True
    ).stdout
    real = [line.split()[1] for line in listed.splitlines()]
    parsed = [k["fingerprint"] for k in keys if k["type"] != "unrecognised"]
    assert parsed == real
    assert len(keys) == 6


def test_authorized_keys_options_comments_and_bad_lines():
    keys = parse_authorized_keys(data("authorized_keys"))
    assert keys[0]["comment"] == "alice@laptop" and keys[0]["options"] == ""
    assert keys[1]["type"] == "ssh-rsa" and keys[1]["comment"] == "bob work key"
    assert keys[1]["options"].startswith('from="10.0.0.0/8,192.168.1.*",no-agent-forwarding,command="')
    assert "tok-S3cretBackup" not in keys[1]["options"]
    assert keys[2]["options"] == "restrict,pty" and keys[2]["type"] == "ecdsa-sha2-nistp256"
    assert keys[3]["options"] == 'cert-authority,principals="deploy"' and keys[3]["fingerprint"] == keys[0]["fingerprint"]
    bad = [k for k in keys if k["type"] == "unrecognised"]
    assert len(bad) == 2 and all(k["fingerprint"].startswith("line-sha256:") for k in bad)
    assert "hunter2" not in repr(keys)


def test_authorized_keys_files_from_sshd_config():
    patterns = parse_authorized_keys_files(data("sshd_config"))
    assert patterns == [".ssh/authorized_keys", "/etc/ssh/authorized_keys/%u", "/srv/keys/%u/%%keys"]
    assert parse_authorized_keys_files("Port 22\n") == [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    assert expand_keys_file("/srv/keys/%u/%%keys", "deploy", "/home/deploy") == "/srv/keys/deploy/%keys"
    assert expand_keys_file(".ssh/authorized_keys", "bob", "/home/bob/") == "/home/bob/.ssh/authorized_keys"
    assert expand_keys_file("%h/.ssh/k_%U", "bob", "/home/bob", 1001) == "/home/bob/.ssh/k_1001"


def test_systemctl_outputs_merge_into_enabled_or_running_units():
    files = parse_systemctl_list_unit_files(data("systemctl-list-unit-files.txt"))
    assert files["ssh.service"] == "enabled" and files["ssh.socket"] == "disabled" and files["apt-daily.service"] == "static"
    loaded = parse_systemctl_list_units(data("systemctl-list-units.txt"))
    assert loaded["nginx.service"] == {"load": "loaded", "active": "failed", "sub": "failed"}
    assert loaded["cron.service"]["active"] == "active"
    units = merge_units(files, loaded, "systemctl")
    assert units["ssh.service"] == {"source": "systemctl", "enabled": "enabled", "running": True}
    assert units["e2scrub_reap.service"]["running"] is False
    assert units["systemd-journald.service"] == {"source": "systemctl", "enabled": None, "running": True}
    assert "debug-shell.service" not in units and "nginx.service" not in units and "ssh.socket" not in units
    assert units["fstrim.timer"]["enabled"] == "enabled"


def test_unit_files_without_a_running_systemd():
    units = merge_units(parse_systemctl_list_unit_files(data("systemctl-list-unit-files.txt")), {}, "systemctl")
    assert units["ssh.service"]["running"] is None
    assert "apt-daily.service" not in units  # static: started by something else


def test_desktop_entries():
    entry = parse_desktop_entry(data("autostart-nextcloud.desktop"))
    assert entry == {"name": "Nextcloud", "exec": "/usr/bin/nextcloud --background", "enabled": True}
    hidden = parse_desktop_entry(data("autostart-hidden.desktop"))
    assert hidden["enabled"] is False and "tok-updater-secret" not in hidden["exec"]
    assert parse_desktop_entry("[Desktop Entry]\nExec=x\nX-GNOME-Autostart-enabled=false\n")["enabled"] is False


def test_listening_items_join_processes_sharing_a_port():
    items = listening_items([
        ("tcp", "0.0.0.0", 80, "nginx"), ("tcp", "0.0.0.0", 80, "nginx"), ("tcp", "0.0.0.0", 80, "apache2"),
        ("tcp", "::", 22, "sshd"), ("udp", "127.0.0.53", 53, None),
    ])
    assert items["tcp 0.0.0.0:80"]["process"] == "apache2, nginx"
    assert items["tcp [::]:22"] == {"source": "sockets", "proto": "tcp", "port": 22, "process": "sshd"}
    assert items["udp 127.0.0.53:53"]["process"] is None


TEXT_PARSERS = [
    parse_dpkg_query, parse_rpm_qa, parse_passwd, parse_group, parse_sudoers,
    lambda t: parse_crontab(t, True), lambda t: parse_crontab(t, False), parse_authorized_keys,
    parse_authorized_keys_files, parse_desktop_entry, parse_systemctl_list_unit_files, parse_systemctl_list_units,
    parse_dist_info_name,
]


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_parsers_never_crash_on_arbitrary_text(text):
    for parse in TEXT_PARSERS:
        parse(text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["root", "x", "0", "", ":", "\t", " ", "\n", "#", "ssh-ed25519", "AAAA", '"', ",", "\\"]), max_size=40))
def test_parsers_never_crash_on_near_miss_lines(parts):
    text = "".join(parts)
    for parse in TEXT_PARSERS:
        parse(text)
