"""Did a change come with a package? Attribution of an item's file to dpkg's (or rpm's) database.

Installing ``cron`` or ``sudo`` adds scheduled jobs, sudo rules and PAM
rules that are ways back in by their shape. They should not read as the
technician adding them, but neither may a technician hide behind a package:
they can drop a file into a folder that a package owns, edit a package's
conffile, enable a unit that a package shipped disabled, or put back a
package's file that was deleted. So a change *came with a package* only
when all three hold:

1. its file (the item's ``path``, else its ``source``) is one of the
   package's files: listed in ``/var/lib/dpkg/info/PKG.list`` (by path, with
   ``/usr`` merged: ``/lib/x`` and ``/usr/lib/x`` are one file); a new file
   in a package's folder is not;
2. its content is what the package shipped: the MD5 in ``PKG.md5sums``, or
   for a conffile the MD5 that dpkg recorded in ``status`` when it installed
   it (``rpm -V`` on rpm systems). An edited conffile is not;
3. the package was installed or upgraded during the session: it is not in
   the "before" inventory's packages, or with another version. A unit that
   a package shipped long ago and that is enabled now was enabled by
   someone, not by the package.

Anything else is *unexplained*, with what is known said in plain words
("belongs to package openssh-server …, which was not installed or upgraded
during this session"). What this cannot tell: a package the technician
built and installed themselves (``dpkg -i evil.deb``) passes all three;
its installation is a ``packages`` change of its own, the attribution names
it, and the way back in is still flagged and alarmed, only marked as having
come with that package. And a root technician can rewrite dpkg's database
(``md5sums``, ``status``) as easily as the file: attribution is a reading
aid for the customer, not a proof.

While dpkg runs (its lock ``/var/lib/dpkg/lock`` is held), its database is
half-written: the live watcher holds back changes that are not attributed
yet until dpkg is done (see :meth:`PackageOrigins.busy`).
"""

from __future__ import annotations

import hashlib
import os
import re

from agent.capture.inventory import dpkgdb, procfs
from agent.capture.inventory.linux_system import DPKG_DIR, collect_packages
from agent.capture.inventory.machine import Machine
from agent.capture.inventory.readers import SourceError, have, run
from agent.capture.inventory.types import Items, is_error

MAX_HASH_BYTES = 64 << 20
DPKG_LOCKS = ("lock", "lock-frontend")
_MERGED = re.compile(r"^/(?:usr/)?(bin|sbin|lib|lib32|lib64|libx32)/")


def aliases(path: str) -> list[str]:
    """``path`` and, with ``/usr`` merged, the other name of the same file (``/lib/x`` <-> ``/usr/lib/x``)."""
    m = _MERGED.match(path)
    if not m:
        return [path]
    rest = path[m.end():]
    return list(dict.fromkeys([path, f"/{m.group(1)}/{rest}", f"/usr/{m.group(1)}/{rest}"]))


def _versions(items: Items | None, prefix: str) -> dict[str, str] | None:
    """package key (``cron``, ``libc6:amd64``) -> version, of a packages category; None if it failed."""
    if items is None or any(is_error(k) and v.get("source") == prefix for k, v in items.items()):
        return None
    return {k[len(prefix) + 1:]: v.get("version", "") for k, v in items.items() if k.startswith(prefix + ":")}


