"""Live ways back in through the real agent: a key added mid-session is an alarm event before the session
ends; a key added while the agent was killed is found, marked with the gap, when it comes back; the end of the
session brings the customer's summary."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from agent.capture.inventory import FILE_NAME
from tests.conftest import require_program
from tests.e2e.agent_helpers import TECHNICIAN, Events, assert_sealed_and_genuine, records

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="makes a real account: needs root")]

DATA = Path(__file__).resolve().parent.parent / "data" / "inventory"
KEY = (DATA / "authorized_keys").read_text().splitlines()[1]


@pytest.fixture
def account():
    """A real account with a home and no SSH keys, removed after the test."""
    require_program("useradd", "userdel")
    name = "chp" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        yield name, Path(f"/home/{name}")
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


def _start_session(agent, tmp_path: Path) -> tuple[str, Events]:
    watched = tmp_path / "watched"
    watched.mkdir(exist_ok=True)
    events = Events(agent.client)
    done = agent.cli("request", *TECHNICIAN, "--watch", str(watched), "--duration", "10m")
    assert done.returncode == 0, done.stderr
    sid = done.stdout.strip()
    assert agent.cli("approve", sid).returncode == 0
    events.wait_for("session-started", lambda d: d["id"] == sid, timeout=90)
    return sid, events


def _add_key(home: Path) -> None:
    (home / ".ssh").mkdir(exist_ok=True)
    with open(home / ".ssh" / "authorized_keys", "a") as f:
        f.write(KEY + "\n")


def test_a_key_added_mid_session_is_an_alarm_before_the_session_ends(agent_factory, home, tmp_path, account):
    name, user_home = account
    agent = agent_factory(capture=True)
    sid, events = _start_session(agent, tmp_path)
    assert (home.session_dir(sid) / FILE_NAME).exists()  # the "before" survives a restart

    _add_key(user_home)
    alarm = events.wait_for("alarm", lambda d: d.get("kind") == "way-back-in" and name in d.get("item", ""),
                            timeout=30)
    assert alarm["category"] == "authorized_keys" and alarm["origin"] == "unexplained"
    assert f"a new SSH key can log in as {name}" in alarm["detail"]
    assert agent.call("status")["session"] == sid  # still running: the alarm came during the session

    assert agent.cli("end", timeout=120).returncode == 0
    summary = events.wait_for("session-sealed", lambda d: d["id"] == sid, timeout=60)["summary"]
    events.close()
    ways = [w for w in summary["ways_back_in"] if name in w["item"]]
    assert ways and ways[0]["seen_live"] and ways[0]["still_there"] and ways[0]["origin"] == "unexplained"
    assert summary["complete"] is True and summary["unexplained"] >= 1

    recs = records(home, sid)
    kinds = [r["type"] for r in recs]
    live_alarm = next(i for i, r in enumerate(recs) if r["type"] == "alarm" and name in r["data"].get("item", ""))
    assert live_alarm < kinds.index("session-end")
    final = [r["data"] for r in recs if r["type"] == "inventory-change" and not r["data"]["live"]
             and name in r["data"]["item"]]
    assert final and final[0]["way_back_in"]
    assert not (home.session_dir(sid) / FILE_NAME).exists()  # done with once the session's changes are recorded
    assert_sealed_and_genuine(home, sid, agent, tmp_path)


def test_a_key_added_while_the_agent_was_killed_is_found_after_the_restart(agent_factory, home, tmp_path, account):
    name, user_home = account
    agent = agent_factory(capture=True)
    sid, events = _start_session(agent, tmp_path)
    events.close()
    agent.kill()
    _add_key(user_home)  # the gap: nobody is watching

    agent = agent_factory(capture=True)
    events = Events(agent.client)
    alarm = events.wait_for("alarm", lambda d: d.get("kind") == "way-back-in" and name in d.get("item", ""),
                            timeout=90)
    assert alarm["category"] == "authorized_keys"
    assert agent.cli("end", timeout=120).returncode == 0
    events.close()
    recs = records(home, sid)
    change = next(r["data"] for r in recs if r["type"] == "inventory-change" and r["data"]["live"]
                  and name in r["data"]["item"])
    recovery = next(r for r in recs if r["type"] == "recovery")
    assert change["gap"]["to"] == recovery["ts"] and change["gap"]["from"] is not None
    befores = [r for r in recs if r["type"] == "inventory" and r["data"]["phase"] == "before"]
    assert len({r["data"]["category"] for r in befores}) == len(befores)  # one "before", not a second after the gap
    assert_sealed_and_genuine(home, sid, agent, tmp_path)
