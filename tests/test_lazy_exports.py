"""joindet/lazy_exports.py on a throw-away package: names load on first use, a shadowed name stays
the function once its sub-module is imported, a renamed name reads another attribute."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

_INIT = """
from joindet.lazy_exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    globals(), {"Heavy": "heavy", "tool": "tool"}, renamed={"alias": ("heavy", "original")}, shadowed={"tool"}
)
"""


@pytest.fixture()
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    root = tmp_path / "lazy_probe_pkg"
    root.mkdir()
    (root / "__init__.py").write_text(_INIT)
    (root / "heavy.py").write_text("class Heavy:\n    pass\n\n\ndef original():\n    return 'original'\n")
    (root / "tool.py").write_text("def tool():\n    return 'tool'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("lazy_probe_pkg")
    for name in [n for n in sys.modules if n.split(".")[0] == "lazy_probe_pkg"]:
        del sys.modules[name]


def test_names_load_on_first_use(package: ModuleType) -> None:
    assert package.__all__ == ["Heavy", "alias", "tool"]
    assert "lazy_probe_pkg.heavy" not in sys.modules
    assert {"Heavy", "alias", "tool"} <= set(dir(package))
    assert package.Heavy.__module__ == "lazy_probe_pkg.heavy"
    assert "lazy_probe_pkg.heavy" in sys.modules
    assert "Heavy" in vars(package)  # cached: __getattr__ is not asked again
    assert package.alias() == "original"


def test_shadowed_name_stays_the_function(package: ModuleType) -> None:
    importlib.import_module("lazy_probe_pkg.tool")  # binds the sub-module to the package
    assert package.tool() == "tool"
    from lazy_probe_pkg import tool

    assert tool() == "tool"


def test_unknown_name(package: ModuleType) -> None:
    with pytest.raises(AttributeError, match="module 'lazy_probe_pkg' has no attribute 'nope'"):
        package.nope  # noqa: B018
