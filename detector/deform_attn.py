"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

The sampling of every level, head and point is one ``F.grid_sample`` call: the levels of the value
map are packed into one *atlas* image (levels stacked vertically, a row of zeros between two
levels, narrower levels padded with zeros on the right), and each sampling location is moved into
the atlas's coordinates. Bilinear sampling with ``align_corners=False`` and zero padding then reads
exactly the pixels it would read in its own level, because every neighbour outside the level is a
zero of the atlas. Locations whose four neighbours all lie outside their level (where per-level
sampling would return zero but the atlas could reach another level) get attention weight zero.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def level_start_index(spatial_shapes: Tensor) -> Tensor:
    """Offsets [L] int64 of each level in the flattened token axis, from shapes [L, 2] (H, W)."""
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


@functools.lru_cache(maxsize=64)
def _atlas_layout(shapes: tuple[tuple[int, int], ...], device: torch.device) -> tuple[int, int, Tensor, Tensor]:
    """Atlas height, width, row offset of each level [L] and atlas index of every token [S].

    Cached per (shapes, device): a training run sees few distinct shapes per batch size.
    """
    heights = [h for h, _ in shapes]
    atlas_h = sum(heights) + len(shapes) - 1  # one zero row between two levels
    atlas_w = max(w for _, w in shapes)
    offsets = [sum(heights[:i]) + i for i in range(len(shapes))]
    index = torch.cat([
        ((torch.arange(h)[:, None] + off) * atlas_w + torch.arange(w)[None, :]).flatten()
        for (h, w), off in zip(shapes, offsets)
    ])
    return atlas_h, atlas_w, torch.tensor(offsets, dtype=torch.float32, device=device), index.to(device)


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinear samples of a multi-level value map.

    Args:
        value: [N, S, M, Dh], S = sum of H_l * W_l tokens (levels flattened row-major, in order),
            M heads of Dh channels.
        spatial_shapes: int64 [L, 2], (H_l, W_l) of each level.
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) as fractions of each level's width and
            height (0 = left/top edge, 1 = right/bottom edge: ``align_corners=False``).
        attention_weights: [N, Lq, M, L, P], weight of each sample (usually softmax over L * P).

    Returns:
        [N, Lq, M * Dh] in value's dtype (computed in at least float32). Samples outside a
        level read zeros (``padding_mode="zeros"``).
    """
    n, _, m, dh = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = tuple((int(h), int(w)) for h, w in spatial_shapes.tolist())
    # Coordinates stay in float32 at least: half precision cannot address pixels of large maps.
    dtype = torch.promote_types(sampling_locations.dtype, torch.float32)
    flat = value.to(dtype).permute(0, 2, 3, 1).reshape(n * m, dh, -1)
    grid = sampling_locations.to(dtype).permute(0, 2, 1, 3, 4, 5).reshape(n * m, lq, n_levels * n_points, 2)
    weights = attention_weights.to(dtype).permute(0, 2, 1, 3, 4).reshape(n * m, 1, lq, n_levels * n_points)
    if n_levels == 1:
        # One level is its own atlas: zero padding alone gives the per-level semantics.
        image = flat.view(n * m, dh, *shapes[0])
        grid = 2.0 * grid - 1.0
    else:
        atlas_h, atlas_w, row_offset, index = _atlas_layout(shapes, value.device)
        image = flat.new_zeros(n * m, dh, atlas_h * atlas_w).index_copy(2, index, flat).view(n * m, dh, atlas_h, atlas_w)
        size = spatial_shapes.to(grid.dtype).repeat_interleave(n_points, 0)  # [L*P, 2] (H, W)
        x = grid[..., 0] * size[:, 1]  # pixels of the point's level, [N*M, Lq, L*P]
        y = grid[..., 1] * size[:, 0]
        # A point whose 4 neighbours all lie outside its level reads 0; the atlas could reach
        # another level there, so such points are given weight 0.
        inside = ((x - size[:, 1] / 2).abs() < (size[:, 1] + 1) / 2) & ((y - size[:, 0] / 2).abs() < (size[:, 0] + 1) / 2)
        weights = weights * inside[:, None].to(weights.dtype)
        offset = row_offset.to(grid.dtype).repeat_interleave(n_points)
        grid = torch.stack([2.0 * x / atlas_w - 1.0, 2.0 * (y + offset) / atlas_h - 1.0], -1)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = (sampled * weights).sum(-1)  # [N*M, Dh, Lq]
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
        value = self.value_proj(value_in)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, -1, m, d // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        normaliser = spatial_shapes.flip(-1).to(offsets.dtype)  # (W, H) per level
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(value, spatial_shapes, locations, weights))
