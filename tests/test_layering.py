"""The import direction of DESIGN.md, under one namespace:

    joindet.flows -> joindet.pipeline -> {joindet.detector, joindet.priors} -> joindet.storage_schema

Every import of our own code names ``joindet.<package>``: a bare ``import pipeline`` would load the
same file a second time under another name (two copies of every class), and the installed
distribution has no such top-level names.
"""

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
#: leaf modules of the ``joindet`` package itself (joindet/*.py) that every package may import: they
#: import no joindet package, so they sit below storage_schema in the direction above.
LEAVES = {"lazy_exports"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, name)`` of each absolute import; ``joindet.X...`` is reported as ``joindet.X``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
    found = []
    for lineno, name in names:
        parts = name.split(".")
        found.append((lineno, ".".join(parts[:2]) if parts[0] == "joindet" and len(parts) > 1 else parts[0]))
    return found


def _violations(package: str, root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for lineno, top in _imports(path):
            rel = path.relative_to(root)
            if top in PACKAGES:
                bad.append(f"{rel}:{lineno} imports {top} (write joindet.{top})")
            own = top.removeprefix("joindet.") if top.startswith("joindet.") else None
            if own is not None and own != package and own not in ALLOWED[package] | LEAVES:
                bad.append(f"{rel}:{lineno} imports {top}")
            if top in ONLY_IN_FLOWS and package != "flows":
                bad.append(f"{rel}:{lineno} imports {top} (only flows/ may)")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_import_direction(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert _violations(package) == []


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_no_joindet_package(leaf: str) -> None:
    path = ROOT / "joindet" / f"{leaf}.py"
    assert [top for _, top in _imports(path) if top.startswith("joindet") or top in PACKAGES] == []


def test_checker_allows_only_the_leaves(tmp_path: Path) -> None:
    """A package importing a leaf passes; one importing ``joindet.__main__`` (which loads flows) fails."""
    package = tmp_path / "priors"
    package.mkdir()
    (package / "ok.py").write_text("from joindet.lazy_exports import lazy_exports\n")
    (package / "bad.py").write_text("import joindet.__main__\n")
    assert _violations("priors", tmp_path) == ["priors/bad.py:1 imports joindet.__main__"]


@pytest.mark.parametrize("folder", ["tests", "benchmarks", "examples"])
def test_tests_and_scripts_use_the_namespace(folder: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{lineno} imports {top}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for lineno, top in _imports(path)
        if top in PACKAGES
    ]
    assert bad == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import click\nfrom priors import BoxSet\nfrom joindet.flows.cli import main\n")
    assert [t for _, t in _imports(bad)] == ["click", "priors", "joindet.flows"]


def test_installed_names_are_under_joindet() -> None:
    import joindet.pipeline
    import joindet.priors

    assert Path(joindet.pipeline.__file__).parent == ROOT / "pipeline"
    assert Path(joindet.priors.__file__).parent == ROOT / "priors"


@pytest.mark.slow
def test_wheel_installs_only_the_joindet_namespace(tmp_path: Path) -> None:
    """``pip install .`` would put exactly these top-level names into site-packages."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("joindet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"joindet"}
    for package in PACKAGES:
        assert f"joindet/{package}/__init__.py" in names
    assert "joindet/priors/store/store.py" in names
    assert "joindet/__main__.py" in names
