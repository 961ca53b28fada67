"""installer/linux/install.sh, staged under --root: what it installs, and that sshd is left alone unless asked."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "installer" / "linux" / "install.sh"


def install(stage: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(INSTALL), "--root", str(stage), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def fake_chaperone(tmp_path) -> Path:
    """A stand-in `chaperone` that prints the arguments it was given."""
    path = tmp_path / "bin" / "chaperone"
    path.parent.mkdir()
    path.write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    path.chmod(0o755)
    return path


def test_sshd_is_left_alone_unless_asked(tmp_path, fake_chaperone):
    stage = tmp_path / "stage"
    out = install(stage, "--chaperone", str(fake_chaperone), "--system-agent", "--autostart")
    assert out.returncode == 0, out.stderr
    assert not (stage / "etc" / "ssh").exists()
    assert not (stage / "usr" / "local" / "libexec").exists()
    unit = (stage / "etc/systemd/system/chaperone-agent.service").read_text()
    assert f"ExecStart={fake_chaperone} agent --home /var/lib/chaperone\n" in unit
    assert "Environment=CHAPERONE_HOME=/var/lib/chaperone\n" in unit
    assert "@" not in unit
    desktop = (stage / "etc/xdg/autostart/chaperone-tray.desktop").read_text()
    assert "\nExec=chaperone-tray\n" in desktop and "\nType=Application\n" in desktop
    assert stat.S_IMODE((stage / "var/lib/chaperone").stat().st_mode) == 0o700


def test_enable_sshd_installs_the_wrapper_and_the_drop_in(tmp_path, fake_chaperone):
    stage = tmp_path / "stage"
    out = install(stage, "--chaperone", str(fake_chaperone), "--home", "/srv/chaperone", "--enable-sshd")
    assert out.returncode == 0, out.stderr
    wrapper = stage / "usr/local/libexec/chaperone/ssh-authorize"
    assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755
    assert stat.S_IMODE(wrapper.parent.stat().st_mode) == 0o755
    drop_in = (stage / "etc/ssh/sshd_config.d/chaperone.conf").read_text()
    assert ("\nAuthorizedKeysCommand /usr/local/libexec/chaperone/ssh-authorize --home /srv/chaperone "
            "ssh-authorize %u %k %t %f\n") in drop_in
    assert "\nAuthorizedKeysCommandUser root\n" in drop_in
    # sshd runs the wrapper with no environment and these arguments; it hands them to chaperone unchanged
    ran = subprocess.run([str(wrapper), "--home", "/srv/chaperone", "ssh-authorize", "root", "AAAA x",
                          "ssh-ed25519", "SHA256:abc"], capture_output=True, text=True, env={}, timeout=30)
    assert ran.stdout.split("\n")[:6] == ["[--home]", "[/srv/chaperone]", "[ssh-authorize]", "[root]",
                                          "[AAAA x]", "[ssh-ed25519]"]
    assert "does not include sshd_config.d" in out.stdout  # the staged root has no sshd_config


def test_disable_sshd_removes_the_drop_in(tmp_path, fake_chaperone):
    stage = tmp_path / "stage"
    assert install(stage, "--chaperone", str(fake_chaperone), "--enable-sshd").returncode == 0
    out = install(stage, "--chaperone", str(fake_chaperone), "--disable-sshd")
    assert out.returncode == 0, out.stderr
    assert not (stage / "etc/ssh/sshd_config.d/chaperone.conf").exists()


@pytest.mark.parametrize("args, message", [
    ([], "nothing to do"),
    (["--enable-sshd", "--disable-sshd"], "not both"),
    (["--enable-sshd", "--home", "relative/home"], "absolute path"),
    (["--enable-sshd", "--home", '/var/lib/a" b'], "may only hold"),
    (["--frobnicate"], "unknown option"),
])
def test_bad_options_say_what_to_do(tmp_path, fake_chaperone, args, message):
    out = install(tmp_path / "stage", "--chaperone", str(fake_chaperone), *args)
    assert out.returncode != 0
    assert message in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "stage" / "etc" / "ssh").exists()


def test_the_drop_in_is_valid_for_sshd(tmp_path, fake_chaperone):
    from tests.conftest import require_program

    require_program("/usr/sbin/sshd", "ssh-keygen")
    if os.geteuid() != 0:
        pytest.skip("sshd -t needs root to read its host key")
    stage = tmp_path / "stage"
    assert install(stage, "--chaperone", str(fake_chaperone), "--enable-sshd").returncode == 0
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"Include {stage}/etc/ssh/sshd_config.d/chaperone.conf\nHostKey {key}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    effective = check.stdout.lower()
    assert "authorizedkeyscommand /usr/local/libexec/chaperone/ssh-authorize --home /var/lib/chaperone" in effective
    assert "authorizedkeyscommanduser root" in effective
