"""Linux's categories: each collector with the files and folders that, when they change, mean
"collect it again" (the live watcher's inotify watches), or the cheap fingerprint to poll.

Every category that reads users' homes also watches ``/etc/passwd`` and
the homes that do not exist yet: a new account may come with its home's
keys, start-up files and units already in place.
"""

from __future__ import annotations

from functools import partial

from agent.capture.inventory import common, linux_login, linux_system
from agent.capture.inventory.linux_login import GROUP, GSHADOW, PASSWD, SHADOW
from agent.capture.inventory.linux_system import (
    CRON_PERIODS,
    CRON_SPOOLS,
    DPKG_DIR,
    PIP_SYSTEM_GLOBS,
    RPM_DIR,
)
from agent.capture.inventory.machine import Machine
from agent.capture.inventory.types import Categories, Category, Watch


def _files(m: Machine, *paths: str) -> list[Watch]:
    return [Watch(m.real(p)) for p in paths]


def _homes(m: Machine) -> list[Watch]:
    """``/etc/passwd``, and the home of every account whose home is not there yet: its creation
    (``useradd -m`` writes passwd first) is what makes the home's own files worth watching."""
    missing = [u["home"] for u in m.users().values() if u["home"].startswith("/") and not m.isdir(u["home"])]
    return _files(m, PASSWD, *missing)


def _packages(m: Machine) -> list[Watch]:
    sites = [d for pattern in PIP_SYSTEM_GLOBS for d in m.glob(pattern)]
    return _files(m, f"{DPKG_DIR}/status", f"{DPKG_DIR}/updates", RPM_DIR, *sites)


def _services(m: Machine) -> list[Watch]:
    return [Watch(m.real(f), depth=1) for f in linux_system.unit_folders(m)] + _homes(m)


def _scheduled(m: Machine) -> list[Watch]:
    folders = ["/etc/cron.d", *CRON_SPOOLS, *(f"/etc/cron.{p}" for p in CRON_PERIODS)]
    return _files(m, "/etc/crontab", "/etc/anacrontab", *folders) + _services(m)


def _autostart(m: Machine) -> list[Watch]:
    return _files(m, *linux_system.autostart_folders(m)) + _homes(m)


def _authorized_keys(m: Machine) -> list[Watch]:
    files = [path for _user, path in linux_login.authorized_keys_files(m)]
    return _files(m, *files, *linux_login.sshd_config_files(m), linux_login.SSHD_CONFIG_D) + _homes(m)


def _sudoers(m: Machine) -> list[Watch]:
    files, folders = linux_login.sudoers_files(m)
    return _files(m, *files, *folders)


def _shell(m: Machine) -> list[Watch]:
    return _files(m, *(path for _user, path in linux_login.shell_files(m)), *linux_login.SYSTEM_SHELL_DIRS) + _homes(m)


def _pam(m: Machine) -> list[Watch]:
    return _files(m, linux_login.PAM_CONF, linux_login.PAM_D) + [Watch(m.real(linux_login.SECURITY), depth=1)]


def linux_categories(root: str = "/") -> Categories:
    """Linux's table of categories, reading the machine under ``root`` (``/`` but in tests).

    ``listening`` and ``remote_access`` (``common.portable_categories``)
    look at this machine's kernel whatever the root.
    """
    m = Machine(root)
    table = [
        Category("packages", partial(linux_system.collect_packages, m), partial(_packages, m), quiet_s=0.5),
        Category("services", partial(linux_system.collect_services, m), partial(_services, m), quiet_s=0.2),
        Category("scheduled", partial(linux_system.collect_scheduled, m), partial(_scheduled, m), quiet_s=0.2),
        Category("autostart", partial(linux_system.collect_autostart, m), partial(_autostart, m)),
        Category("users", partial(linux_login.collect_users, m), partial(_files, m, PASSWD, SHADOW, GROUP)),
        Category("groups", partial(linux_login.collect_groups, m), partial(_files, m, GROUP, GSHADOW)),
        Category("authorized_keys", partial(linux_login.collect_authorized_keys, m), partial(_authorized_keys, m)),
        Category("sudoers", partial(linux_login.collect_sudoers, m), partial(_sudoers, m)),
        Category("shell_startup", partial(linux_login.collect_shell_startup, m), partial(_shell, m)),
        Category("pam", partial(linux_login.collect_pam, m), partial(_pam, m)),
        Category("preload", partial(linux_login.collect_preload, m), partial(_files, m, linux_login.LD_SO_PRELOAD)),
    ]
    return {**{c.name: c for c in table}, **common.portable_categories()}
