"""Embedding targets: dimensions, coordinates of the valid area, agreement with roi_align."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.ops import roi_align

from joindet.detector import build_embedding_target, build_model, get_preset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(get_preset("tiny")).eval()


@pytest.mark.parametrize("mode,dim", [("roi_align", 512), ("crop", 128)])
def test_dimensions_and_counts(model, mode: str, dim: int) -> None:
    cfg = get_preset("tiny").with_(emb_target=mode, crop_size=32)
    assert cfg.emb_dim == dim
    images, pad = torch.randn(2, 3, 96, 128), torch.zeros(2, 96, 128, dtype=torch.bool)
    boxes = [torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.5]]), torch.zeros(0, 4)]
    embs = build_embedding_target(cfg)(model, images, pad, boxes)
    assert [tuple(e.shape) for e in embs] == [(2, dim), (0, dim)]
    assert all(torch.isfinite(e).all() for e in embs)


def test_crop_is_relative_to_the_valid_image(model) -> None:
    """A box on a padded image embeds like the same box on the image without its padding."""
    target = build_embedding_target(get_preset("tiny").with_(emb_target="crop", crop_size=32))
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 96)
    padded = torch.cat([image, torch.zeros(1, 3, 32, 96)], 2)
    pad = torch.zeros(1, 96, 96, dtype=torch.bool)
    pad[:, 64:] = True
    box = [torch.tensor([[0.5, 0.5, 0.5, 0.6]])]
    a = target(model, image, torch.zeros(1, 64, 96, dtype=torch.bool), box)[0]
    b = target(model, padded, pad, box)[0]
    torch.testing.assert_close(a, b)


def test_roi_align_matches_direct_pooling_of_c5(model) -> None:
    target = build_embedding_target(get_preset("tiny"))
    images, pad = torch.randn(1, 3, 128, 128), torch.zeros(1, 128, 128, dtype=torch.bool)
    emb = target(model, images, pad, [torch.tensor([[0.5, 0.5, 0.5, 0.5]])])[0]
    c5, _ = model.backbone_features(images, pad)
    direct = roi_align(c5.permute(0, 3, 1, 2), [torch.tensor([[32.0, 32.0, 96.0, 96.0]])], 7, 1 / 32, 2, aligned=True)
    torch.testing.assert_close(emb, direct.mean((2, 3)))


@pytest.mark.parametrize("train", [False, True])
def test_roi_align_from_the_forward_c5_equals_a_backbone_pass(model, train: bool) -> None:
    """The C5 the forward pass exposes gives exactly the targets of a separate backbone pass."""
    target = build_embedding_target(get_preset("tiny"))
    images, pad = torch.randn(2, 3, 96, 128), torch.zeros(2, 96, 128, dtype=torch.bool)
    pad[1, :, 96:] = True
    boxes = [torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.5]]), torch.tensor([[0.4, 0.6, 0.5, 0.3]])]
    model.train(train)
    try:
        with torch.no_grad():
            c5 = model(images, pad)["backbone_c5"]
        assert c5.shape == (2, 512, 3, 4) and not c5.requires_grad
        shared = target(model, images, pad, boxes, c5=c5)
        separate = target(model, images, pad, boxes)
    finally:
        model.eval()
    for a, b in zip(shared, separate):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
