"""``joindet data ...``: datasets (synthetic scenes generation)."""

import click


@click.group("data")
def data() -> None:
    """Datasets: generate the built-in synthetic scenes dataset."""
