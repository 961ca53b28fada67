"""Linux collectors of what runs by itself: packages, services, scheduled jobs, autostart entries.

Each reads its sources through a :class:`Machine` and hands the text to a
pure parser. Which pip packages: those that no system package manager
tracks, i.e. the ones ``pip install`` puts in
``/usr/local/lib/python3*/{dist,site}-packages`` (as root) and in each
user's ``~/.local/lib/python3*/site-packages`` (``--user``). The
distribution's own Python packages are already listed by dpkg or rpm, and
virtual environments are not searched (they can be anywhere, and installing
into one changes nothing outside it).
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from functools import partial

from agent.capture.inventory import autostart, packages, scheduled, services, startup
from agent.capture.inventory.machine import Machine, join
from agent.capture.inventory.readers import SourceError, have, run
from agent.capture.inventory.types import Items, error_entry, is_error

SYSTEMD_RUNNING = "/run/systemd/system"
SYSTEM_UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
                    "/lib/systemd/system", "/usr/lib/systemd/system")
USER_UNIT_DIRS = ("/etc/systemd/user", "/usr/local/lib/systemd/user", "/lib/systemd/user", "/usr/lib/systemd/user")
USER_HOME_UNITS = ".config/systemd/user"
CRON_SPOOLS = ("/var/spool/cron/crontabs", "/var/spool/cron")  # Debian's, then Red Hat's
CRON_PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
PIP_SYSTEM_GLOBS = ("/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages")
DPKG_DIR = "/var/lib/dpkg"
RPM_DIR = "/var/lib/rpm"


def guard(items: Items, source: str, fill: Callable[[], None]) -> None:
    """Run ``fill``; a source that fails becomes an error entry instead of an exception."""
    try:
        fill()
    except (SourceError, OSError) as exc:
        key, details = error_entry(source, str(exc))
        items[key] = details


# -- packages ---------------------------------------------------------------


def collect_packages(m: Machine) -> Items:
    items: Items = {}
    dpkg_args = [] if m.is_real else [f"--admindir={m.real(DPKG_DIR)}"]

    def dpkg() -> None:
        out = run(["dpkg-query", *dpkg_args, "-W", "-f", packages.DPKG_FORMAT])
        for key, d in packages.parse_dpkg_query(out).items():
            items[f"dpkg:{key}"] = {"source": "dpkg", **d}

    def rpm() -> None:
        for key, d in packages.parse_rpm_qa(run(["rpm", "-qa", "--qf", packages.RPM_FORMAT])).items():
            items[f"rpm:{key}"] = {"source": "rpm", **d}

    if have("dpkg-query") and m.isdir(DPKG_DIR):
        guard(items, "dpkg", dpkg)
    if m.is_real and have("rpm") and m.isdir(RPM_DIR):
        guard(items, "rpm", rpm)
    site_dirs = [d for pattern in PIP_SYSTEM_GLOBS for d in m.glob(pattern)]
    for _user, u in m.homes():
        site_dirs += m.glob(join(glob.escape(u["home"]), ".local/lib/python3*/site-packages"))
    for site in sorted(set(site_dirs)):

        def pip(site: str = site) -> None:
            for entry in m.listdir(site):
                parsed = packages.parse_dist_info_name(entry)
                if parsed:
                    name, version = parsed
                    items[f"pip:{name} ({site})"] = {"source": site, "name": name, "version": version}

        guard(items, site, pip)
    return items


# -- services and timers ----------------------------------------------------


def unit_file(m: Machine, unit: str, folders: tuple[str, ...] = SYSTEM_UNIT_DIRS) -> str | None:
    """The machine path of the file that defines ``unit``: the first of the unit folders that has it."""
    for folder in folders:
        path = join(folder, unit)
        if m.exists(path):
            return path
    return None


def _systemd_units(m: Machine, suffixes: tuple[str, ...]) -> Items:
    """Units enabled or running, from systemctl (which reads unit files even when systemd is not running)."""
    items: Items = {}
    root = [] if m.is_real else [f"--root={m.root}"]

    def fill() -> None:
        types = ",".join(s.lstrip(".") for s in suffixes)
        files = services.parse_systemctl_list_unit_files(
            run(["systemctl", *root, "list-unit-files", f"--type={types}", "--no-legend", "--no-pager"], silent_ok=True)
        )
        loaded = {}
        if m.is_real and m.isdir(SYSTEMD_RUNNING):
            loaded = services.parse_systemctl_list_units(
                run(["systemctl", "list-units", f"--type={types}", "--all", "--plain", "--no-legend", "--no-pager"],
                    silent_ok=True)
            )
        for unit, d in services.merge_units(files, loaded, "systemctl").items():
            if unit.endswith(suffixes):
                items[unit] = {**d, "path": unit_file(m, unit)}

    if have("systemctl"):
        guard(items, "systemctl", fill)
    else:
        for wants in m.glob("/etc/systemd/system/*.wants"):

            def links(wants: str = wants) -> None:
                for unit in m.listdir(wants):
                    if unit.endswith(suffixes):
                        items[unit] = {"source": wants, "enabled": "enabled", "running": None,
                                       "path": unit_file(m, unit)}

            guard(items, wants, links)
    return items


def _user_units(m: Machine, suffixes: tuple[str, ...]) -> Items:
    """User units enabled for every user (``/etc/systemd/user/*.wants``) or for one (``~/.config/…``)."""
    items: Items = {}
    places = [("*", "/etc/systemd/user")] + [(user, join(u["home"], USER_HOME_UNITS)) for user, u in m.homes()]
    for user, folder in places:
        for wants in m.glob(join(glob.escape(folder), "*.wants")):

            def links(wants: str = wants, user: str = user, folder: str = folder) -> None:
                for unit in m.listdir(wants):
                    if unit.endswith(suffixes):
                        path = unit_file(m, unit, (folder, *USER_UNIT_DIRS))
                        who = "every user" if user == "*" else user
                        items[f"user {who}: {unit}"] = {"source": wants, "enabled": "enabled", "running": None,
                                                       "path": path}

            guard(items, wants, links)
    return items


def _sysv_services(m: Machine) -> Items:
    """``/etc/init.d`` scripts, enabled when a start link is in ``/etc/rc[2-5].d``."""
    items: Items = {}

    def fill() -> None:
        started = set()
        for level in "2345":
            for link in m.listdir(f"/etc/rc{level}.d"):
                if link.startswith("S") and len(link) > 3:
                    started.add(link[3:])
        for script in m.listdir("/etc/init.d"):
            if not script.startswith(".") and script not in ("README", "skeleton", "rc", "rcS", "functions"):
                items[f"init.d: {script}"] = {
                    "source": "/etc/init.d",
                    "enabled": "enabled" if script in started else "disabled",
                    "running": None,
                    "path": f"/etc/init.d/{script}",
                }

    guard(items, "/etc/init.d", fill)
    return items


def collect_services(m: Machine) -> Items:
    suffixes = (".service", ".socket")
    return {**_systemd_units(m, suffixes), **_user_units(m, suffixes), **_sysv_services(m)}


# -- scheduled jobs ---------------------------------------------------------


def _crontab_items(m: Machine, items: Items, path: str, system: bool, user: str | None = None) -> None:
    text = m.read(path)
    if text is None:
        return
    for job in scheduled.parse_crontab(text, system):
        who = job.get("user", user)
        key = f"{path}: {job['schedule']} {f'{who} ' if system else ''}{job['command']}"
        items[key] = {"source": path, "kind": "cron", "schedule": job["schedule"], "user": who,
                      "command": job["command"]}


def _anacron_items(m: Machine, items: Items, path: str) -> None:
    text = m.read(path)
    if text is None:
        return
    for job in startup.parse_anacrontab(text):
        key = f"{path}: {job['schedule']} {job['job']} {job['command']}"
        items[key] = {"source": path, "kind": "anacron", "schedule": job["schedule"], "user": "root",
                      "command": job["command"]}


def collect_scheduled(m: Machine) -> Items:
    items: Items = {}
    guard(items, "/etc/crontab", lambda: _crontab_items(m, items, "/etc/crontab", True))
    guard(items, "/etc/anacrontab", lambda: _anacron_items(m, items, "/etc/anacrontab"))
    for folder, system in (("/etc/cron.d", True), *((spool, False) for spool in CRON_SPOOLS)):

        def tabs(folder: str = folder, system: bool = system) -> None:
            for name in m.listdir(folder):
                path = join(folder, name)
                if m.isfile(path) and not name.startswith("."):
                    guard(items, path, partial(_crontab_items, m, items, path, system, None if system else name))

        guard(items, folder, tabs)
    for period in CRON_PERIODS:
        folder = f"/etc/cron.{period}"

        def scripts(folder: str = folder, period: str = period) -> None:
            for name in m.listdir(folder):
                if not name.startswith("."):
                    path = join(folder, name)
                    items[path] = {"source": folder, "kind": "cron-script", "schedule": period, "path": path}

        guard(items, folder, scripts)
    for unit, d in {**_systemd_units(m, (".timer",)), **_user_units(m, (".timer",))}.items():
        items[unit] = d if is_error(unit) else {**d, "kind": "timer"}
    return items


# -- autostart --------------------------------------------------------------

XDG_AUTOSTART = "/etc/xdg/autostart"
USER_AUTOSTART = ".config/autostart"


def autostart_folders(m: Machine) -> list[str]:
    return [XDG_AUTOSTART] + [join(u["home"], USER_AUTOSTART) for _n, u in m.homes()]


def collect_autostart(m: Machine) -> Items:
    items: Items = {}
    for folder in autostart_folders(m):

        def entries(folder: str = folder) -> None:
            for name in m.listdir(folder):
                if name.endswith(".desktop"):
                    path = join(folder, name)
                    guard(items, path, partial(_desktop, m, items, path, folder))

        guard(items, folder, entries)
    return items


def _desktop(m: Machine, items: Items, path: str, folder: str) -> None:
    text = m.read(path)
    if text is not None:
        items[path] = {"source": folder, "path": path, **autostart.parse_desktop_entry(text)}


def unit_folders(m: Machine) -> list[str]:
    """Every folder whose units the services and timers categories read."""
    homes = [join(u["home"], USER_HOME_UNITS) for _n, u in m.homes()]
    return [*SYSTEM_UNIT_DIRS, *USER_UNIT_DIRS, *homes, "/etc/init.d", *(f"/etc/rc{level}.d" for level in "2345")]
