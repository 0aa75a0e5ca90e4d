"""Self-supervised backbone pretraining: a few SSL steps on tiny images lower the loss, the weights
file loads into the detector's backbone with no missing key, training resumes per epoch, and the
pretrain flow's backbone step trains the planned file once and records it in run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from joindet.detector import build_model
from joindet.detector.weights import load_backbone_weights
from joindet.pipeline.config import ConfigError, make_config
from joindet.pipeline.data import open_dataset
from joindet.pipeline.data.synthetic import generate_synthetic
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.ssl.methods import METHODS, build_method, views_transform
from joindet.pipeline.ssl.stage import (
    RUN_JSON_KEY,
    backbone_pretrain_pending,
    plan_backbone_pretrain,
    planned_weights,
    pretrain_run_backbone,
)
from joindet.pipeline.ssl.train import SSLSettings, SSLStateError, pretrain_backbone, state_path

TINY = SSLSettings(method="simclr", arch="resnet18", epochs=2, size=32, batch_size=4)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ssl") / "data"
    generate_synthetic(root, 8, 48, seed=3, val_images=1)
    return root


@pytest.fixture(scope="module")
def dataset(data_root: Path):
    return open_dataset("synthetic", root=data_root)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_few_steps_lower_the_loss_on_fixed_views(dataset, method: str) -> None:
    from PIL import Image

    torch.manual_seed(0)
    model = build_method(method, "resnet18").train()
    transform = views_transform(method, 32)
    items = [transform(Image.fromarray(dataset.load(int(i)))) for i in dataset.image_ids()]
    views = [torch.stack(v) for v in zip(*items)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(6):
        loss = model.loss(views, step, 6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(step, 6)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


def test_weights_load_into_the_detector_backbone_with_no_missing_key(dataset, tmp_path: Path) -> None:
    out = tmp_path / "w.pth"
    result = pretrain_backbone(dataset, out, TINY)
    assert not result.skipped and len(result.losses) == 2
    assert out.is_file() and not state_path(out).exists()

    with pytest.warns(UserWarning, match="randomly"):
        model = build_model(make_config("tiny").model)
    report = load_backbone_weights(model, out)
    assert report.missing == [] and report.unexpected == [] and report.dropped == []
    saved = torch.load(out, weights_only=True)["state_dict"]
    own = model.backbone.body.state_dict()
    assert set(saved) == set(own)
    for key in ("conv1.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(own[key], saved[key])
    # SSL changed the random init: the BN statistics are no longer torchvision's 0 / 1.
    assert not torch.allclose(saved["layer1.0.bn1.running_mean"], torch.zeros(64))

    again = pretrain_backbone(dataset, out, TINY)  # the same command again: nothing to do
    assert again.skipped and again.losses == result.losses
    with pytest.raises(SSLStateError, match="epochs"):
        pretrain_backbone(dataset, out, SSLSettings(**{**TINY.__dict__, "epochs": 3}))


class _StopAfterFirstEpoch:
    """A progress that interrupts training once the first epoch is finished (a crash)."""

    def start(self, task, total, unit="img"):
        pass

    def advance(self, n=1, **metrics):
        pass

    def end(self, summary=None):
        raise KeyboardInterrupt

    def log(self, message):
        pass


def test_an_interrupted_training_resumes_after_its_last_epoch(dataset, tmp_path: Path) -> None:
    whole = pretrain_backbone(dataset, tmp_path / "whole.pth", TINY)
    out = tmp_path / "cut.pth"
    with pytest.raises(KeyboardInterrupt):
        pretrain_backbone(dataset, out, TINY, progress=_StopAfterFirstEpoch())
    assert not out.exists() and state_path(out).exists()

    resumed = pretrain_backbone(dataset, out, TINY)
    assert resumed.resumed_from == 1 and not state_path(out).exists()
    # Each epoch is seeded by (seed, epoch): the resumed run repeats the uninterrupted one.
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    a = torch.load(tmp_path / "whole.pth", weights_only=True)["state_dict"]
    b = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_the_flow_step_trains_the_planned_weights_once_and_records_them(data_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "run"
    overrides = ["model.backbone_pretrain=true", "model.backbone_pretrain_epochs=1", "model.backbone_pretrain_size=32"]
    cfg = make_config("tiny", "synthetic", overrides)
    cfg.data.root = str(data_root)
    unplanned = RunDir.create(tmp_path / "unplanned", cfg)
    with pytest.raises(ConfigError, match="backbone_weights is not set"):
        backbone_pretrain_pending(unplanned)

    run = RunDir.create(path, plan_backbone_pretrain(cfg, path))
    weights = planned_weights(path, run.config)
    assert (
        run.config.model.backbone_weights == str(weights) == str(path.absolute() / "backbone" / "simclr-resnet18.pth")
    )
    assert backbone_pretrain_pending(run)
    result = pretrain_run_backbone(run)
    assert not result.skipped and weights.is_file()
    assert not backbone_pretrain_pending(run)
    recorded = json.loads((path / "run.json").read_text())[RUN_JSON_KEY]
    assert recorded["method"] == "simclr" and recorded["epochs"] == 1 and recorded["weights"] == str(weights)
    # The same command again plans the same file: the run reopens without a mismatch, and skips.
    cfg2 = make_config("tiny", "synthetic", overrides)
    cfg2.data.root = str(data_root)
    again = RunDir.create(path, plan_backbone_pretrain(cfg2, path))
    assert pretrain_run_backbone(again).skipped


def test_given_weights_are_never_trained_over(data_root: Path, tmp_path: Path) -> None:
    cfg = make_config("tiny", "synthetic", ["model.backbone_pretrain=true", "model.backbone_weights=/tmp/theirs.pth"])
    cfg.data.root = str(data_root)
    run = RunDir.create(tmp_path / "run", plan_backbone_pretrain(cfg, tmp_path / "run"))
    assert run.config.model.backbone_weights == "/tmp/theirs.pth"
    assert not backbone_pretrain_pending(run)


def test_the_command_line_trains_resumes_and_offers_the_pipelines_choices(data_root: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from joindet.detector.presets import RESNET_CHANNELS
    from joindet.flows.cli import main
    from joindet.flows.cli_backbone import ARCH_CHOICES, METHOD_CHOICES

    assert set(METHOD_CHOICES) == set(METHODS) and set(ARCH_CHOICES) == set(RESNET_CHANNELS)
    out = tmp_path / "w.pth"
    args = ["backbone", "pretrain", "--data-root", str(data_root), "--epochs", "1", "--size", "32"]
    args += ["--batch-size", "4", "--max-images", "4", "-o", str(out), "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert out.is_file() and "trained" in first.output and "model.backbone_weights=" in first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "already complete" in second.output
    other = CliRunner().invoke(main, [*args[:-3], "--method", "dino", "-o", str(out)])
    assert other.exit_code == 1 and "exists from another training" in other.output
