import os
import subprocess

import pytest

from agent import sshsig
from agent.devicekey import DeviceKey
from agent.errors import HomeError, KeyFileError
from agent.home import Home
from tests.conftest import require_program


def run_cli(*args, env=None):
    import sys

    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=env)


def test_init_prints_fingerprint_exactly_as_ssh_keygen(tmp_path):
    require_program("ssh-keygen")
    home = tmp_path / "h"
    out = run_cli("init", "--home", str(home))
    assert out.returncode == 0, out.stderr
    expected = subprocess.run(["ssh-keygen", "-lf", str(home / "device_key.pub")], capture_output=True, text=True)
    assert out.stdout == expected.stdout
    assert (home / "device_key").stat().st_mode & 0o777 == 0o600


def test_init_never_overwrites(tmp_path):
    home = Home(tmp_path / "h")
    k1, created1 = DeviceKey.init(home)
    before = home.key_path.read_bytes()
    k2, created2 = DeviceKey.init(home)
    assert created1 and not created2
    assert k1.fingerprint == k2.fingerprint
    assert home.key_path.read_bytes() == before


def test_home_after_command_name_and_env(tmp_path):
    home = tmp_path / "h"
    a = run_cli("--home", str(home), "init")
    b = run_cli("init", env={**os.environ, "CHAPERONE_HOME": str(home)})
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_readable_key_is_refused_with_a_sentence(tmp_path):
    home = Home(tmp_path / "h")
    DeviceKey.init(home)
    os.chmod(home.key_path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        DeviceKey.load(home)
    out = run_cli("init", "--home", str(home.path))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "chmod 600" in out.stderr


def test_damaged_key_is_refused(tmp_path):
    home = Home(tmp_path / "h")
    DeviceKey.init(home)
    home.key_path.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n")
    with pytest.raises(KeyFileError, match="damaged"):
        DeviceKey.load(home)


def test_missing_home_is_a_plain_error(tmp_path):
    with pytest.raises(HomeError, match="chaperone init"):
        DeviceKey.load(Home(tmp_path / "nope"))


def test_read_only_home_cannot_init(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    mounted = False
    if os.geteuid() == 0:  # root ignores permission bits: make it read-only for real
        done = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
        mounted = True
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True, capture_output=True)
    try:
        with pytest.raises(HomeError, match="read-only"):
            DeviceKey.init(Home(ro))
        out = run_cli("init", "--home", str(ro))
        assert out.returncode != 0 and "read-only" in out.stderr and "Traceback" not in out.stderr
        assert list(ro.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)


def test_signature_byte_identical_to_ssh_keygen(tmp_path, home, device_key):
    require_program("ssh-keygen")
    msg = tmp_path / "m"
    msg.write_bytes(b"chaperone\x00\xffdata\n" * 100)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(home.key_path), "-n", "chaperone-session", str(msg)],
                   check=True, capture_output=True)
    assert device_key.sign(msg.read_bytes()) == (tmp_path / "m.sig").read_text()


def test_ssh_keygen_verifies_our_signature_and_we_verify_theirs(tmp_path, device_key):
    require_program("ssh-keygen")
    msg = b"SHA256SUMS content\n"
    sig = tmp_path / "s.sig"
    sig.write_text(device_key.sign(msg))
    signers = tmp_path / "allowed_signers"
    signers.write_text(device_key.allowed_signers_line() + "\n")
    ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", device_key.principal,
                         "-n", "chaperone-session", "-s", str(sig)], input=msg, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", device_key.principal,
                          "-n", "chaperone-session", "-s", str(sig)], input=msg + b"x", capture_output=True)
    assert bad.returncode != 0
    # and the other way, with RSA and ECDSA technician keys made by ssh-keygen
    for kt in ("rsa", "ecdsa", "ed25519"):
        key = tmp_path / f"tech_{kt}"
        subprocess.run(["ssh-keygen", "-q", "-t", kt, "-N", "", "-f", str(key)], check=True)
        data = tmp_path / "req"
        data.write_bytes(b"request " + kt.encode())
        subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "chaperone-request", str(data)],
                       check=True, capture_output=True)
        armored = (tmp_path / "req.sig").read_text()
        v = sshsig.verify(armored, "chaperone-request", data.read_bytes())
        assert v.key_type.startswith(("ssh-rsa", "ecdsa", "ssh-ed25519"))
        with pytest.raises(sshsig.SignatureError):
            sshsig.verify(armored, "chaperone-request", data.read_bytes() + b"!")
        with pytest.raises(sshsig.SignatureError):
            sshsig.verify(armored, "chaperone-session", data.read_bytes())
        (tmp_path / "req.sig").unlink()
