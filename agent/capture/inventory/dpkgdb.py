"""dpkg's database (``/var/lib/dpkg``) and rpm's answers: pure parsers."""

from __future__ import annotations

import re

_MD5 = re.compile(r"^[0-9a-f]{32}$")


def parse_md5sums(text: str) -> dict[str, str]:
    """``info/PKG.md5sums`` (``md5  path`` without its leading slash): machine path -> md5."""
    sums = {}
    for line in text.splitlines():
        digest, sep, path = line.partition("  ")
        if sep and _MD5.match(digest) and path:
            sums["/" + path.lstrip("/")] = digest
    return sums


def parse_list(text: str) -> set[str]:
    """``info/PKG.list``: the package's paths (files, folders, links)."""
    return {line for line in text.splitlines() if line.startswith("/")}


def parse_status_conffiles(text: str, wanted: set[str] | None = None) -> dict[str, dict[str, str]]:
    """``/var/lib/dpkg/status`` -> package (``name`` or ``name:arch``) -> conffile -> md5 at install.

    Only conffiles with a real hash are kept: ``newconffile`` (not configured
    yet) and those marked ``obsolete`` or ``remove-on-upgrade`` say nothing
    about what the package ships now. Both ``name`` and ``name:arch`` keys are
    given, so a lookup by either works. ``wanted`` (names) limits the work.
    """
    result: dict[str, dict[str, str]] = {}
    name = arch = None
    conffiles: dict[str, str] = {}
    in_conffiles = False

    def flush() -> None:
        if name and conffiles and (wanted is None or name in wanted):
            result[name] = dict(conffiles)
            if arch:
                result[f"{name}:{arch}"] = dict(conffiles)

    for line in text.splitlines():
        if not line.strip():
            flush()
            name = arch = None
            conffiles = {}
            in_conffiles = False
            continue
        if line[0] in " \t":
            if in_conffiles:
                fields = line.split()
                if len(fields) == 2 and fields[0].startswith("/") and _MD5.match(fields[1]):
                    conffiles[fields[0]] = fields[1]
            continue
        key, _, value = line.partition(":")
        in_conffiles = key == "Conffiles"
        if key == "Package":
            name = value.strip()
        elif key == "Architecture":
            arch = value.strip()
    flush()
    return result


def parse_dpkg_search(text: str) -> list[tuple[str, str]]:
    """``dpkg-query -S PATH``: (package, path) pairs; diversion lines are left out.

    A line may name several packages (``a, b: /path``) when they share a folder.
    """
    pairs = []
    for line in text.splitlines():
        if line.startswith(("diversion by", "local diversion")):
            continue
        packages, sep, path = line.partition(": ")
        if not sep or not path.startswith("/"):
            continue
        for package in packages.split(","):
            package = package.strip()
            if package and " " not in package:
                pairs.append((package, path))
    return pairs


def parse_rpm_qf(text: str) -> tuple[str, str] | None:
    """``rpm -qf --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n' PATH``: (name, version) of the first owner."""
    for line in text.splitlines():
        name, sep, version = line.partition("\t")
        if sep and name and version and " " not in name:
            return name, version
    return None


def parse_rpm_verify(text: str, path: str) -> bool:
    """``rpm -V PACKAGE``: whether ``path``'s content is what the package shipped.

    rpm lists only files that differ: ``S.5....T.  c /etc/crontab``; a ``5``
    (or ``?``: could not be read) in the third column, or ``missing``, means
    not the shipped content. A path not listed matches.
    """
    for line in text.splitlines():
        if not line.endswith((" " + path, "\t" + path)) or not line.split():
            continue
        flags = line.split()[0]
        if flags == "missing" or (len(flags) >= 3 and flags[2] in "5?"):
            return False
    return True
