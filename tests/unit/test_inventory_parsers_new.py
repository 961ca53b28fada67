"""The parsers the live watcher and the attribution added: PAM, ld.so.preload, anacrontab, shadow,
/proc/net, /proc/locks, dpkg's database, rpm's answers, inotify events. Recorded inputs, and hypothesis."""

from __future__ import annotations

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.inotify_events import IN_CREATE, IN_ISDIR
from agent.capture.inventory.accounts import parse_shadow
from agent.capture.inventory.dpkgdb import (
    parse_dpkg_search,
    parse_list,
    parse_md5sums,
    parse_rpm_qf,
    parse_rpm_verify,
    parse_status_conffiles,
)
from agent.capture.inventory.inotify import Event, parse_events
from agent.capture.inventory.procfs import (
    listening_by_netlink,
    listening_fingerprint,
    parse_proc_locks,
    parse_proc_net,
    parse_sock_diag,
)
from agent.capture.inventory.startup import (
    pam_rule_text,
    parse_anacrontab,
    parse_ld_so_preload,
    parse_pam,
)

PAM_SSHD = """\
# PAM configuration for the Secure Shell service
@include common-auth
account    required     pam_nologin.so
-session   optional     pam_systemd.so
session [success=ok ignore=ignore module_unknown=ignore default=bad] pam_selinux.so close
auth required pam_exec.so /usr/local/bin/check --token=S3cretT0kenValue99 \\
    quiet
session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale
not a rule
"""


def test_pam_rules_with_brackets_continuations_and_includes():
    rules = parse_pam(PAM_SSHD)
    assert rules[0] == {"type": "@include", "control": "", "module": "common-auth", "args": ""}
    assert rules[1] == {"type": "account", "control": "required", "module": "pam_nologin.so", "args": ""}
    assert rules[2]["type"] == "-session"
    assert rules[3]["control"] == "[success=ok ignore=ignore module_unknown=ignore default=bad]"
    assert rules[3]["module"] == "pam_selinux.so" and rules[3]["args"] == "close"
    assert rules[4]["module"] == "pam_exec.so" and rules[4]["args"].endswith("quiet")
    assert "S3cretT0kenValue99" not in repr(rules)
    assert len(rules) == 6
    assert pam_rule_text(rules[1]) == "account required pam_nologin.so"


def test_pam_conf_has_a_service_field():
    rules = parse_pam("login auth required pam_unix.so nullok\nother account required pam_deny.so\n",
                      with_service=True)
    assert [(r["service"], r["type"], r["module"]) for r in rules] == [
        ("login", "auth", "pam_unix.so"), ("other", "account", "pam_deny.so")]


def test_ld_so_preload_splits_like_the_loader():
    assert parse_ld_so_preload("/lib/a.so /lib/b.so:/lib/c.so\n\t/lib/a.so\n#x\n") == [
        "/lib/a.so", "/lib/b.so", "/lib/c.so", "#x"]
    assert parse_ld_so_preload("") == []


def test_anacrontab_jobs():
    text = ("SHELL=/bin/sh\nSTART_HOURS_RANGE=3-22\n# comment\n1\t5\tcron.daily\trun-parts /etc/cron.daily\n"
            "@monthly 15 cron.monthly run-parts --report /etc/cron.monthly\nbad line\n7 x weekly cmd\n")
    jobs = parse_anacrontab(text)
    assert jobs == [
        {"schedule": "1", "delay": "5", "job": "cron.daily", "command": "run-parts /etc/cron.daily"},
        {"schedule": "@monthly", "delay": "15", "job": "cron.monthly",
         "command": "run-parts --report /etc/cron.monthly"},
    ]


