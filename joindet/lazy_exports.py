"""Lazy public names of a package (PEP 562): each name is imported from its sub-module on first use.

A leaf module: it imports no ``joindet`` package, so every package may use it (tests/test_layering.py
allows it as the one exception to the import direction). Packages use it so that importing them, or
one light module of them, does not load torch, scipy or zarr and the command line starts fast::

    __all__, __getattr__, __dir__ = lazy_exports(globals(), {"PriorStore": "store.store"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any


class _ShadowingPackage(ModuleType):
    """Keeps ``package.name`` the function when the import system binds the sub-module of the same
    name to the package (it does so whenever any code imports the sub-module); the names are the
    package's ``_SHADOWED``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_SHADOWED", ()) and isinstance(value, ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(
    namespace: dict[str, Any],
    names: Mapping[str, str],
    renamed: Mapping[str, tuple[str, str]] | None = None,
    shadowed: Collection[str] = (),
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``.

    ``names``: public name -> the sub-module (relative, dotted) that defines it under that name.
    ``renamed``: public name -> ``(sub-module, attribute)`` for a name defined under another one.
    ``shadowed``: names that are both a sub-module and the function it defines; the package keeps
    exposing the function once the sub-module is imported. A name, once imported, is stored in
    ``namespace`` so that ``__getattr__`` is not asked again.
    """
    package = namespace["__name__"]
    targets = {name: (module, name) for name, module in names.items()}
    targets.update(renamed or {})
    public = sorted(targets)
    if shadowed:
        namespace["_SHADOWED"] = frozenset(shadowed)
        sys.modules[package].__class__ = _ShadowingPackage

    def __getattr__(name: str) -> Any:
        module, attr = targets.get(name, (None, name))
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return public, __getattr__, __dir__
