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


#: Prior kinds (``storage_schema.KINDS`` owns them; repeated so that --help loads no pyarrow; a
#: test keeps the two equal).
KINDS = ("region", "instance", "smoothed")

#: ``--dataset`` names (the registry owns the list; repeated here so that --help needs no import).
DATASET_CHOICES = ("synthetic", "coco", "voc", "imagenet", "coco-json", "folder")


def dataset_options(func: Callable) -> Callable:
    """``--dataset`` (default synthetic), ``--data-root`` and ``--annotations``: the same three on
    every command that opens a dataset. ``--annotations FILE`` is ``--set data.annotations=FILE``."""
    opts = [
        click.option(
            "--dataset",
            default="synthetic",
            show_default=True,
            type=click.Choice(DATASET_CHOICES),
            help="Dataset (synthetic needs no download; coco-json: your own COCO-format JSON).",
        ),
        click.option(
            "--data-root",
            default=None,
            type=click.Path(),
            help="Dataset location; must exist (default: $JOINDET_DATA/<name>; synthetic: the cache).",
        ),
        click.option(
            "--annotations",
            default=None,
            type=click.Path(dir_okay=False),
            help="COCO JSON of the dataset (coco-json: required; coco: instead of the default file).",
        ),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def data_overrides(data_root: str | None, annotations: str | None) -> list[str]:
    """The ``--set`` strings of ``--data-root`` and ``--annotations`` (absolute paths: workers on
    other machines and later commands open them from elsewhere)."""
    import os

    out = [f"data.root={os.path.abspath(data_root)}"] if data_root else []
    return out + ([f"data.annotations={os.path.abspath(annotations)}"] if annotations else [])
