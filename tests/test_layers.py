"""The package's layering, read from the source: runtime and export never import each other (the
bundle format between them is vdm/bundle.py), and no library module imports a CLI module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"vdm.runtime": ROOT / "runtime", "vdm.export": ROOT / "export", "vdm": ROOT / "vdm"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [("vdm.runtime", "vdm.export"), ("vdm.export", "vdm.runtime")])
def test_runtime_and_export_never_import_each_other(package, forbidden):
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.startswith(forbidden))
                 for p in files_of(PACKAGES[package])}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_no_library_module_imports_a_cli_module():
    library = [p for folder in PACKAGES.values() for p in files_of(folder) if "cli" not in p.relative_to(ROOT).parts]
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.startswith("vdm.cli"))
                 for p in library}
    assert {f: m for f, m in offenders.items() if m} == {}
