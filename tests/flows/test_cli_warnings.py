"""Warnings once per run, only where they apply: the random-backbone warning is raised only when
nothing loads weights into the model afterwards, and the command line prints it once, as one line."""

from __future__ import annotations

import subprocess
import sys
import warnings

from joindet.detector import RandomBackboneWarning, build_model
from joindet.pipeline.config import make_config


def test_no_warning_when_a_checkpoint_gives_the_weights() -> None:
    cfg = make_config("tiny").model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(cfg, warn_random_backbone=False)
        assert not [w for w in caught if issubclass(w.category, RandomBackboneWarning)]
        build_model(cfg)
        assert [w for w in caught if issubclass(w.category, RandomBackboneWarning)]


_SCRIPT = """
from joindet.flows.cli_errors import concise_warnings
concise_warnings()
from joindet.detector import build_model
from joindet.pipeline.config import make_config
def from_a():
    build_model(make_config("tiny").model)
def from_b():
    build_model(make_config("tiny").model)
for _ in range(2):
    from_a()
    from_b()
"""


def test_the_cli_prints_it_once_as_one_line() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    lines = [line for line in out.stderr.splitlines() if "backbone_weights" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: DetectorConfig.backbone_weights is not set")
    assert "build_model(" not in out.stderr  # no source line echoed
