"""train_step: one backbone pass per step, embedding targets equal to a separate backbone pass."""

from __future__ import annotations

import warnings

import torch

from joindet.pipeline.config import make_config
from joindet.pipeline.distributed import DistInfo
from joindet.pipeline.stages.train_loop import build_train_parts, train_step


def _batch(emb_dim: int) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 96, 128, generator=g)
    pad = torch.zeros(2, 96, 128, dtype=torch.bool)
    pad[1, 64:] = True
    targets = [
        {
            "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.4, 0.2, 0.5]]),
            "labels": torch.ones(2, dtype=torch.long),
        },
        {"boxes": torch.tensor([[0.6, 0.5, 0.3, 0.6]]), "labels": torch.ones(1, dtype=torch.long)},
    ]
    return images, pad, targets


def test_one_backbone_pass_per_step_and_the_same_targets() -> None:
    cfg = make_config("tiny", "synthetic", [])
    assert cfg.model.emb_target == "roi_align"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = build_train_parts(cfg, DistInfo())
    images, pad, targets = _batch(cfg.model.emb_dim)
    parts.model.train()
    # Today's targets: a backbone pass of their own (the backbone is frozen, so the step does not change them).
    expected = parts.emb_target(parts.model, images, pad, [t["boxes"] for t in targets])
    calls = []
    hook = parts.model.backbone.body.conv1.register_forward_hook(lambda *_: calls.append(1))
    seen = []
    criterion = parts.criterion.forward

    def recording(outputs, tgts):
        seen.extend(t["embs"].clone() for t in tgts)
        return criterion(outputs, tgts)

    parts.criterion.forward = recording
    try:
        losses, total = train_step(parts, images, pad, targets)
    finally:
        hook.remove()
    assert len(calls) == 1, f"the backbone ran {len(calls)} times in one training step"
    assert len(seen) == 2 and torch.isfinite(torch.tensor(total))
    for got, want in zip(seen, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "emb" in " ".join(losses)
