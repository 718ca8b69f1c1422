"""Dependencies point one way: app -> annotation -> {alignment, storage}.

Checked twice: statically (every import statement in every module) and dynamically (importing a
lower layer in a fresh interpreter must not load what it is forbidden to use).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "storage": {"annotation", "alignment", "app", "torch", "transformers", "gradio", "peft", "trl"},
    "alignment": {"annotation", "storage", "app", "gradio", "sqlalchemy", "alembic"},
    "annotation": {"app"},
}

# Leaf modules every layer may import: they depend on the standard library only (checked below), so
# importing one loads nothing a layer is kept from. storage.hh is the one HH-RLHF transcript reader,
# shared by the importers and the training data loader.
SHARED_LEAVES = {"storage.hh"}


def imported_modules(path: Path, shared_ok: bool = False) -> set[str]:
    """Top-level names of what ``path`` imports (``shared_ok``: not counting the shared leaves)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        names.update(m.split(".")[0] for m in modules if not (shared_ok and m in SHARED_LEAVES))
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_upwards(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path, shared_ok=True) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


@pytest.mark.parametrize("module", sorted(SHARED_LEAVES))
def test_a_shared_leaf_imports_the_standard_library_only(module):
    path = ROOT / f"{module.replace('.', '/')}.py"
    assert imported_modules(path) - set(sys.stdlib_module_names) - {"__future__"} == set()
    assert (path.parent / "__init__.py").read_text(encoding="utf-8").strip() == "", \
        "importing a shared leaf runs its package's __init__: keep that empty"


def test_app_reaches_lower_layers_only_through_annotation():
    assert imported_modules(ROOT / "app.py") & {"storage", "alignment"} == set()


@pytest.mark.parametrize("module, banned", [
    ("storage.db, storage.models, storage.importing, storage.exporting", {"torch", "gradio", "transformers"}),
    ("alignment.models, alignment.sampling, alignment.chat", {"gradio", "sqlalchemy"}),
])
def test_importing_a_lower_layer_loads_nothing_forbidden(module, banned):
    code = f"import sys, {module}; print(','.join(sorted(m for m in {sorted(banned)!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------------------------
# No import cycles inside the project
# --------------------------------------------------------------------------------------------

PROJECT = ("alignment", "annotation", "storage", "app")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, at the top or inside a function (a lazy import still ties
    the two modules together); ``from pkg import mod`` counts as importing ``pkg.mod``."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up (level - 1) packages from this module's own
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules)
    return found


def import_cycles() -> list[list[str]]:
    """Every strongly connected group of two or more project modules (Tarjan's algorithm)."""
    paths = [ROOT / "app.py", *(p for top in PROJECT if top != "app" for p in sorted((ROOT / top).rglob("*.py")))]
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): project_imports(p, modules) - {module_name(p)} for p in paths}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_inside_the_project():
    assert import_cycles() == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check itself: two modules that import each other (one of them lazily) are reported."""
    package = tmp_path / "storage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from storage import b\n")
    (package / "b.py").write_text("def f():\n    from storage.a import x\n")
    (tmp_path / "app.py").write_text("import storage.a\n")
    for top in ("alignment", "annotation"):
        (tmp_path / top).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert import_cycles() == [["storage.a", "storage.b"]]
