"""Installed packages: dpkg, rpm and pip, pure parsers over their outputs."""

from __future__ import annotations

import re

DPKG_FORMAT = r"${binary:Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n"
RPM_FORMAT = r"%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"
_PRESENT = frozenset({"installed", "half-installed", "half-configured", "unpacked", "triggers-awaited",
                      "triggers-pending"})


def parse_dpkg_query(text: str) -> dict[str, dict]:
    """``dpkg-query -W -f DPKG_FORMAT``: package -> name, version, arch (state unless installed)."""
    packages = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or not fields[0] or fields[3] not in _PRESENT:
            continue
        name, version, arch, state = fields
        details = {"name": name.split(":", 1)[0], "version": version, "arch": arch}
        if state != "installed":
            details["state"] = state
        packages[name] = details
    return packages


def parse_rpm_qa(text: str) -> dict[str, dict]:
    """``rpm -qa --qf RPM_FORMAT``: name.arch -> name, version(s), arch."""
    packages: dict[str, dict] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0]:
            continue
        name, version, arch = fields
        version = version.removeprefix("0:")
        key = f"{name}.{arch}"
        if key in packages:  # several versions at once (kernels)
            versions = sorted(set(packages[key]["version"].split(", ")) | {version})
            packages[key]["version"] = ", ".join(versions)
        else:
            packages[key] = {"name": name, "version": version, "arch": arch}
    return packages


def normalise_name(name: str) -> str:
    """A Python distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_dist_info_name(dirname: str) -> tuple[str, str] | None:
    """``requests-2.31.0.dist-info`` or ``foo-1.0-py3.11.egg-info`` -> (name, version)."""
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._]*?)-([^-]+?)(?:-py\d[\d.]*)?\.(?:dist|egg)-info", dirname)
    if not m:
        return None
    return normalise_name(m.group(1)), m.group(2)