def test_shadow_gives_states_never_hashes():
    text = ("root:!:20228:0:99999:7:::\nalice:$y$j9T$abc$defhashvalue:20100:0:99999:7:::\n"
            "nopw::20000::::::\ndaemon:*:19000:0:99999:7:::\nbroken\n")
    entries = parse_shadow(text)
    assert entries == {
        "root": {"password": "locked", "password_changed": 20228},
        "alice": {"password": "set", "password_changed": 20100},
        "nopw": {"password": "none", "password_changed": 20000},
        "daemon": {"password": "locked", "password_changed": 19000},
    }
    assert "defhashvalue" not in repr(entries)


PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1663 1 0 100 0 0 10 0
   1: 0100007F:08FB 0100007F:C480 06 00000000:00000000 03:0000089C 00000000     0        0 0 3 0
   2: 0100007F:0016 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000
"""
PROC_UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 1 2 0 0
  2: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000   101        0 1 2 0 0
"""


def test_proc_net_listening_and_unconnected_udp():
    assert parse_proc_net(PROC_TCP, "tcp") == {("tcp", "0.0.0.0", 2024)}
    assert parse_proc_net(PROC_TCP6, "tcp") == {("tcp", "::1", 22)}
    assert parse_proc_net(PROC_UDP, "udp") == {("udp", "127.0.0.53", 53)}


def test_proc_locks():
    text = ("1: POSIX  ADVISORY  WRITE 1804 fe:00:4244323 0 EOF\n"
            "1: -> POSIX  ADVISORY  WRITE 1900 fe:00:4244323 0 EOF\n"
            "2: FLOCK  ADVISORY  WRITE 77 00:1a:12 0 EOF\n"
            "3: OFDLCK ADVISORY  READ  -1 08:01:99 0 EOF\n")
    assert parse_proc_locks(text) == {(254, 0, 4244323), (0, 26, 12), (8, 1, 99)}


def test_dpkg_database_files():
    assert parse_md5sums("7a52c94ace40d9c052cf40f3541637c3  bin/true\nbad line\n"
                         "0123456789abcdef0123456789abcdef  usr/share/doc/a b/c\n") == {
        "/bin/true": "7a52c94ace40d9c052cf40f3541637c3",
        "/usr/share/doc/a b/c": "0123456789abcdef0123456789abcdef"}
    assert parse_list("/.\n/etc\n/etc/cron.d/x\n\nnot-a-path\n") == {"/.", "/etc", "/etc/cron.d/x"}
    status = ("Package: sudo\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.9\nConffiles:\n"
              " /etc/sudoers da8bee36494c904ba767f0dd58920878\n /etc/pam.d/sudo newconffile\n"
              " /etc/old 0123456789abcdef0123456789abcdef obsolete\nDescription: x\n more\n\n"
              "Package: cron\nArchitecture: amd64\nConffiles:\n /etc/crontab 11112222333344445555666677778888\n")
    found = parse_status_conffiles(status)
    assert found["sudo"] == {"/etc/sudoers": "da8bee36494c904ba767f0dd58920878"}
    assert found["sudo:amd64"] == found["sudo"]
    assert found["cron"] == {"/etc/crontab": "11112222333344445555666677778888"}
    assert set(parse_status_conffiles(status, {"cron"})) == {"cron", "cron:amd64"}


def test_dpkg_search_and_rpm_answers():
    out = ("diversion by dash from: /bin/sh\ncoreutils: /bin/true\nsystemd, udev: /lib/systemd\n"
           "dpkg-query: no path found matching pattern /x\n")
    assert parse_dpkg_search(out) == [("coreutils", "/bin/true"), ("systemd", "/lib/systemd"), ("udev", "/lib/systemd")]
    assert parse_rpm_qf("cronie\t1.5.7-8.el9\n") == ("cronie", "1.5.7-8.el9")
    assert parse_rpm_qf("file /x is not owned by any package\n") is None
    verify = "S.5....T.  c /etc/crontab\n.......T.    /usr/bin/x\nmissing   c /etc/gone\n"
    assert parse_rpm_verify(verify, "/etc/crontab") is False
    assert parse_rpm_verify(verify, "/usr/bin/x") is True
    assert parse_rpm_verify(verify, "/etc/gone") is False
    assert parse_rpm_verify(verify, "/etc/anacrontab") is True


