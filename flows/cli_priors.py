"""``joindet priors ...``: inspect, compare, export, import, verify and clean the prior store."""

import click


@click.group("priors")
def priors_group() -> None:
    """Inspect and manage the versioned prior store of a run."""
