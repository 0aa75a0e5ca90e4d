"""Backbone weights: torchvision, SwAV and DINO layouts; mismatches; weights_only loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from joindet.detector import WeightsError, build_model, get_preset, load_backbone_weights, load_weights, save_weights
from joindet.detector.backbone import Backbone

# build_model warns about random backbones; the one test that wants the warning uses pytest.warns.
pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def _reference(name: str = "resnet18") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).state_dict()


def _assert_loaded(backbone: Backbone, ref: dict[str, torch.Tensor]) -> None:
    own = backbone.body.state_dict()
    for key, value in own.items():
        torch.testing.assert_close(value, ref[key], msg=key)


def test_torchvision_state_dict_maps_every_key(tmp_path: Path) -> None:
    ref = _reference()
    torch.save(ref, tmp_path / "r18.pth")
    backbone = Backbone("resnet18", freeze=True)
    report = load_backbone_weights(backbone, tmp_path / "r18.pth")
    assert report.missing == [] and report.unexpected == []
    assert set(report.dropped) == {"fc.weight", "fc.bias"} | {k for k in ref if k.endswith("num_batches_tracked")}
    _assert_loaded(backbone, ref)


def test_swav_layout_maps_every_key(tmp_path: Path) -> None:
    ref = _reference()
    swav = {f"module.{k}": v for k, v in ref.items() if not k.startswith("fc.")}
    swav["module.projection_head.0.weight"] = torch.randn(2048, 512)
    swav["module.prototypes.weight"] = torch.randn(3000, 128)
    torch.save({"state_dict": swav, "epoch": 800}, tmp_path / "swav.pth.tar")
    model = build_model(get_preset("tiny"))
    report = load_backbone_weights(model, tmp_path / "swav.pth.tar")
    assert report.missing == [] and report.unexpected == []
    assert "module.prototypes.weight" in report.dropped and "module.projection_head.0.weight" in report.dropped
    _assert_loaded(model.backbone, ref)


def test_dino_teacher_student_layout(tmp_path: Path) -> None:
    ref = _reference()
    teacher = {f"module.backbone.{k}": v for k, v in ref.items() if not k.startswith("fc.")}
    teacher["module.head.mlp.0.weight"] = torch.randn(4, 4)
    student = {k: torch.zeros_like(v) for k, v in teacher.items()}
    torch.save({"teacher": teacher, "student": student, "epoch": 3}, tmp_path / "dino.pth")
    backbone = Backbone("resnet18", freeze=True)
    report = load_backbone_weights(backbone, tmp_path / "dino.pth")
    assert report.missing == [] and report.unexpected == []
    _assert_loaded(backbone, ref)  # the teacher, not the (zero) student


def test_mismatched_depth_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    torch.save(_reference("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(WeightsError, match=r"r50\.pth does not fit the resnet18 backbone: .*shape"):
        load_backbone_weights(Backbone("resnet18", freeze=True), tmp_path / "r50.pth")


def test_unrelated_or_missing_file_is_refused(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="none of its 1 keys"):
        load_backbone_weights(Backbone("resnet18", freeze=True), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone_weights(Backbone("resnet18", freeze=True), tmp_path / "absent.pth")


def test_weights_only_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"state_dict": _reference(), "args": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_backbone_weights(Backbone("resnet18", freeze=True), tmp_path / "pickled.pth")


def test_build_model_loads_configured_weights_and_warns_without(tmp_path: Path) -> None:
    ref = _reference()
    torch.save(ref, tmp_path / "r18.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model(get_preset("tiny").with_(backbone_weights=str(tmp_path / "r18.pth")))
    _assert_loaded(model.backbone, ref)
    with pytest.warns(UserWarning, match="region priors will be poor"):
        build_model(get_preset("tiny"))


def test_save_and_load_whole_model_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = build_model(get_preset("tiny"))
    torch.manual_seed(1)
    b = build_model(get_preset("tiny"))
    save_weights(a, tmp_path / "m.pt")
    load_weights(b, tmp_path / "m.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    with pytest.raises(WeightsError, match="does not match this detector configuration"):
        load_weights(build_model(get_preset("tiny").with_(num_queries=7)), tmp_path / "m.pt")
