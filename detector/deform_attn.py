"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

Each level is sampled with one ``F.grid_sample`` call covering every batch image, head, query and
point (bilinear, zero padding, ``align_corners=False``), and its weighted sum over the points is
added to the output before the next level is sampled, so the [.., L, P] stack of all samples is
never materialised. Each level's image is a view of one channel-first copy of the value map, so
the backward gathers the levels' gradients with one concatenation.

Why not one call for all levels: packing the levels into one zero-padded image (an "atlas")
costs an extra zero-fill and copy of about 1.45x the value map, forward and backward; with the
decoder's 300 queries that outweighs the saved calls: 1.4-1.5x the reference's time, against
0.91x for this per-level form (paper decoder case, forward + backward, one thread; encoder case
0.80x; ``python benchmarks/bench_detector.py --op-only --threads 1``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: From this many value elements (N * S * d) on, MSDeformAttn projects the value channel-first.
#: Below it the transposing copy it saves is negligible and the batched projection adds small
#: ops (tiny preset, N * S * d = 3200: no gain measurable); the paper preset has ~2.8M.
CHANNEL_FIRST_MIN_ELEMENTS = 1 << 16


def level_start_index(spatial_shapes: Tensor) -> Tensor:
    """Offsets [L] int64 of each level in the flattened token axis, from shapes [L, 2] (H, W)."""
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinear samples of a multi-level value map.

    Args:
        value: [N, S, M, Dh], S = sum of H_l * W_l tokens (levels flattened row-major, in order),
            M heads of Dh channels. Any strides; a view of a contiguous channel-first
            [N, M * Dh, S] tensor (``.transpose(1, 2).view(N, S, M, Dh)``) saves one copy.
        spatial_shapes: int64 [L, 2], (H_l, W_l) of each level.
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) as fractions of each level's width and
            height (0 = left/top edge, 1 = right/bottom edge: ``align_corners=False``).
        attention_weights: [N, Lq, M, L, P], weight of each sample (usually softmax over L * P).

    Returns:
        [N, Lq, M * Dh] in value's dtype (computed in at least float32). Samples outside a
        level read zeros (``padding_mode="zeros"``).
    """
    n, s, m, dh = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = tuple((int(h), int(w)) for h, w in spatial_shapes.tolist())
    if sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"ms_deform_attn: value has {s} tokens but spatial_shapes {shapes} sum to "
            f"{sum(h * w for h, w in shapes)}; pass the shapes of the levels flattened into value."
        )
    # Coordinates stay in float32 at least: half precision cannot address pixels of large maps.
    dtype = torch.promote_types(sampling_locations.dtype, torch.float32)
    # [N*M, Dh, S]: a view when value is a head-split view of a channel-first [N, M*Dh, S]
    # tensor (see MSDeformAttn.forward), else one transposing copy. Splitting it along S gives
    # each level's image as a view, and the split's backward is one plain concatenation.
    flat = value.to(dtype).permute(0, 2, 3, 1).reshape(n * m, dh, s)
    levels = flat.split([h * w for h, w in shapes], -1) if n_levels > 1 else (flat,)
    # Level-major, then unbind (one backward node, a stack) rather than indexing each level (a
    # zero-filled full-size gradient per level). Points before queries: grid_sample vectorises
    # along its output width, which is then Lq (hundreds) rather than P (a few), and the sum
    # over points runs across rows instead of along a short innermost axis.
    grids = (2.0 * sampling_locations.to(dtype) - 1.0).permute(3, 0, 2, 4, 1, 5).unbind(0)
    weights = attention_weights.to(dtype).permute(3, 0, 2, 4, 1).unbind(0)
    out = None
    for level, (h, w) in enumerate(shapes):
        image = levels[level].view(n * m, dh, h, w)
        grid = grids[level].reshape(n * m, n_points, lq, 2)
        sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        part = (sampled * weights[level].reshape(n * m, 1, n_points, lq)).sum(2)  # [N*M, Dh, Lq]
        out = part if out is None else out + part
    return out.view(n, m * dh, lq).transpose(1, 2).contiguous().to(value.dtype)


class MSDeformAttn(nn.Module):
    """Deformable attention module: each query samples P points per head and level.

    ``forward(query [N, Lq, d], reference_points [N, Lq, L, 2] normalised (x, y) per level,
    value_in [N, S, d], spatial_shapes [L, 2], padding_mask [N, S] bool True on padding)
    -> [N, Lq, d]``. Offsets are in units of each level's cells (divided by its W, H).
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Start with each head looking in its own direction, point k at distance k + 1 cells, so
        # early training samples a spread neighbourhood rather than one pixel.
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True).values
        grid = direction[:, None, None, :].repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_in: Tensor,
        spatial_shapes: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        n, lq, d = query.shape
        m, lv, p = self.n_heads, self.n_levels, self.n_points
        s = value_in.shape[1]
        if n * s * d >= CHANNEL_FIRST_MIN_ELEMENTS:
            # Channel-first [N, d, S] projection, because grid_sample needs channel-first images:
            # ms_deform_attn then takes views instead of a transposing copy of the value map.
            value = torch.baddbmm(
                self.value_proj.bias[None, :, None].expand(n, d, s),
                self.value_proj.weight.expand(n, d, d),
                value_in.transpose(1, 2),
            )
            if padding_mask is not None:
                value = value.masked_fill(padding_mask[:, None, :], 0.0)
            value = value.transpose(1, 2)
        else:
            value = self.value_proj(value_in)
            if padding_mask is not None:
                value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, s, m, d // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        normaliser = spatial_shapes.flip(-1).to(offsets.dtype)  # (W, H) per level
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(value, spatial_shapes, locations, weights))
