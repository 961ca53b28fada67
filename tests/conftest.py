"""Shared fixtures. Each part's own fixtures live in tests/fixtures/<part>.py."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.agent", "tests.fixtures.sshd", "tests.fixtures.display", "tests.fixtures.browser",
                  "tests.fixtures.s3"]

# Qt tests run offscreen unless a test starts its own X server.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REQUIRE_E2E = os.environ.get("CHAPERONE_REQUIRE_E2E") == "1"
ROOT = Path(__file__).resolve().parent.parent


def require_program(*names: str) -> None:
    """Skip when a system program is missing; under CHAPERONE_REQUIRE_E2E=1 fail instead."""
    missing = [n for n in names if shutil.which(n) is None and not Path(n).is_file()]
    if missing:
        msg = f"system program missing: {', '.join(missing)}"
        if REQUIRE_E2E:
            pytest.fail(msg + " (CHAPERONE_REQUIRE_E2E=1)", pytrace=False)
        pytest.skip(msg)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; that value, or the last one after
    ``timeout`` (the caller asserts: a wait is never a timed assert)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def technician_keys(tmp_path):
    """Ed25519 keys made by ssh-keygen for "alice", "mallory" and a "ca": name -> private key path."""
    import subprocess

    require_program("ssh-keygen")
    out = {}
    for name in ("alice", "mallory", "ca"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", tmp_path / name], check=True)
        out[name] = tmp_path / name
    return out


@pytest.fixture
def home(tmp_path):
    """A fresh Home with a device key, under a short path (Unix socket paths are limited)."""
    from agent.devicekey import DeviceKey
    from agent.home import Home

    h = Home(tmp_path / "home")
    DeviceKey.init(h)
    return h


@pytest.fixture
def device_key(home):
    from agent.devicekey import DeviceKey

    return DeviceKey.load(home)


@pytest.fixture
def chaperone_cmd():
    """argv prefix that runs the chaperone CLI from this checkout."""
    return [sys.executable, "-m", "agent"]
