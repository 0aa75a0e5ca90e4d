"""The import direction of DESIGN.md: flows -> pipeline -> {detector, priors} -> storage_schema."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["storage_schema", "priors", "detector", "pipeline", "flows"]

#: package -> the joindet packages it may import (itself always allowed).
ALLOWED = {
    "storage_schema": set(),
    "priors": {"storage_schema"},
    "detector": {"storage_schema"},
    "pipeline": {"detector", "priors", "storage_schema"},
    "flows": {"pipeline", "detector", "priors", "storage_schema"},
}
ONLY_IN_FLOWS = {"prefect", "prefect_dask", "click"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, top in _imports(path):
            rel = path.relative_to(ROOT)
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                bad.append(f"{rel}:{lineno} imports {top}")
            if top in ONLY_IN_FLOWS and package != "flows":
                bad.append(f"{rel}:{lineno} imports {top} (only flows/ may)")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_import_direction(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert _violations(package) == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import click\nfrom priors import BoxSet\n")
    assert [t for _, t in _imports(bad)] == ["click", "priors"]
