"""Set criterion: documented keys, finiteness, weights, focal form, embedding loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from joindet.detector import build_criterion, get_preset
from joindet.detector.criterion import num_boxes_global, softmax_focal_loss


def _outputs(b: int = 2, q: int = 6, e: int = 8, layers: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def layer() -> dict:
        return {
            "pred_logits": torch.randn(b, q, 2, generator=g, requires_grad=True),
            "pred_boxes": torch.rand(b, q, 4, generator=g).mul(0.4).add(0.1).requires_grad_(True),
            "pred_embs": torch.randn(b, q, e, generator=g, requires_grad=True),
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(layers - 1)]
    return out


def _targets(sizes: list[int], e: int = 8, embs: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    targets = []
    for n in sizes:
        t = {
            "boxes": torch.cat(
                [torch.rand(n, 2, generator=g) * 0.5 + 0.25, torch.rand(n, 2, generator=g) * 0.3 + 0.1], 1
            ),
            "labels": torch.ones(n, dtype=torch.long),
        }
        if embs:
            t["embs"] = torch.randn(n, e, generator=g)
        targets.append(t)
    return targets


@pytest.mark.parametrize("loss", ["focal", "ce"])
def test_keys_weights_and_finite(loss: str) -> None:
    cfg = get_preset("tiny").with_(loss=loss)
    criterion = build_criterion(cfg)
    losses = criterion(_outputs(), _targets([3, 1]))
    cls = "loss_focal" if loss == "focal" else "loss_ce"
    assert set(losses) == {cls, "loss_bbox", "loss_giou", "loss_emb", f"{cls}_0", "loss_bbox_0", "loss_giou_0"}
    assert set(losses) <= set(criterion.weight_dict)
    assert criterion.weight_dict[cls] == 2 and criterion.weight_dict["loss_bbox"] == 5
    assert criterion.weight_dict["loss_giou"] == 2 and criterion.weight_dict["loss_emb"] == 1
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    total = criterion.total(losses)
    total.backward()
    assert torch.isfinite(total)


def test_embedding_loss_skipped_without_embs_and_empty_targets_are_finite() -> None:
    criterion = build_criterion(get_preset("tiny"))
    losses = criterion(_outputs(), _targets([2, 0], embs=False))
    assert "loss_emb" not in losses
    empty = criterion(_outputs(), _targets([0, 0]))
    assert empty["loss_bbox"].item() == 0 and empty["loss_giou"].item() == 0
    assert all(torch.isfinite(v) for v in empty.values()) and empty["loss_focal"] > 0


def test_perfect_prediction_has_zero_box_and_embedding_loss() -> None:
    targets = _targets([2])
    out = {
        "pred_logits": torch.tensor([[[-5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]]),
        "pred_boxes": torch.cat([targets[0]["boxes"], torch.tensor([[0.5, 0.5, 0.1, 0.1]])])[None],
        "pred_embs": torch.cat([targets[0]["embs"], torch.zeros(1, 8)])[None],
    }
    losses = build_criterion(get_preset("tiny"))(out, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_emb"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_focal"].item() < 1e-3


def test_two_class_softmax_focal_equals_binary_focal_on_foreground_probability() -> None:
    logits = torch.randn(50, 2, dtype=torch.float64)
    target = torch.randint(0, 2, (50,))
    p = logits.softmax(-1)[:, 1]
    ce = F.binary_cross_entropy(p, target.double(), reduction="none")
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, 0.25, 0.75)
    expected = (alpha_t * (1 - p_t) ** 2 * ce).sum()
    torch.testing.assert_close(softmax_focal_loss(logits, target, 0.25, 2.0), expected)


def test_num_boxes_is_clamped_to_one() -> None:
    assert num_boxes_global(_targets([0, 0]), torch.device("cpu")) == 1.0
    assert num_boxes_global(_targets([3, 2]), torch.device("cpu")) == 5.0


def test_bad_inputs_raise_clear_errors() -> None:
    criterion = build_criterion(get_preset("tiny"))
    with pytest.raises(ValueError, match="one target dict per image"):
        criterion(_outputs(), _targets([1]))
    with pytest.raises(ValueError, match="build_embedding_target"):
        criterion(_outputs(e=8), _targets([1, 1], e=5))


def test_ce_uses_no_object_weight() -> None:
    cfg = get_preset("tiny").with_(loss="ce", aux_loss=False)
    out = _outputs(layers=1)
    losses = build_criterion(cfg)(out, _targets([0, 0]))
    # Only background targets: the weighted mean reduces to the plain mean of -log p(bg).
    expected = -out["pred_logits"].log_softmax(-1)[..., 0].mean()
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert not math.isnan(losses["loss_ce"].item())


def test_finetuning_class_count_flows_through_matcher_and_loss() -> None:
    """num_classes = C + 1 with labels 1..C: a confident correct class costs less than a wrong one."""
    cfg = get_preset("tiny").with_(num_classes=4, aux_loss=False)
    criterion = build_criterion(cfg)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    targets = [{"boxes": boxes, "labels": torch.tensor([3, 1])}]
    right = torch.full((1, 2, 4), -4.0)
    right[0, 0, 3] = right[0, 1, 1] = 4.0
    wrong = torch.full((1, 2, 4), -4.0)
    wrong[0, 0, 2] = wrong[0, 1, 2] = 4.0
    good = criterion({"pred_logits": right, "pred_boxes": boxes[None], "pred_embs": torch.zeros(1, 2, 512)}, targets)
    bad = criterion({"pred_logits": wrong, "pred_boxes": boxes[None], "pred_embs": torch.zeros(1, 2, 512)}, targets)
    assert good["loss_focal"] < 1e-3 < bad["loss_focal"]
