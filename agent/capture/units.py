"""Which systemd units a technician's command starts: the part of a lineage that systemd forks.

A unit's processes are forked by the service manager (pid 1, or a user's
``systemd --user``), not by the technician, so fork history alone loses
them. What can be known, and is used (see docs/ARCHITECTURE.md, "Lineage"):

- the technician's own ``systemd-run``, ``systemctl`` and ``service``
  execs are seen with their arguments: the units they name (``systemd-run
  --unit=NAME``, ``systemctl start|restart|… NAME…``, ``service NAME
  start``) are the technician's for the rest of the session;
- a ``systemd-run`` without ``--unit`` gets a name from systemd
  (``run-u123.service``, ``run-p4242-i4243.service``, ``run-r<hex>.scope``):
  a new ``run-*`` unit whose process the manager starts while a technician's
  ``systemd-run`` is alive is the technician's;
- a unit file the technician writes (seen by the filesystem-wide capture)
  names a unit that is the technician's whenever it runs during the session;
- a process the service manager forks is matched by the unit in its cgroup
  (``/proc/<pid>/cgroup``), read when it execs (systemd moves it into the
  unit's cgroup between the fork and the exec).

Not caught: units started through D-Bus by a program that is not one of
these three (``busctl``, a script using the API), ``at``/``batch`` jobs and
cron jobs (their files and the inventory record them), a unit started by a
timer that was not written or named during the session, and a manager's
process that exits before its exec is read.
"""

from __future__ import annotations

import os

UNIT_SUFFIXES = (".service", ".scope", ".socket", ".timer", ".path", ".mount", ".target", ".swap", ".slice")
STARTING_VERBS = frozenset({
    "start", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart", "force-reload",
    "reload", "enable", "reenable", "isolate", "link", "preset", "edit", "revert", "add-wants", "add-requires",
    "set-property", "condrestart", "condreload",
})
MANAGERS = frozenset({"systemctl", "systemd-run", "service"})
# systemd-run options that take a value as the next argument (so it is not the command).
_RUN_VALUE_OPTIONS = frozenset({
    "-u", "--unit", "-p", "--property", "--description", "--slice", "--uid", "--gid", "-E", "--setenv",
    "--working-directory", "-M", "--machine", "-H", "--host", "--on-active", "--on-boot", "--on-startup",
    "--on-unit-active", "--on-unit-inactive", "--on-calendar", "--on-clock-change", "--on-timezone-change",
    "--timer-property", "--path-property", "--socket-property", "--nice", "--service-type", "--expand-environment",
    "--shell-prompt-prefix",
})


def normalise_unit(name: str, default_suffix: str = ".service") -> str:
    """``foo`` -> ``foo.service``; a name that already has a unit suffix stays as it is."""
    name = name.strip()
    return name if name.endswith(UNIT_SUFFIXES) else name + default_suffix


def related_units(unit: str) -> set[str]:
    """A timer, socket or path unit starts the service of the same name: both are the technician's."""
    stem, dot, suffix = unit.rpartition(".")
    if dot and suffix in ("timer", "socket", "path"):
        return {unit, f"{stem}.service"}
    return {unit}


def units_started(argv: list[str]) -> tuple[set[str], bool]:
    """(the units a ``systemctl``/``systemd-run``/``service`` command line names, and whether it is
    a ``systemd-run`` whose unit systemd will name). Any other command: (set(), False)."""
    if not argv:
        return set(), False
    program = os.path.basename(argv[0])
    if program == "systemd-run":
        return _systemd_run(argv[1:])
    if program == "systemctl":
        return _systemctl(argv[1:]), False
    if program == "service" and len(argv) >= 3 and not argv[1].startswith("-"):
        return related_units(normalise_unit(argv[1])), False
    return set(), False


def _systemd_run(args: list[str]) -> tuple[set[str], bool]:
    unit = None
    scope = False
    timer = False
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            break  # the command to run begins
        if arg in ("-u", "--unit") and i + 1 < len(args):
            unit = args[i + 1]
        elif arg.startswith("--unit="):
            unit = arg.split("=", 1)[1]
        elif arg == "--scope":
            scope = True
        elif arg.startswith("--on-"):
            timer = True
        if arg in _RUN_VALUE_OPTIONS and "=" not in arg:
            i += 1
        i += 1
    if unit:
        named = normalise_unit(unit, ".scope" if scope else ".service")
        units = {named}
        if timer:  # systemd-run --on-…: a timer of the same name starts the service
            units.add(named.rsplit(".", 1)[0] + ".timer")
        return units, False
    return set(), True


def _systemctl(args: list[str]) -> set[str]:
    words = [a for a in args if not a.startswith("-")]
    if not words or words[0] not in STARTING_VERBS:
        return set()
    verb, names = words[0], words[1:]
    if verb == "set-property":
        names = names[:1]
    units: set[str] = set()
    for name in names:
        if "=" in name or "*" in name:
            continue
        units |= related_units(normalise_unit(name))
    return units


def is_transient_run(unit: str) -> bool:
    """A unit name systemd gives a ``systemd-run`` that named none."""
    return unit.startswith("run-") and unit.endswith((".service", ".scope"))


def is_service_manager(comm_or_exe: str | None, pid: int) -> bool:
    """pid 1, or a user's ``systemd`` instance (``systemd --user``)."""
    return pid == 1 or (comm_or_exe is not None and os.path.basename(comm_or_exe) == "systemd")