class PackageOrigins:
    """Attributes files to packages installed or upgraded since ``before_packages`` (the "before"
    inventory's ``packages`` category; None when it was not taken: then nothing is attributed)."""

    def __init__(self, machine: Machine, before_packages: Items | None):
        self._m = machine
        self._before_dpkg = _versions(before_packages, "dpkg")
        self._before_rpm = _versions(before_packages, "rpm")
        self._now: tuple[tuple, dict[str, str] | None, dict[str, str] | None] | None = None
        self._lists: dict[str, tuple[float, set[str]]] = {}

    # -- dpkg's state -------------------------------------------------------------

    def _stamp(self) -> tuple:
        """What changes whenever dpkg's database does: its status file and pending updates."""
        stamp: list[tuple[int, int, int] | None] = []
        for name in ("status", "updates"):
            try:
                st = os.stat(self._m.real(f"{DPKG_DIR}/{name}"))
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def _current(self) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        stamp = self._stamp()
        if self._now is None or self._now[0] != stamp:
            items = collect_packages(self._m)
            self._now = (stamp, _versions(items, "dpkg"), _versions(items, "rpm"))
        return self._now[1], self._now[2]

    def session_packages(self) -> dict[str, dict[str, str]]:
        """manager -> package -> version, of packages installed or upgraded since the "before"."""
        dpkg_now, rpm_now = self._current()
        found: dict[str, dict[str, str]] = {}
        for manager, before, now in (("dpkg", self._before_dpkg, dpkg_now), ("rpm", self._before_rpm, rpm_now)):
            if before is None or now is None:
                continue
            changed = {k: v for k, v in now.items() if before.get(k) != v}
            if changed:
                found[manager] = changed
        return found

    def busy(self) -> bool:
        """Whether dpkg (or apt through it) is running now: its database may be half-written."""
        return any(procfs.is_locked(self._m.real(f"{DPKG_DIR}/{name}")) for name in DPKG_LOCKS)

    def _list(self, package: str) -> set[str]:
        path = self._m.real(f"{DPKG_DIR}/info/{package}.list")
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return set()
        cached = self._lists.get(package)
        if cached is None or cached[0] != mtime:
            try:
                text = self._m.read(f"{DPKG_DIR}/info/{package}.list") or ""
            except (SourceError, OSError):
                text = ""
            cached = (mtime, dpkgdb.parse_list(text))
            self._lists[package] = cached
        return cached[1]

    def _shipped_md5(self, package: str, names: list[str]) -> str | None:
        """The MD5 the package shipped for the file (any of its names), from md5sums or status's conffiles."""
        try:
            sums = dpkgdb.parse_md5sums(self._m.read(f"{DPKG_DIR}/info/{package}.md5sums") or "")
        except (SourceError, OSError):
            sums = {}
        for name in names:
            if name in sums:
                return sums[name]
        try:
            status = self._m.read_bytes(f"{DPKG_DIR}/status") or b""
        except (SourceError, OSError):
            return None
        conffiles = dpkgdb.parse_status_conffiles(status.decode("utf-8", "replace"), {package.split(":", 1)[0]})
        for name in names:
            if name in conffiles.get(package, {}):
                return conffiles[package][name]
        return None

    def _md5(self, path: str) -> str | None:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with open(self._m.real(path), "rb") as f:
                read = 0
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    read += len(chunk)
                    if read > MAX_HASH_BYTES:
                        return None
        except OSError:
            return None
        return digest.hexdigest()

    def _dpkg_owner(self, names: list[str]) -> tuple[str, str] | None:
        """(package, version) of any package that lists the file, asked of dpkg-query (slower)."""
        if not have("dpkg-query"):
            return None
        admin = [] if self._m.is_real else [f"--admindir={self._m.real(DPKG_DIR)}"]
        for name in names:
            try:
                pairs = dpkgdb.parse_dpkg_search(run(["dpkg-query", *admin, "-S", name], timeout=10))
            except SourceError:
                continue
            for package, _path in pairs:
                dpkg_now, _rpm = self._current()
                return package, (dpkg_now or {}).get(package, "")
        return None

    # -- the answer -----------------------------------------------------------------

    def attribute(self, path: str | None, look_further: bool = True) -> dict:
        """``{"origin", "package", "origin_detail"}`` for a change whose item is defined by ``path``.

        ``origin`` is ``package`` when it came with a package (the three
        conditions in the module's docstring), else ``unexplained``.
        ``package`` is ``{"manager", "name", "version", "path", "shipped",
        "in_session"}`` when some package owns the file, else None.
        ``look_further``: also ask dpkg-query which package owns the file when
        none installed during the session does (about 0.1 s).
        """
        none = {"origin": "unexplained", "package": None, "origin_detail": None}
        if not path or not path.startswith("/"):
            return none
        names = aliases(path)
        session = self.session_packages()
        for package, version in sorted(session.get("dpkg", {}).items()):
            listed = self._list(package)
            owned = next((n for n in names if n in listed), None)
            if owned is None:
                continue
            shipped_md5 = self._shipped_md5(package, names)
            shipped = shipped_md5 is not None and shipped_md5 == self._md5(path)
            return self._answer("dpkg", package, version, owned, shipped, True)
        if self._m.is_real and have("rpm") and "rpm" in session:
            answer = self._rpm(path, session["rpm"])
            if answer:
                return answer
        if look_further:
            owner = self._dpkg_owner(names)
            if owner:
                return self._answer("dpkg", owner[0], owner[1], path, None, False)
        return none

    def _rpm(self, path: str, session: dict[str, str]) -> dict | None:
        try:
            owner = dpkgdb.parse_rpm_qf(run(["rpm", "-qf", "--qf", "%{NAME}\\t%{VERSION}-%{RELEASE}\\n", path]))
        except SourceError:
            return None
        if owner is None:
            return None
        name, version = owner
        in_session = any(k.rsplit(".", 1)[0] == name for k in session)
        shipped = False
        if in_session:
            try:  # rpm -V exits 1 when some file of the package differs: its output is still the answer
                shipped = dpkgdb.parse_rpm_verify(run(["rpm", "-V", name], ok=(0, 1)), path)
            except SourceError:
                shipped = False
        return self._answer("rpm", name, version, path, shipped, in_session)

    @staticmethod
    def _answer(manager: str, name: str, version: str, path: str, shipped: bool | None, in_session: bool) -> dict:
        label = f"{name} {version}".strip()
        if in_session and shipped:
            origin, detail = "package", f"came with package {label}"
        elif in_session:
            origin = "unexplained"
            detail = f"belongs to package {label}, but its content is not what the package shipped"
        else:
            origin = "unexplained"
            detail = f"belongs to package {label}, which was not installed or upgraded during this session"
        return {
            "origin": origin,
            "package": {"manager": manager, "name": name, "version": version, "path": path,
                        "shipped": bool(shipped), "in_session": in_session},
            "origin_detail": detail,
        }
