"""``joindet export model``: the transformers export loads with no download and predicts what joindet
predicts; the reference-layout export is a ``{"model": ...}`` checkpoint.

Tolerance of the equivalence: 1e-4 absolute on boxes (normalised cxcywh) and on foreground scores.
Both models run the same float32 arithmetic in a different order (joindet's channel-first value
projection and per-level accumulation of the deformable attention, torch's fused multi-head
attention against transformers' eager q/k/v projections), so they agree to float32 rounding
carried through the network: measured at most 8.3e-7 (scores) and 1.2e-7 (boxes) with the random
weights below (tiny and paper, 2026-12-03); 1e-4 leaves room for other BLAS builds and thread
counts, while a real mismatch moves outputs far more (the decoder's two norms swapped in the
mapping: boxes off by 9e-3, scores by 0.22).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from joindet.detector import build_model
from joindet.detector.presets import DetectorConfig, get_preset
from joindet.flows.cli import main
from joindet.pipeline.checkpoints import save_checkpoint
from joindet.pipeline.config import RunConfig
from joindet.pipeline.export_model import EXPORT_INFO, REFERENCE_CHECKPOINT, export_state
from joindet.storage_schema import SCHEMA_VERSION

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
#: the shipped tiny preset (its heads are d_model wide, which transformers can express).
TINY = get_preset("tiny")


def _random_model(cfg: DetectorConfig, seed: int = 0) -> torch.nn.Module:
    """A model with random weights everywhere that matters: backbone statistics, heads and queries
    (the fresh init zeroes the box head's last layer and starts every class score at p = 0.01)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = build_model(cfg)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("running_mean"):
                value.normal_(0.0, 0.1)
            elif key.endswith("running_var"):
                value.uniform_(0.8, 1.2)
        model.class_embed.weight.normal_(0.0, 2.0 / cfg.d_model**0.5)
        model.class_embed.bias.normal_(0.0, 0.5)
        model.bbox_embed.layers[-1].weight.normal_(0.0, 0.05)
        model.bbox_embed.layers[-1].bias.normal_(0.0, 0.5)
        for attn in [layer.cross_attn for layer in model.transformer.decoder]:
            attn.attention_weights.weight.normal_(0.0, 0.05)  # uneven weights over points and levels
    return model.eval()


def _batch(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ImageNet-normalised-like images, the second padded bottom and right (pad_mask True)."""
    torch.manual_seed(1)
    images = torch.randn(2, 3, height, width)
    pad = torch.zeros(2, height, width, dtype=torch.bool)
    pad[1, height * 5 // 8 :, :] = True
    pad[1, :, width * 3 // 4 :] = True
    return images.masked_fill(pad[:, None], 0.0), pad


def _compare(model: torch.nn.Module, hf_dir: Path, height: int, width: int) -> tuple[float, float]:
    hf, info = transformers.DeformableDetrForObjectDetection.from_pretrained(hf_dir, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    hf.eval()
    images, pad = _batch(height, width)
    with torch.no_grad():
        ours = model(images, pad)
        theirs = hf(pixel_values=images, pixel_mask=(~pad).long())
    fg_ours = 1.0 - ours["pred_logits"].softmax(-1)[..., 0]
    fg_theirs = 1.0 - theirs.logits.softmax(-1)[..., 0]
    assert fg_ours.std() > 0.05 and ours["pred_boxes"].std() > 0.05  # not a degenerate comparison
    box_err = (ours["pred_boxes"] - theirs.pred_boxes).abs().max().item()
    fg_err = (fg_ours - fg_theirs).abs().max().item()
    return box_err, fg_err


def _make_run(path: Path, cfg: DetectorConfig, model: torch.nn.Module, epoch: int = 1) -> Path:
    run_cfg = RunConfig(preset="tiny", model=cfg)
    info = {
        "schema_version": SCHEMA_VERSION,
        "config": run_cfg.to_dict(),
        "config_digest": run_cfg.digest(),
        "dataset": {"name": "synthetic", "root": str(path), "fingerprint": "x", "num_images": 0, "split": "train"},
    }
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps(info), encoding="utf-8")
    save_checkpoint(path / "checkpoints" / f"epoch-{epoch:04d}.pt", model=model, epoch=epoch, config_digest="x")
    return path


def test_hf_export_of_a_run_loads_without_download_and_matches_joindet(tmp_path: Path) -> None:
    model = _random_model(TINY)
    run = _make_run(tmp_path / "run", TINY, model)
    out = tmp_path / "hf"
    result = CliRunner().invoke(main, ["export", "model", str(run), "--format", "hf", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output[result.output.index("{") :])
    assert written["epoch"] == 1 and written["left_out"] == ["emb_embed."] and written["reinitialised"] == []
    assert written["source"]["checkpoint"].endswith("epoch-0001.pt") and written["source"]["sha256"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", EXPORT_INFO} <= set(written["files"])
    box_err, fg_err = _compare(model, out, 160, 192)
    assert box_err < TOLERANCE and fg_err < TOLERANCE, (box_err, fg_err)
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    assert processor.size.shortest_edge == TINY.test_size and processor.size.longest_edge == TINY.max_size
    config = json.loads((out / "config.json").read_text())
    assert config["use_timm_backbone"] is False and config["use_pretrained_backbone"] is False


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [get_preset("paper"), get_preset("paper-single-scale").with_(backbone="resnet18", emb_target="roi_align")],
    ids=["paper", "single-scale-resnet18"],
)
def test_hf_export_of_the_paper_architecture_matches_joindet(cfg: DetectorConfig, tmp_path: Path) -> None:
    model = _random_model(cfg)
    export_state(model.state_dict(), cfg, tmp_path / "hf", "hf")
    box_err, fg_err = _compare(model, tmp_path / "hf", 128, 160)
    assert box_err < TOLERANCE and fg_err < TOLERANCE, (box_err, fg_err)


def test_num_labels_reinitialises_only_the_class_head(tmp_path: Path) -> None:
    model = _random_model(TINY)
    result = export_state(model.state_dict(), TINY, tmp_path / "hf5", "hf", num_labels=5)
    assert result.reinitialised == ["class_embed."]
    hf, info = transformers.DeformableDetrForObjectDetection.from_pretrained(tmp_path / "hf5", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    assert hf.class_embed[0].weight.shape == (5, TINY.d_model)
    images, pad = _batch(160, 192)
    with torch.no_grad():
        boxes_ours = model(images, pad)["pred_boxes"]
        boxes_theirs = hf.eval()(pixel_values=images, pixel_mask=(~pad).long()).pred_boxes
    assert (boxes_ours - boxes_theirs).abs().max().item() < TOLERANCE


def test_presets_transformers_cannot_express_are_refused_by_the_cli(tmp_path: Path) -> None:
    cfg = get_preset("tiny").with_(head_hidden=256)
    run = _make_run(tmp_path / "run", cfg, _random_model(cfg))
    result = CliRunner().invoke(main, ["export", "model", str(run), "--format", "hf", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "head_hidden=256" in result.output and "d_model=64" in result.output
    assert not (tmp_path / "o").exists()
    missing = CliRunner().invoke(main, ["export", "model", str(run), "--epoch", "7", "--format", "hf", "-o", "x"])
    assert missing.exit_code == 1 and "epoch-0007.pt" in missing.output


def test_deformable_detr_export_is_a_reference_checkpoint(tmp_path: Path) -> None:
    cfg = get_preset("paper-single-scale").with_(enc_layers=1, dec_layers=2, num_queries=10)
    model = _random_model(cfg)
    result = export_state(model.state_dict(), cfg, tmp_path / "ref", "deformable-detr", epoch=3)
    assert REFERENCE_CHECKPOINT in result.files
    ckpt = torch.load(tmp_path / "ref" / REFERENCE_CHECKPOINT, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["args"]["num_feature_levels"] == 1
    state = ckpt["model"]
    assert torch.equal(state["backbone.0.body.conv1.weight"], model.state_dict()["backbone.body.conv1.weight"])
    assert {k for k in state if k.startswith("class_embed.")} == {
        f"class_embed.{i}.{p}" for i in range(2) for p in ("weight", "bias")
    }
    with pytest.raises(ValueError, match="hf format only"):
        export_state(model.state_dict(), cfg, tmp_path / "x", "deformable-detr", num_labels=5)


@pytest.mark.slow
def test_the_finetune_example_trains_an_export_and_its_loss_decreases(tmp_path: Path, capsys) -> None:
    import importlib.util

    from joindet.pipeline.data.synthetic import generate_synthetic

    data = generate_synthetic(tmp_path / "syn", num_images=6, size=64, val_images=1)
    export_state(_random_model(TINY).state_dict(), TINY, tmp_path / "hf", "hf")
    path = Path(__file__).parents[2] / "examples" / "finetune_hf.py"
    spec = importlib.util.spec_from_file_location("finetune_hf", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--export", str(tmp_path / "hf"), "--data-root", str(data), "--images", "6", "--steps", "12"]
    status = example.main([*argv, "--batch-size", "2", "--window", "4", "--threads", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 12 and report["num_labels"] >= 2
    assert status == 0 and report["last_loss"] < report["first_loss"], report
