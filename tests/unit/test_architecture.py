"""The dependency graph is the first map a newcomer reads: this test keeps it honest.

- No Qt under ``agent/``: the core runs on a server with no display.
- ``agent/`` packages import only downwards, in the order of ``LAYERS``
  (imports inside functions count too): a package may import its own
  modules and anything in an earlier layer, nothing in its own layer or later.
- No import cycles between modules, inside a package or across.
- An import inside a function says why, in a comment on its line or the line
  above (a platform-only module, the start-up time of ``ssh-authorize``…).
- No ``except ImportError`` around our own modules, and no module over 600 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. Each entry is one layer: the packages (or top-level modules) of agent/ in it.
# "agent" is the package's own __init__ (the version); "__main__" is `python -m agent`.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("agent", "errors"),
    ("canonical", "text", "sshwire", "atomic", "sigcheck"),
    ("clock",),
    ("sshkeys",),
    ("sshsig",),
    ("settings",),
    ("home",),
    ("records", "devicekey", "trust", "redact"),
    ("journal", "ledger"),
    ("history",),
    ("bundle", "witness"),
    ("capture",),
    ("session",),
    ("api",),
    ("ssh",),
    ("publish",),
    ("review",),
    ("service",),
    ("cli",),
    ("__main__",),
)
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_LINES = 600


def agent_modules():
    for path in sorted((ROOT / "agent").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


MODULES = dict((name, path) for path, name in agent_modules())


def top_of(module: str) -> str:
    """The layer name of a module: ``agent.capture.files`` -> ``capture``, ``agent`` -> ``agent``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "agent"


def _resolve(importer: str, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = importer.split(".")
    is_package = MODULES.get(importer, Path()).name == "__init__.py"
    drop = node.level - (1 if is_package else 0)
    base = base[: len(base) - drop] if drop else base
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """``(imported agent module, line, inside a function)`` for every import of ours in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, child)
                if base:
                    # `from agent.x import y` imports agent.x.y when y is a module, else agent.x
                    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            for name in names:
                if name == "agent" or name.startswith("agent."):
                    while name not in MODULES and "." in name:
                        name = name.rsplit(".", 1)[0]
                    found.append((name, child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return found


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


def test_every_package_of_agent_has_a_layer():
    unknown = sorted({top_of(m) for m in MODULES} - set(LAYER_OF))
    assert unknown == [], f"add these to LAYERS (where they belong in the order): {unknown}"


def layer_violations() -> list[str]:
    bad = []
    for module in MODULES:
        mine = top_of(module)
        for target, line, _ in imports_of(module):
            theirs = top_of(target)
            if theirs == mine or theirs not in LAYER_OF or mine not in LAYER_OF:
                continue
            if LAYER_OF[theirs] >= LAYER_OF[mine]:
                where = "the same layer" if LAYER_OF[theirs] == LAYER_OF[mine] else "a higher layer"
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} ({where})")
    return bad


def test_agent_packages_import_only_downwards():
    assert layer_violations() == []


def module_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports in functions included."""
    graph = defaultdict(set)
    for module in MODULES:
        for target, _, _ in imports_of(module):
            if target != module:
                graph[module].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(MODULES):
        if v not in index:
            strongconnect(v)
    return cycles


def test_no_import_cycles():
    assert module_cycles() == []


def _says_why(lines: list[str], line: int) -> bool:
    """A comment on the import's line, or above it (above the block of imports it belongs to)."""
    if "#" in lines[line - 1]:
        return True
    above = line - 2
    while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_an_import_inside_a_function_says_why():
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for _, line, nested in imports_of(module):
            if nested and not _says_why(lines, line):
                silent.append(f"{path.relative_to(ROOT)}:{line}")
    assert silent == [], "say why this import is inside a function, in a comment on its line or the one above"


def test_no_except_import_error_around_our_own_modules():
    guarded = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches = [h.type for h in node.handlers if h.type is not None]
            names = {n.id for t in catches for n in ast.walk(t) if isinstance(n, ast.Name)}
            if not names & {"ImportError", "ModuleNotFoundError"}:
                continue
            for inner in node.body:
                for sub in ast.walk(inner):
                    mod = sub.module if isinstance(sub, ast.ImportFrom) else None
                    mods = [a.name for a in sub.names] if isinstance(sub, ast.Import) else [mod or ""]
                    if any(m == "agent" or m.startswith("agent.") for m in mods):
                        guarded.append(f"{path.relative_to(ROOT)}:{sub.lineno}")
    assert guarded == []


def test_no_module_under_agent_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_architecture_test_catches_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: an upward import and a cycle planted in a copy are caught."""
    fake_root = tmp_path / "repo"
    (fake_root / "agent" / "journal").mkdir(parents=True)
    (fake_root / "agent" / "session").mkdir(parents=True)
    (fake_root / "agent" / "__init__.py").write_text("")
    (fake_root / "agent" / "journal" / "__init__.py").write_text("")
    (fake_root / "agent" / "session" / "__init__.py").write_text("")
    (fake_root / "agent" / "journal" / "writer.py").write_text(
        "def f():\n    from agent.session import manager  # planted\n    return manager\n")
    (fake_root / "agent" / "session" / "manager.py").write_text("from agent.journal import writer\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    monkeypatch.setattr(sys.modules[__name__], "MODULES",
                        {name: path for path, name in agent_modules()})
    assert any("journal/writer.py:2 imports agent.session.manager (a higher layer)" in v
               for v in layer_violations())
    assert ["agent.journal.writer", "agent.session.manager"] in module_cycles()
