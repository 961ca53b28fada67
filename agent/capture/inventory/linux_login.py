"""Linux collectors of who may log in and what runs when they do: users, groups, SSH keys, sudoers,
shell start-up files, PAM and ``/etc/ld.so.preload``.

Shell start-up files and ``/etc/security`` are items by file, with a SHA-256
of the content and a count of lines (never the text: a ``.bashrc`` holds
exported tokens as often as not); the file recorder shows the redacted diff
of the same change. PAM rules and preloaded libraries are items by line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import Any

from agent.capture.inventory import accounts, authorized_keys, startup
from agent.capture.inventory.linux_system import guard
from agent.capture.inventory.machine import Machine, join
from agent.capture.inventory.readers import SourceError
from agent.capture.inventory.types import Items

PASSWD, SHADOW, GROUP, GSHADOW = "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"
SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_CONFIG_D = "/etc/ssh/sshd_config.d"
SUDOERS = "/etc/sudoers"
MAX_SUDOERS_FILES = 256
SYSTEM_SHELL_FILES = (
    "/etc/profile", "/etc/bash.bashrc", "/etc/bashrc", "/etc/environment", "/etc/zshenv", "/etc/zprofile",
    "/etc/zshrc", "/etc/zlogin", "/etc/zsh/zshenv", "/etc/zsh/zprofile", "/etc/zsh/zshrc", "/etc/zsh/zlogin",
)
SYSTEM_SHELL_DIRS = ("/etc/profile.d",)
USER_SHELL_FILES = (".profile", ".bash_profile", ".bash_login", ".bashrc", ".bash_logout", ".zshenv", ".zprofile",
                    ".zshrc", ".zlogin", ".pam_environment")
PAM_CONF = "/etc/pam.conf"
PAM_D = "/etc/pam.d"
SECURITY = "/etc/security"
SECURITY_SUBDIRS = ("limits.d", "namespace.d", "pam_env.d", "access.d", "faillock.d")
SECURITY_DATA = frozenset({"opasswd"})  # old password hashes written by pam_pwhistory: data, not configuration
LD_SO_PRELOAD = "/etc/ld.so.preload"
SKEL = "/etc/skel"


def _accounts(m: Machine) -> tuple[dict, dict]:
    return m.users(), accounts.parse_group(m.read("/etc/group") or "")


def _shadow(m: Machine) -> dict[str, dict]:
    """Password states by user; empty when shadow cannot be read (not root): then no user has them."""
    try:
        return accounts.parse_shadow(m.read(SHADOW) or "")
    except (SourceError, OSError):
        return {}


def collect_users(m: Machine) -> Items:
    users, groups = _accounts(m)
    admin = accounts.admin_groups_of(users, groups)
    shadow = _shadow(m)
    return {name: {"source": "/etc/passwd", **u, "admin_groups": admin[name], **shadow.get(name, {})}
            for name, u in users.items()}


def collect_groups(m: Machine) -> Items:
    _users, groups = _accounts(m)
    return {name: {"source": "/etc/group", **g} for name, g in groups.items()}


def sshd_config_files(m: Machine) -> list[str]:
    return [SSHD_CONFIG, *m.glob(f"{SSHD_CONFIG_D}/*.conf")]


def authorized_keys_files(m: Machine) -> list[tuple[str, str]]:
    """(user, machine path) of every file sshd reads keys from, for every user with a home."""
    config = "\n".join(m.read(p) or "" for p in sshd_config_files(m) if m.isfile(p))
    patterns = authorized_keys.parse_authorized_keys_files(config)
    return [(user, authorized_keys.expand_keys_file(p, user, u["home"], u["uid"]))
            for user, u in m.homes() for p in patterns]


def collect_authorized_keys(m: Machine) -> Items:
    items: Items = {}
    for user, path in authorized_keys_files(m):

        def keys(path: str = path, user: str = user) -> None:
            seen: dict[str, int] = {}
            for k in authorized_keys.parse_authorized_keys(m.read(path) or ""):
                key = f"{path} {k['fingerprint']}"
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:  # the same key twice, e.g. once as cert-authority
                    key += f" #{seen[key]}"
                items[key] = {"source": path, "user": user, **k}

        guard(items, path, keys)
    return items


def _walk_sudoers(m: Machine, read: Callable[[str], str | None],
                  listdir: Callable[[str], list[str]]) -> tuple[list[str], list[str]]:
    """(files, folders) of the sudoers policy, following its includes from ``/etc/sudoers``."""
    files: list[str] = []
    folders: list[str] = []
    pending, done = [SUDOERS], set[str]()
    while pending and len(done) < MAX_SUDOERS_FILES:
        path = pending.pop(0)
        if path in done:
            continue
        done.add(path)
        files.append(path)
        text = read(path)
        if text is None:
            continue
        base = path.rsplit("/", 1)[0] or "/"
        for kind, target in accounts.parse_sudoers(text)[1]:
            target = target if target.startswith("/") else join(base, target)
            if kind == "include":
                pending.append(target)
            else:  # sudo skips names with a dot or ending in ~
                folders.append(target)
                pending.extend(join(target, n) for n in listdir(target) if "." not in n and not n.endswith("~"))
    return files, folders


def sudoers_files(m: Machine) -> tuple[list[str], list[str]]:
    """(files read, folders included) of the sudoers policy; what cannot be read is left out."""

    def quietly(call: Callable[[str], Any], path: str, empty: Any) -> Any:
        try:
            return call(path)
        except (SourceError, OSError):
            return empty

    return _walk_sudoers(m, lambda p: quietly(m.read, p, None), lambda p: quietly(m.listdir, p, []))


def collect_sudoers(m: Machine) -> Items:
    items: Items = {}

    def read(path: str) -> str | None:
        text: list[str | None] = [None]

        def rules() -> None:
            text[0] = m.read(path)
            for rule in accounts.parse_sudoers(text[0] or "")[0]:
                items[f"{path}: {rule}"] = {"source": path, "rule": rule}

        guard(items, path, rules)
        return text[0]

    def listdir(path: str) -> list[str]:
        names: list[str] = []
        guard(items, path, lambda: names.extend(m.listdir(path)))
        return names

    _walk_sudoers(m, read, listdir)
    return items


# -- shell start-up files ---------------------------------------------------------


def shell_files(m: Machine) -> list[tuple[str | None, str]]:
    """(user, machine path) of the start-up files that exist or may appear; user None for every user's."""
    found: list[tuple[str | None, str]] = [(None, p) for p in SYSTEM_SHELL_FILES]
    for folder in SYSTEM_SHELL_DIRS:
        found += [(None, join(folder, n)) for n in m.listdir(folder)]
    for user, u in m.homes():
        found += [(user, join(u["home"], n)) for n in USER_SHELL_FILES]
    return found


