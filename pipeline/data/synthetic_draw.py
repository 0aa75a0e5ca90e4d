"""Drawing primitives of the synthetic scenes: backgrounds, object shape masks and fills.

All images are float32 ``[S, S, 3]`` RGB in 0..255 until the scene is finished; masks are bool
``[S, S]``. Everything is vectorised numpy/cv2 and driven by the ``np.random.Generator`` given.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

#: Object categories, COCO category id = position + 1.
SHAPES: tuple[str, ...] = ("ellipse", "rectangle", "polygon", "textured blob", "thin bar", "ring")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1], ``[size, size, channels]``: a coarse random grid upsampled."""
    coarse = rng.random((cells, cells, channels)).astype(np.float32)
    up = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(size, size, channels), 0.0, 1.0)


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx / size, yy / size


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.8)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted background: gradient between two low-saturation colours, plus low-frequency
    blotches and, sometimes, faint stripes. Its contrast is kept well below the objects'."""
    xx, yy = _coords(size)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    t = np.clip((np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5, 0.0, 1.0)[..., None]
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    img = c0 * (1.0 - t) + c1 * t
    img += (_smooth_noise(rng, size, int(rng.integers(3, 9)), 3) - 0.5) * rng.uniform(10.0, 45.0)
    if rng.random() < 0.4:
        freq = rng.uniform(6.0, 20.0)
        a = rng.uniform(0.0, np.pi)
        img += (np.sin(2 * np.pi * freq * (np.cos(a) * xx + np.sin(a) * yy)) * rng.uniform(4.0, 12.0))[..., None]
    return img.astype(np.float32)


def object_colour(rng: np.random.Generator, avoid: np.ndarray, min_distance: float = 110.0) -> np.ndarray:
    """A saturated RGB colour (0..255) at least ``min_distance`` from ``avoid`` (the local
    background mean) when one is found in a few tries; the farthest tried otherwise."""
    best, best_d = None, -1.0
    for _ in range(12):
        h, s, v = rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0)
        if rng.random() < 0.15:  # some near-black / near-white objects too
            s, v = rng.uniform(0.0, 0.2), rng.choice([rng.uniform(0.02, 0.15), rng.uniform(0.9, 1.0)])
        c = np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0
        d = float(np.linalg.norm(c - avoid))
        if d > best_d:
            best, best_d = c, d
        if d >= min_distance:
            break
    return best


def shape_mask(rng: np.random.Generator, shape: str, size: int, cx: float, cy: float, extent: float) -> np.ndarray:
    """Bool ``[size, size]`` mask of one object of category ``shape`` centred at pixel
    ``(cx, cy)`` whose longer side is about ``extent`` pixels, at a random rotation."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    half = extent / 2.0
    angle = rng.uniform(0.0, 180.0)
    centre = (float(cx), float(cy))
    if shape in ("ellipse", "ring"):
        axes = (max(half, 1.5), max(half * rng.uniform(0.45, 1.0), 1.5))
        cv2.ellipse(canvas, (centre, (2 * axes[0], 2 * axes[1]), angle), 1, -1)
        if shape == "ring":
            k = rng.uniform(0.45, 0.7)
            cv2.ellipse(canvas, (centre, (2 * axes[0] * k, 2 * axes[1] * k), angle), 0, -1)
    elif shape in ("rectangle", "thin bar"):
        short = extent * (rng.uniform(0.4, 1.0) if shape == "rectangle" else rng.uniform(0.07, 0.16))
        pts = cv2.boxPoints((centre, (extent, max(short, 3.0)), angle))
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    elif shape in ("polygon", "textured blob"):
        n = int(rng.integers(3, 8)) if shape == "polygon" else 48
        theta = (
            np.sort(rng.uniform(0.0, 2 * np.pi, n))
            if shape == "polygon"
            else np.linspace(0, 2 * np.pi, n, endpoint=False)
        )
        if shape == "polygon":
            radius = half * rng.uniform(0.6, 1.0, n)
        else:  # a smooth wobbly outline: a few random harmonics of the radius
            radius = np.ones(n)
            for k in range(2, 5):
                radius += rng.uniform(0.0, 0.22) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            radius = half * radius / radius.max()
        pts = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes are {', '.join(SHAPES)}")
    return canvas.astype(bool)


def fill(rng: np.random.Generator, size: int, colour: np.ndarray, textured: bool) -> np.ndarray:
    """A full-frame ``[size, size, 3]`` fill in ``colour``: solid, shaded, striped, checkered or
    noise-textured. Pattern shades stay on the same side of the background as ``colour``."""
    xx, yy = _coords(size)
    kind = (
        "texture"
        if textured
        else rng.choice(["solid", "shaded", "stripes", "checker", "texture"], p=[0.35, 0.25, 0.15, 0.1, 0.15])
    )
    base = np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    if kind == "solid":
        return base.copy()
    if kind == "shaded":
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy)[..., None]
        return base * (0.8 + 0.35 * (t - t.min()) / max(float(np.ptp(t)), 1e-6))
    if kind == "stripes":
        freq, a = rng.uniform(10.0, 30.0), rng.uniform(0, np.pi)
        s = (np.sin(2 * np.pi * freq * (np.cos(a) * xx + np.sin(a) * yy)) > 0)[..., None]
        return np.where(s, base, base * 0.65)
    if kind == "checker":
        n = rng.uniform(8.0, 24.0)
        c = ((np.floor(xx * n) + np.floor(yy * n)) % 2 == 0)[..., None]
        return np.where(c, base, base * 0.65)
    noise = _smooth_noise(rng, size, int(rng.integers(10, 30)), 1)
    return base * (0.6 + 0.6 * noise)
