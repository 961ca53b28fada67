"""Linux collectors: each reads its sources and hands the text to a pure parser.

Which pip packages: those that no system package manager tracks, i.e. the
ones ``pip install`` puts in ``/usr/local/lib/python3*/{dist,site}-packages``
(as root) and in each user's ``~/.local/lib/python3*/site-packages``
(``--user``). The distribution's own Python packages are already listed by
dpkg or rpm, and virtual environments are not searched (they can be
anywhere, and installing into one changes nothing outside it).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

from agent.capture.inventory import accounts, authorized_keys, autostart, packages, scheduled, services
from agent.capture.inventory.readers import SourceError, have, list_dir, read_text, run
from agent.capture.inventory.snapshot import Items, error_entry, is_error

ETC = "/etc"
SYSTEMD_RUNNING = "/run/systemd/system"
CRON_SPOOLS = ("/var/spool/cron/crontabs", "/var/spool/cron")  # Debian's, then Red Hat's
PIP_SYSTEM_GLOBS = ("/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages")


def _guard(items: Items, source: str, fill: Callable[[], None]) -> None:
    """Run ``fill``; a source that fails becomes an error entry instead of an exception."""
    try:
        fill()
    except (SourceError, OSError) as exc:
        key, details = error_entry(source, str(exc))
        items[key] = details


def _users() -> dict[str, dict]:
    return accounts.parse_passwd(read_text(f"{ETC}/passwd") or "")


def _homes() -> list[tuple[str, dict]]:
    """(user, passwd entry) of users whose home is a folder, each home once."""
    seen, result = set(), []
    for name, u in sorted(_users().items(), key=lambda kv: (kv[1]["uid"] is None, kv[1]["uid"] or 0, kv[0])):
        home = u["home"]
        if home and home not in seen and os.path.isdir(home):
            seen.add(home)
            result.append((name, u))
    return result


# -- packages ---------------------------------------------------------------


def collect_packages() -> Items:
    items: Items = {}

    def dpkg() -> None:
        for key, d in packages.parse_dpkg_query(run(["dpkg-query", "-W", "-f", packages.DPKG_FORMAT])).items():
            items[f"dpkg:{key}"] = {"source": "dpkg", **d}

    def rpm() -> None:
        for key, d in packages.parse_rpm_qa(run(["rpm", "-qa", "--qf", packages.RPM_FORMAT])).items():
            items[f"rpm:{key}"] = {"source": "rpm", **d}

    if have("dpkg-query"):
        _guard(items, "dpkg", dpkg)
    if have("rpm") and os.path.isdir("/var/lib/rpm"):
        _guard(items, "rpm", rpm)
    site_dirs = [d for pattern in PIP_SYSTEM_GLOBS for d in glob.glob(pattern)]
    for _user, u in _homes():
        site_dirs += glob.glob(os.path.join(glob.escape(u["home"]), ".local/lib/python3*/site-packages"))
    for site in sorted(set(site_dirs)):

        def pip(site: str = site) -> None:
            for entry in list_dir(site):
                parsed = packages.parse_dist_info_name(entry)
                if parsed:
                    name, version = parsed
                    items[f"pip:{name} ({site})"] = {"source": site, "name": name, "version": version}

        _guard(items, site, pip)
    return items


# -- services and timers ----------------------------------------------------


def _systemd_units(suffixes: tuple[str, ...]) -> Items:
    """Units enabled or running, from systemctl (which reads unit files even when systemd is not running)."""
    items: Items = {}

    def fill() -> None:
        types = ",".join(s.lstrip(".") for s in suffixes)
        files = services.parse_systemctl_list_unit_files(
            run(["systemctl", "list-unit-files", f"--type={types}", "--no-legend", "--no-pager"])
        )
        loaded = {}
        if os.path.isdir(SYSTEMD_RUNNING):
            loaded = services.parse_systemctl_list_units(
                run(["systemctl", "list-units", f"--type={types}", "--all", "--plain", "--no-legend", "--no-pager"])
            )
        for unit, d in services.merge_units(files, loaded, "systemctl").items():
            if unit.endswith(suffixes):
                items[unit] = d

    if have("systemctl"):
        _guard(items, "systemctl", fill)
    else:
        for wants in sorted(glob.glob(f"{ETC}/systemd/system/*.wants")):

            def links(wants: str = wants) -> None:
                for unit in list_dir(wants):
                    if unit.endswith(suffixes):
                        items[unit] = {"source": wants, "enabled": "enabled", "running": None}

            _guard(items, wants, links)
    return items


def _user_units(suffixes: tuple[str, ...]) -> Items:
    """Per-user systemd units enabled in ``~/.config/systemd/user/*.wants``."""
    items: Items = {}
    for user, u in _homes():
        for wants in sorted(glob.glob(os.path.join(glob.escape(u["home"]), ".config/systemd/user/*.wants"))):

            def links(wants: str = wants, user: str = user) -> None:
                for unit in list_dir(wants):
                    if unit.endswith(suffixes):
                        items[f"user {user}: {unit}"] = {"source": wants, "enabled": "enabled", "running": None}

            _guard(items, wants, links)
    return items


def _sysv_services() -> Items:
    """``/etc/init.d`` scripts, enabled when a start link is in ``/etc/rc[2-5].d``."""
    items: Items = {}

    def fill() -> None:
        started = set()
        for level in "2345":
            for link in list_dir(f"{ETC}/rc{level}.d"):
                if link.startswith("S") and len(link) > 3:
                    started.add(link[3:])
        for script in list_dir(f"{ETC}/init.d"):
            if not script.startswith(".") and script not in ("README", "skeleton", "rc", "rcS", "functions"):
                items[f"init.d: {script}"] = {
                    "source": f"{ETC}/init.d",
                    "enabled": "enabled" if script in started else "disabled",
                    "running": None,
                }

    _guard(items, f"{ETC}/init.d", fill)
    return items


def collect_services() -> Items:
    suffixes = (".service", ".socket")
    return {**_systemd_units(suffixes), **_user_units(suffixes), **_sysv_services()}


# -- scheduled jobs ---------------------------------------------------------


def _crontab_items(items: Items, path: str, system: bool, user: str | None = None) -> None:
    text = read_text(path)
    if text is None:
        return
    for job in scheduled.parse_crontab(text, system):
        who = job.get("user", user)
        key = f"{path}: {job['schedule']} {who + ' ' if system else ''}{job['command']}"
        items[key] = {"source": path, "kind": "cron", "schedule": job["schedule"], "user": who, "command": job["command"]}


def collect_scheduled() -> Items:
    items: Items = {}
    _guard(items, f"{ETC}/crontab", lambda: _crontab_items(items, f"{ETC}/crontab", True))
    for folder, system in ((f"{ETC}/cron.d", True), *((spool, False) for spool in CRON_SPOOLS)):

        def tabs(folder: str = folder, system: bool = system) -> None:
            for name in list_dir(folder):
                path = f"{folder}/{name}"
                if os.path.isfile(path) and not name.startswith("."):
                    _guard(items, path, lambda path=path, name=name: _crontab_items(items, path, system, None if system else name))

        _guard(items, folder, tabs)
    for period in ("hourly", "daily", "weekly", "monthly", "yearly"):
        folder = f"{ETC}/cron.{period}"

        def scripts(folder: str = folder, period: str = period) -> None:
            for name in list_dir(folder):
                if not name.startswith("."):
                    items[f"{folder}/{name}"] = {"source": folder, "kind": "cron-script", "schedule": period}

        _guard(items, folder, scripts)
    for unit, d in {**_systemd_units((".timer",)), **_user_units((".timer",))}.items():
        items[unit] = d if is_error(unit) else {**d, "kind": "timer"}
    return items


# -- autostart --------------------------------------------------------------


def collect_autostart() -> Items:
    items: Items = {}
    folders = [f"{ETC}/xdg/autostart"] + [os.path.join(u["home"], ".config/autostart") for _n, u in _homes()]
    for folder in folders:

        def entries(folder: str = folder) -> None:
            for name in list_dir(folder):
                if name.endswith(".desktop"):
                    path = f"{folder}/{name}"
                    _guard(items, path, lambda path=path: _desktop(items, path, folder))

        _guard(items, folder, entries)
    return items


def _desktop(items: Items, path: str, folder: str) -> None:
    text = read_text(path)
    if text is not None:
        items[path] = {"source": folder, **autostart.parse_desktop_entry(text)}


# -- users, groups, keys, sudoers -------------------------------------------


def _accounts() -> tuple[dict, dict]:
    users = accounts.parse_passwd(read_text(f"{ETC}/passwd") or "")
    groups = accounts.parse_group(read_text(f"{ETC}/group") or "")
    return users, groups


def collect_users() -> Items:
    users, groups = _accounts()
    admin = accounts.admin_groups_of(users, groups)
    return {name: {"source": f"{ETC}/passwd", **u, "admin_groups": admin[name]} for name, u in users.items()}


def collect_groups() -> Items:
    _users_, groups = _accounts()
    return {name: {"source": f"{ETC}/group", **g} for name, g in groups.items()}


def collect_authorized_keys() -> Items:
    items: Items = {}
    config = "\n".join(
        read_text(p) or ""
        for p in [f"{ETC}/ssh/sshd_config", *sorted(glob.glob(f"{ETC}/ssh/sshd_config.d/*.conf"))]
        if os.path.isfile(p) and os.access(p, os.R_OK)
    )
    patterns = authorized_keys.parse_authorized_keys_files(config)
    for user, u in _homes():
        for pattern in patterns:
            path = authorized_keys.expand_keys_file(pattern, user, u["home"], u["uid"])

            def keys(path: str = path, user: str = user) -> None:
                seen: dict[str, int] = {}
                for k in authorized_keys.parse_authorized_keys(read_text(path) or ""):
                    key = f"{path} {k['fingerprint']}"
                    seen[key] = seen.get(key, 0) + 1
                    if seen[key] > 1:  # the same key twice, e.g. once as cert-authority
                        key += f" #{seen[key]}"
                    items[key] = {"source": path, "user": user, **k}

            _guard(items, path, keys)
    return items


def collect_sudoers() -> Items:
    items: Items = {}
    pending, done = [f"{ETC}/sudoers"], set()
    while pending and len(done) < 256:
        path = pending.pop(0)
        if path in done:
            continue
        done.add(path)

        def rules(path: str = path) -> None:
            text = read_text(path)
            if text is None:
                return
            found, includes = accounts.parse_sudoers(text)
            for rule in found:
                items[f"{path}: {rule}"] = {"source": path, "rule": rule}
            base = os.path.dirname(path)
            for kind, target in includes:
                target = target if target.startswith("/") else os.path.join(base, target)
                if kind == "include":
                    pending.append(target)
                else:  # sudo skips names with a dot or ending in ~
                    pending.extend(f"{target}/{n}" for n in list_dir(target) if "." not in n and not n.endswith("~"))

        _guard(items, path, rules)
    return items