def _file_item(m: Machine, items: Items, path: str, **extra: object) -> None:
    data = m.read_bytes(path)
    if data is None:
        return
    lines = sum(1 for line in data.splitlines() if line.strip() and not line.lstrip().startswith(b"#"))
    items[path] = {"source": path, **extra, "sha256": hashlib.sha256(data).hexdigest(), "lines": lines}


def _skel_hashes(m: Machine) -> dict[str, str]:
    """name -> SHA-256 of the files in ``/etc/skel`` (what ``useradd -m`` copies into a new home)."""
    found = {}
    for name in USER_SHELL_FILES:
        try:
            data = m.read_bytes(join(SKEL, name))
        except (SourceError, OSError):
            continue
        if data is not None:
            found[name] = hashlib.sha256(data).hexdigest()
    return found


def collect_shell_startup(m: Machine) -> Items:
    """Start-up files; a user's file that is still the copy of ``/etc/skel``'s says so (``skel``)."""
    items: Items = {}
    for user, path in shell_files(m):
        guard(items, path, partial(_file_item, m, items, path, user=user))
    skel = _skel_hashes(m)
    for path, d in items.items():
        if d.get("user") and skel.get(path.rsplit("/", 1)[-1]) == d.get("sha256"):
            d["skel"] = True
    return items


# -- PAM, ld.so.preload -------------------------------------------------------------


def _pam_items(m: Machine, items: Items, path: str, service: str | None) -> None:
    text = m.read(path)
    if text is None:
        return
    for rule in startup.parse_pam(text, with_service=service is None):
        svc = rule.pop("service", service)
        items[f"{path}: {svc + ' ' if service is None else ''}{startup.pam_rule_text(rule)}"] = {
            "source": path, "service": svc, **rule,
        }


def security_files(m: Machine) -> list[str]:
    names = [n for n in m.listdir(SECURITY) if n not in SECURITY_DATA and not n.startswith(".")]
    paths = [join(SECURITY, n) for n in names if n not in SECURITY_SUBDIRS]
    for sub in SECURITY_SUBDIRS:
        paths += [join(join(SECURITY, sub), n) for n in m.listdir(join(SECURITY, sub)) if not n.startswith(".")]
    return [p for p in paths if m.isfile(p)]


def collect_pam(m: Machine) -> Items:
    items: Items = {}
    guard(items, PAM_CONF, lambda: _pam_items(m, items, PAM_CONF, None))

    def services() -> None:
        for name in m.listdir(PAM_D):
            if not name.startswith(".") and not name.endswith(("~", ".dpkg-old", ".dpkg-dist", ".dpkg-new")):
                path = join(PAM_D, name)
                guard(items, path, partial(_pam_items, m, items, path, name))

    guard(items, PAM_D, services)

    def security() -> None:
        for path in security_files(m):
            guard(items, path, partial(_file_item, m, items, path))

    guard(items, SECURITY, security)
    return items


def collect_preload(m: Machine) -> Items:
    items: Items = {}

    def fill() -> None:
        text = m.read(LD_SO_PRELOAD)
        for library in startup.parse_ld_so_preload(text or ""):
            items[f"{LD_SO_PRELOAD}: {library}"] = {"source": LD_SO_PRELOAD, "library": library}

    guard(items, LD_SO_PRELOAD, fill)
    return items
