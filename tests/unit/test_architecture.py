"""The core must import and run on a server with no display: no Qt under agent/."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def agent_modules():
    for path in sorted((ROOT / "agent").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def test_no_module_under_agent_imports_qt():
    offenders = []
    for path, _ in agent_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "shiboken6", "ui"} for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_every_agent_module_imports_with_qt_unavailable():
    names = [name for _, name in agent_modules() if name != "agent.__main__"]
    code = (
        "import sys\n"
        "for blocked in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6'):\n"
        "    sys.modules[blocked] = None\n"
        "import importlib\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
