"""Colour/texture tokens for weight-free initial priors."""

from __future__ import annotations

import pytest
import torch

from joindet.priors import colour_tokens, eigen_attention, region_priors


def test_shapes_padding_and_centring() -> None:
    images = torch.rand(2, 3, 40, 64)
    pad = torch.zeros(2, 40, 64, dtype=torch.bool)
    pad[1, :, 32:] = True  # second image is 32 px wide
    feat, valid = colour_tokens(images, pad, stride=8)
    assert feat.shape == (2, 5, 8, 6) and valid.shape == (2, 5, 8)
    assert valid[0].all() and valid[1, :, :4].all() and not valid[1, :, 4:].any()
    assert torch.all(feat[1, :, 4:] == 0)
    mean = (feat * valid[..., None]).sum((1, 2)) / valid.sum((1, 2))[:, None]
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)


def test_a_coloured_square_becomes_one_region_prior() -> None:
    image = torch.zeros(1, 3, 64, 64)
    image[:, 0] = 0.2
    image[0, :, 16:40, 24:48] = torch.tensor([1.0, -1.0, 0.5])[:, None, None]
    pad = torch.zeros(1, 64, 64, dtype=torch.bool)
    feat, valid = colour_tokens(image, pad, stride=8)
    m = eigen_attention(feat, valid)
    bidx, boxes, scores = region_priors(m, valid)
    # the square is the smaller side of the cut, the side that holds argmax |v|: one exact box
    assert bidx.tolist() == [0]
    assert boxes.tolist() == [[24 / 64, 16 / 64, 48 / 64, 40 / 64]]
    assert scores.tolist() == [1.0]


def test_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        colour_tokens(torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool))


def test_centre_tokens_removes_the_common_component() -> None:
    from joindet.priors import centre_tokens

    common = torch.full((1, 4, 4, 8), 5.0)
    feat = common.clone()
    feat[0, :2, :2, 0] += 1.0  # an "object" in the top-left corner
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, :, 3] = False
    assert eigen_attention(feat, valid).abs().max() == 0  # every cosine > tau: degenerate
    centred = centre_tokens(feat, valid)
    assert torch.all(centred[0, :, 3] == 0)
    assert torch.allclose(centred[valid].mean(0), torch.zeros(8), atol=1e-6)
    m = eigen_attention(centred, valid)
    assert (m[0, :2, :2] > 0).all() and (m[0][valid[0]] > 0).sum() == 4
