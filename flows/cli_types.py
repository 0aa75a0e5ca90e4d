"""Parameter types and options that every ``joindet`` command spells the same way.

- A prior version is written ``4`` or ``v0004`` (as every table prints it); ``--version`` has no
  short form (``-v`` means verbose to most tools) and defaults to the latest committed version.
- A run is the positional ``RUN`` argument; commands that took ``--run RUN`` keep it as a hidden
  alias (``run_argument``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


class PriorVersion(click.ParamType):
    """A prior version as every table prints it (``v0004``) or as a number (``4``)."""

    name = "VERSION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        digits = text[1:] if text[:1] in ("v", "V") else text
        if not digits.isdigit():
            self.fail(f"{value!r} is not a prior version (write 4 or v0004)", param, ctx)
        return int(digits)


VERSION = PriorVersion()


def version_option(
    help_text: str = "Prior version, 4 or v0004 (default: the latest committed).", **kwargs: Any
) -> Callable[[Callable], Callable]:
    """``--version V`` (no short form); ``None`` when not given."""
    return click.option("--version", "version", type=VERSION, default=None, help=help_text, **kwargs)


def run_argument(func: Callable) -> Callable:
    """Positional ``RUN`` plus the hidden alias ``--run RUN``; the command receives ``run_path``.

    Wraps the command so that exactly one of the two must be given.
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, run_path: str | None = None, run_alias: str | None = None, **kwargs: Any) -> Any:
        if run_path and run_alias and run_path != run_alias:
            raise click.UsageError(f"two run directories given: {run_path} and --run {run_alias}")
        if not (run_path or run_alias):
            raise click.UsageError("missing argument RUN (the run directory)")
        return func(*args, run_path=run_path or run_alias, **kwargs)

    wrapper = click.option("--run", "run_alias", type=click.Path(), default=None, hidden=True)(wrapper)
    return click.argument("run_path", metavar="RUN", type=click.Path(), required=False)(wrapper)
