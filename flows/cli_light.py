"""Fast start of the read-only commands (``runs status``, ``priors ls|show|diff|verify``).

pyarrow imports pandas the first time it converts anything (reading a Parquet file, an array
from numpy, an empty table), only to check whether the object is a pandas one. That import is
0.25 s on an idle 2-core machine and 1.8 s at load 5, most of these commands' start-up. They
never hand pyarrow a pandas object, so while they run pandas is reported missing; pyarrow then
takes its no-pandas path, and checks again once pandas is importable (a later ``import pandas``
in the same process works and pyarrow converts pandas objects as usual).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _NoPandas(importlib.abc.MetaPathFinder):
    """An import finder that reports ``pandas`` (and its sub-modules) as not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"pandas is not loaded by read-only joindet commands ({name})", name=name)
        return None


@contextlib.contextmanager
def without_pandas() -> Iterator[None]:
    """Within the block, ``import pandas`` fails unless pandas is loaded already."""
    if "pandas" in sys.modules:  # someone loaded it already: nothing to save
        yield
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def light(func: F) -> F:
    """Decorator: run the command ``without_pandas``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with without_pandas():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