def test_inotify_events():
    def raw(wd, mask, name: bytes, pad: int = 16) -> bytes:
        body = name + b"\0" * (pad - len(name)) if name else b""
        return struct.pack("iIII", wd, mask, 0, len(body)) + body

    buf = raw(1, IN_CREATE, b"authorized_keys") + raw(2, IN_CREATE | IN_ISDIR, b"") + raw(3, 8, b"\xff")
    assert parse_events(buf) == [Event(1, IN_CREATE, "authorized_keys"), Event(2, IN_CREATE | IN_ISDIR, ""),
                                 Event(3, 8, "\udcff")]
    assert parse_events(buf[:-3])[:2] == parse_events(buf)[:2]  # a cut buffer: the whole events only


NEW_PARSERS = [
    parse_pam, lambda t: parse_pam(t, with_service=True), parse_ld_so_preload, parse_anacrontab, parse_shadow,
    lambda t: parse_proc_net(t, "tcp"), lambda t: parse_proc_net(t, "udp"), parse_proc_locks, parse_md5sums,
    parse_list, parse_status_conffiles, parse_dpkg_search, parse_rpm_qf, lambda t: parse_rpm_verify(t, "/etc/x"),
]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_new_parsers_never_crash_on_arbitrary_text(text):
    for parse in NEW_PARSERS:
        parse(text)


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_inotify_parser_never_crashes(buf):
    for event in parse_events(buf):
        assert isinstance(event.name, str)


words = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="[]#\\"),
                min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["auth", "account", "password", "session", "-session"]),
       control=st.sampled_from(["required", "sufficient", "[success=1 default=ignore]"]),
       module=words, args=st.lists(words.filter(lambda w: "=" not in w and ":" not in w), max_size=3))
def test_a_written_pam_rule_reads_back(kind, control, module, args):
    line = f"{kind}  {control}\t{module} {' '.join(args)}"
    (rule,) = parse_pam(line + "\n")
    assert (rule["type"], rule["control"], rule["module"]) == (kind, control, module)
    assert rule["args"].split() == [a for a in args] or "[redacted" in rule["args"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters=" :\t\n\r", blacklist_categories=("Cs",)),
                        min_size=1, max_size=20), max_size=6),
       st.sampled_from([" ", ":", "\n", " : \t"]))
def test_preload_entries_read_back_in_order_once(libraries, separator):
    assert parse_ld_so_preload(separator.join(libraries)) == list(dict.fromkeys(libraries))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.tuples(st.sampled_from(["127.0.0.1", "0.0.0.0", "10.1.2.3"]), st.integers(1, 65535)), max_size=5))
def test_proc_net_reads_back_what_the_kernel_writes(sockets):
    lines = ["  sl  local_address rem_address   st"]
    for i, (host, port) in enumerate(sorted(sockets)):
        addr = socket.inet_aton(host)[::-1].hex().upper()
        lines.append(f"  {i}: {addr}:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 1")
    assert parse_proc_net("\n".join(lines), "tcp") == {("tcp", h, p) for h, p in sockets}


def test_netlink_and_proc_net_see_the_same_listening_sockets():
    with socket.socket() as tcp, socket.socket(socket.AF_INET6) as tcp6, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        tcp6.bind(("::1", 0))
        tcp6.listen()
        udp.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in (tcp, tcp6, udp)]
        by_netlink = listening_by_netlink()
        by_proc = listening_fingerprint(netlink=False)
    assert by_netlink is not None and by_netlink == by_proc
    assert {("tcp", "127.0.0.1", ports[0]), ("tcp", "::1", ports[1]), ("udp", "127.0.0.1", ports[2])} <= by_netlink


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_sock_diag_parser_never_crashes(buf):
    try:
        found, _done = parse_sock_diag(buf)
    except OSError:
        return
    assert all(isinstance(port, int) for _f, _a, port in found)
