"""Deformable DETR encoder and decoder (one-stage, no iterative box refinement).

Token layout: levels flattened row-major and concatenated, ``[B, S, d]`` with
``S = sum_l h_l * w_l``. Reference points are (x, y) fractions of the *valid* (unpadded) area of
the feature maps, so decoder boxes come out relative to the valid image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from joindet.detector.deform_attn import MSDeformAttn


def valid_ratios(masks: list[Tensor]) -> Tensor:
    """Share of each level's width and height that is valid: [B, L, 2] as (x, y)."""
    out = []
    for mask in masks:
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).float() / h
        valid_w = (~mask[:, 0, :]).sum(1).float() / w
        out.append(torch.stack([valid_w, valid_h], -1))
    return torch.stack(out, 1)


def encoder_reference_points(spatial_shapes: Tensor, ratios: Tensor) -> Tensor:
    """Cell centres of every level as fractions of the valid area, seen from every level.

    Returns [B, S, L, 2] (x, y): the point of token s, rescaled for sampling in level l.
    """
    refs = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=ratios.device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=ratios.device) + 0.5,
            indexing="ij",
        )
        x = xs.reshape(1, -1) / (ratios[:, None, lvl, 0] * w)
        y = ys.reshape(1, -1) / (ratios[:, None, lvl, 1] * h)
        refs.append(torch.stack([x, y], -1))
    ref = torch.cat(refs, 1)
    return ref[:, :, None] * ratios[:, None]


class _FFN(nn.Module):
    def __init__(self, d: int, d_ffn: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, d_ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(d_ffn, d), nn.Dropout(dropout)
        )
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a feed-forward block (post-norm)."""

    def __init__(self, d: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.attn = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)
        self.ffn = _FFN(d, d_ffn, dropout)

    def forward(self, src: Tensor, pos: Tensor, ref: Tensor, shapes: Tensor, pad: Tensor) -> Tensor:
        src = self.norm(src + self.drop(self.attn(src + pos, ref, src, shapes, pad)))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    """Query self-attention, deformable cross-attention into the encoder memory, feed-forward."""

    def __init__(self, d: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.drop1, self.norm1 = nn.Dropout(dropout), nn.LayerNorm(d)
        self.cross_attn = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.drop2, self.norm2 = nn.Dropout(dropout), nn.LayerNorm(d)
        self.ffn = _FFN(d, d_ffn, dropout)

    def forward(
        self, tgt: Tensor, query_pos: Tensor, ref: Tensor, memory: Tensor, shapes: Tensor, pad: Tensor
    ) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.drop2(self.cross_attn(tgt + query_pos, ref, memory, shapes, pad)))
        return self.ffn(tgt)


class DeformableTransformer(nn.Module):
    """Encoder + decoder with learnt queries and reference points.

    ``forward(srcs, masks, pos_embeds)`` with per-level lists of ``[B, d, h_l, w_l]`` features,
    ``[B, h_l, w_l]`` padding masks (True on padding) and position encodings. Returns:
    ``hs [n_dec, B, Q, d]`` (every decoder layer's output), ``reference [B, Q, 2]`` (initial
    reference points, valid-area fractions, (x, y)), ``memory [B, S, d]``,
    ``spatial_shapes [L, 2]`` and ``mask_flatten [B, S]``.
    """

    def __init__(
        self,
        d: int,
        n_heads: int,
        enc_layers: int,
        dec_layers: int,
        d_ffn: int,
        dropout: float,
        n_levels: int,
        n_points: int,
        num_queries: int,
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            EncoderLayer(d, d_ffn, dropout, n_levels, n_heads, n_points) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d, d_ffn, dropout, n_levels, n_heads, n_points) for _ in range(dec_layers)
        )
        self.level_embed = nn.Parameter(torch.empty(n_levels, d))
        self.query_embed = nn.Embedding(num_queries, 2 * d)
        self.reference_points = nn.Linear(d, 2)
        nn.init.normal_(self.level_embed)
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)

    def forward(
        self, srcs: list[Tensor], masks: list[Tensor], pos_embeds: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        shapes = torch.tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pad = torch.cat([m.flatten(1) for m in masks], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl] for lvl, p in enumerate(pos_embeds)], 1)
        ratios = valid_ratios(masks)

        memory = src
        enc_ref = encoder_reference_points(shapes, ratios)
        for layer in self.encoder:
            memory = layer(memory, pos, enc_ref, shapes, pad)

        b = memory.shape[0]
        query_pos, tgt = self.query_embed.weight.split(memory.shape[-1], dim=1)
        query_pos = query_pos[None].expand(b, -1, -1)
        tgt = tgt[None].expand(b, -1, -1)
        reference = self.reference_points(query_pos).sigmoid()
        dec_ref = reference[:, :, None] * ratios[:, None]
        hs = []
        for layer in self.decoder:
            tgt = layer(tgt, query_pos, dec_ref, memory, shapes, pad)
            hs.append(tgt)
        return torch.stack(hs), reference, memory, shapes, pad
