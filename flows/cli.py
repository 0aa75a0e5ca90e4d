"""The ``joindet`` command line: one click group, with sub-groups defined beside it.

Every sub-command turns expected failures (missing run, missing version, corrupt file, missing
dataset) into one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import click

from joindet.flows.cli_backbone import backbone_group
from joindet.flows.cli_data import data
from joindet.flows.cli_errors import concise_warnings
from joindet.flows.cli_eval import eval_group
from joindet.flows.cli_export import export_group
from joindet.flows.cli_flow import flow_group
from joindet.flows.cli_options import prefect_environment
from joindet.flows.cli_priors import priors_group
from joindet.flows.cli_report import report_cmd
from joindet.flows.cli_runs import runs_group
from joindet.flows.cli_stage import stage_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="joindet")
def main() -> None:
    """joindet: pretrain object detectors without labels.

    The detector mines its own object priors (pseudo boxes) every few epochs, smooths them
    against the previous priors and trains on them. Every output is a versioned artifact in the
    run directory's prior store.

    \b
    Start here:
      joindet flow run pretrain --dataset synthetic --preset tiny
      joindet runs status RUN
      joindet priors ls RUN
      joindet report RUN
    """
    # Before any command imports prefect, which reads its settings when imported.
    prefect_environment()
    concise_warnings()


main.add_command(flow_group)
main.add_command(stage_group)
main.add_command(runs_group)
main.add_command(eval_group)
main.add_command(priors_group)
main.add_command(data)
main.add_command(report_cmd)
main.add_command(export_group)
main.add_command(backbone_group)


if __name__ == "__main__":  # pragma: no cover
    main()
