"""One way to say things across the command line: the same option names, types and defaults on
every command (RUN positional, --version 4 / v0004 without -v, --dataset with --data-root and
--annotations, --run-dir for every command that creates a run), non-zero exits when a command
did not do what was asked."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from joindet.flows.cli import main
from joindet.flows.cli_types import VERSION


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    found: dict[tuple[str, ...], click.Command] = {}
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            found |= commands(cmd, (*path, name))
        else:
            found[(*path, name)] = cmd
    return found


def option(cmd: click.Command, name: str) -> click.Option | None:
    return next((p for p in cmd.params if isinstance(p, click.Option) and name in p.opts), None)


def test_version_is_spelled_one_way_everywhere() -> None:
    with_version = {path: option(cmd, "--version") for path, cmd in commands().items() if option(cmd, "--version")}
    assert ("priors", "export") in with_version and ("stage", "run") in with_version
    for path, opt in with_version.items():
        assert opt.opts == ["--version"] and not opt.secondary_opts, path  # no -v
        assert opt.type is VERSION, path
    assert VERSION.convert("v0004", None, None) == VERSION.convert("4", None, None) == 4
    with pytest.raises(click.BadParameter, match="write 4 or v0004"):
        VERSION.convert("latest", None, None)


def test_every_command_with_dataset_takes_data_root_and_annotations() -> None:
    with_dataset = [path for path, cmd in commands().items() if option(cmd, "--dataset")]
    assert {("flow", "run", "pretrain"), ("flow", "run", "finetune"), ("data", "check")} <= set(with_dataset)
    for path in with_dataset:
        cmd = commands()[path]
        assert option(cmd, "--data-root") and option(cmd, "--annotations"), path
        assert option(cmd, "--dataset").default == "synthetic", path


def test_every_command_that_creates_a_run_takes_run_dir() -> None:
    for path in (("flow", "run", "pretrain"), ("flow", "run", "finetune")):
        assert option(commands()[path], "--run-dir"), path
    assert option(commands()[("flow", "run", "finetune")], "--out-dir").hidden  # the old name still works


def test_run_is_positional_and_the_old_run_option_is_hidden(tmp_path: Path) -> None:
    stage = commands()[("stage", "run")]
    assert [p.name for p in stage.params if isinstance(p, click.Argument)] == ["stage", "run_path"]
    assert option(stage, "--run").hidden
    missing = str(tmp_path / "nope")
    for args in (["stage", "run", "smooth", missing], ["stage", "run", "smooth", "--run", missing]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and missing in res.output and "does not exist" in res.output
    res = CliRunner().invoke(main, ["stage", "run", "smooth"])
    assert res.exit_code == 2 and "missing argument RUN" in res.output


@pytest.mark.parametrize("command", [["flow", "run", "pretrain"], ["flow", "run", "finetune"]])
def test_annotations_reach_the_dataset_as_data_annotations(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    run_dir = tmp_path / "run"
    args = [*command, "--dataset", "coco-json", "--annotations", str(missing), "--data-root", str(tmp_path)]
    res = CliRunner().invoke(main, [*args, "--run-dir", str(run_dir), "--no-prefect", "--quiet"])
    assert res.exit_code == 1 and f"annotation file {missing} does not exist" in res.output, res.output
    assert "Traceback" not in res.output


def test_a_mistyped_data_root_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "cocoo"
    args = ["flow", "run", "pretrain", "--data-root", str(typo), "--run-dir", str(tmp_path / "run"), "--no-prefect"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and f"--data-root {typo} does not exist" in res.output, res.output
    assert not typo.exists()


def test_priors_commands_refuse_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["priors", "ls", str(tmp_path)])
    assert res.exit_code == 1 and "is not a run directory" in res.output


def test_cli_copies_of_registry_names_match_their_owners() -> None:
    from joindet.flows.cli_types import KINDS
    from joindet.storage_schema import KINDS as SCHEMA_KINDS

    assert tuple(KINDS) == tuple(SCHEMA_KINDS)
