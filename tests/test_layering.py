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


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_upwards(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


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
