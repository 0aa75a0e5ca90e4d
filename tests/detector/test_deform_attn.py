"""Multi-scale deformable attention against a naive per-point bilinear reference (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import joindet.detector.deform_attn as deform_attn
from joindet.detector.deform_attn import MSDeformAttn, level_start_index, ms_deform_attn


def _naive(value, shapes, locations, weights):
    """Per point: bilinear with align_corners=False, zero outside the level."""
    n, _, m, dh = value.shape
    _, lq, _, n_levels, n_points, _ = locations.shape
    starts = level_start_index(shapes).tolist()
    out = torch.zeros(n, lq, m, dh, dtype=value.dtype)
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                for lvl in range(n_levels):
                    hl, wl = shapes[lvl].tolist()
                    for p in range(n_points):
                        x = locations[b, q, h, lvl, p, 0] * wl - 0.5
                        y = locations[b, q, h, lvl, p, 1] * hl - 0.5
                        x0, y0 = math.floor(x.item()), math.floor(y.item())
                        acc = torch.zeros(dh, dtype=value.dtype)
                        for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= xx < wl and 0 <= yy < hl:
                                    acc += wx * wy * value[b, starts[lvl] + yy * wl + xx, h]
                        out[b, q, h] += weights[b, q, h, lvl, p] * acc
    return out.reshape(n, lq, m * dh)


def _problem(seed, shapes_list, n=2, lq=5, m=2, dh=3, n_points=3, spread=1.6):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes_list, dtype=torch.long)
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(n, s, m, dh, generator=g, dtype=torch.float64)
    # Locations well outside [0, 1] too, so zero padding and level boundaries are exercised.
    loc = (torch.rand(n, lq, m, len(shapes_list), n_points, 2, generator=g, dtype=torch.float64) - 0.5) * spread + 0.5
    w = torch.rand(n, lq, m, len(shapes_list), n_points, generator=g, dtype=torch.float64)
    return value, shapes, loc, w


def test_matches_naive_reference_multi_level() -> None:
    value, shapes, loc, w = _problem(0, [(5, 7), (3, 4), (2, 2), (1, 1)])
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, w), _naive(value, shapes, loc, w))


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shapes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
)
def test_matches_naive_reference_property(seed: int, shapes: list[tuple[int, int]]) -> None:
    value, shp, loc, w = _problem(seed, shapes, n=1, lq=3, m=2, dh=2, n_points=2, spread=2.5)
    torch.testing.assert_close(ms_deform_attn(value, shp, loc, w), _naive(value, shp, loc, w))


def test_points_on_level_edges_and_exact_pixels() -> None:
    shapes = torch.tensor([[4, 3], [2, 5]])
    value = torch.randn(1, 22, 1, 2, dtype=torch.float64)
    xs = torch.tensor([-0.2, 0.0, 1 / 6, 0.5, 1.0, 1.1, 1.3])
    loc = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(1, -1, 1, 1, 1, 2)
    loc = loc.expand(1, loc.shape[1], 1, 2, 1, 2).contiguous().to(torch.float64)
    w = torch.ones(1, loc.shape[1], 1, 2, 1, dtype=torch.float64)
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, w), _naive(value, shapes, loc, w))


def test_gradients_match_naive_reference() -> None:
    value, shapes, loc, w = _problem(3, [(4, 4), (2, 3)], n=1, lq=2)
    ins = [t.clone().requires_grad_(True) for t in (value, loc, w)]
    ref = [t.clone().requires_grad_(True) for t in (value, loc, w)]
    ms_deform_attn(ins[0], shapes, ins[1], ins[2]).sum().backward()
    _naive(ref[0], shapes, ref[1], ref[2]).sum().backward()
    for a, b in zip(ins, ref):
        torch.testing.assert_close(a.grad, b.grad)


def test_module_shapes_and_padding_is_ignored() -> None:
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2)
    shapes = torch.tensor([[4, 4], [2, 2]])
    value = torch.randn(2, 20, 16)
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[:, 3] = True
    query, ref = torch.randn(2, 6, 16), torch.rand(2, 6, 2, 2)
    out = attn(query, ref, value, shapes, pad)
    assert out.shape == (2, 6, 16)
    changed = value.clone()
    changed[:, 3] += 100.0  # a padded token must not influence the output
    torch.testing.assert_close(attn(query, ref, changed, shapes, pad), out)


def test_half_precision_values_are_sampled_in_float32() -> None:
    value, shapes, loc, w = _problem(5, [(40, 50), (20, 25)], n=1, lq=4)
    out = ms_deform_attn(value.to(torch.bfloat16), shapes, loc.float(), w.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    ref = ms_deform_attn(value.to(torch.bfloat16).double(), shapes, loc, w.to(torch.bfloat16).double())
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("channel_first", [True, False])
def test_module_equals_plain_linear_projection_path(channel_first: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel-first value projection is only a layout choice: same output and gradients."""
    monkeypatch.setattr(deform_attn, "CHANNEL_FIRST_MIN_ELEMENTS", 0 if channel_first else 1 << 30)
    torch.manual_seed(1)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2).double()
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.3)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.3)
    shapes = torch.tensor([[3, 5], [2, 2]])
    value = torch.randn(2, 19, 16, dtype=torch.float64, requires_grad=True)
    pad = torch.zeros(2, 19, dtype=torch.bool)
    pad[1, -4:] = True
    query, ref = torch.randn(2, 6, 16, dtype=torch.float64), torch.rand(2, 6, 2, 2, dtype=torch.float64)
    out = attn(query, ref, value, shapes, pad)
    grads = torch.autograd.grad(out.square().sum(), [value, attn.value_proj.weight, attn.value_proj.bias])

    def plain(v):
        proj = attn.value_proj(v).masked_fill(pad[..., None], 0.0).view(2, 19, 4, 4)
        offsets = attn.sampling_offsets(query).view(2, 6, 4, 2, 2, 2) / shapes.flip(-1)[None, None, None, :, None, :]
        w = attn.attention_weights(query).view(2, 6, 4, 4).softmax(-1).view(2, 6, 4, 2, 2)
        return attn.output_proj(_naive(proj, shapes, ref[:, :, None, :, None, :] + offsets, w))

    expected = plain(value)
    torch.testing.assert_close(out, expected)
    expected_grads = torch.autograd.grad(expected.square().sum(), [value, attn.value_proj.weight, attn.value_proj.bias])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=3),
    channel_first=st.booleans(),
)
def test_gradients_match_naive_reference_property(
    seed: int, shapes: list[tuple[int, int]], channel_first: bool
) -> None:
    value, shp, loc, w = _problem(seed, shapes, n=2, lq=2, m=2, dh=2, n_points=2, spread=2.5)
    if channel_first:  # the strided layout MSDeformAttn passes: a view of [N, M*Dh, S]
        value = value.reshape(2, value.shape[1], 4).transpose(1, 2).contiguous().transpose(1, 2).view(value.shape)
    ins = [t.clone().requires_grad_(True) for t in (value, loc, w)]
    ref = [t.detach().contiguous().requires_grad_(True) for t in (value, loc, w)]
    ms_deform_attn(ins[0], shp, ins[1], ins[2]).square().sum().backward()
    _naive(ref[0], shp, ref[1], ref[2]).square().sum().backward()
    for a, b in zip(ins, ref):
        torch.testing.assert_close(a.grad, b.grad)


def test_token_count_mismatch_is_refused() -> None:
    value, shapes, loc, w = _problem(0, [(3, 3), (2, 2)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn(value[:, :-1], shapes, loc, w)
