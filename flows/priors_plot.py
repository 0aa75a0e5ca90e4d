"""Drawing one image's priors (``joindet priors plot``): boxes by kind, eigen attention overlay."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from joindet.priors import PriorStore, read_images_table
from joindet.priors.store.attention_maps import AttentionStore
from joindet.priors.store.errors import StoreError, VersionNotFoundError

KIND_COLOURS = {"region": "tab:cyan", "instance": "tab:purple", "smoothed": "tab:green"}


def image_root(run_dir: str | Path, data_root: str | None) -> Path:
    """``data_root``, else run.json's ``config.data.root``, else its resolved ``dataset.root``."""
    if data_root:
        return Path(data_root)
    meta = Path(run_dir) / "run.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{meta} is missing, so the image root is unknown; pass --data-root") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{meta} is not valid JSON ({exc}); pass --data-root") from None
    root = (info.get("config", {}).get("data", {}) or {}).get("root") or (info.get("dataset") or {}).get("root")
    if not root:
        raise StoreError(f"{meta} names no data root (config.data.root); pass --data-root")
    return Path(root)


def plot_image_priors(
    store: PriorStore,
    version: int,
    image_id: int,
    output: Path,
    data_root: str | None = None,
    kinds: list[str] | None = None,
) -> Path:
    """Write a PNG of image ``image_id`` with the boxes of ``kinds`` (default: all stored kinds)
    of ``version``, and its eigen attention map as a heat map when one is stored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    m = store.manifest(version)
    images = read_images_table(store.run_dir)
    ids = images.column("image_id").to_numpy()
    rows = np.flatnonzero(ids == image_id)
    if not len(rows):
        raise StoreError(f"image_id {image_id} is not in {store.run_dir}/images.parquet")
    row = int(rows[0])
    file = images.column("file")[row].as_py()
    w, h = int(images.column("width")[row].as_py()), int(images.column("height")[row].as_py())
    path = image_root(store.run_dir, data_root) / file
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise StoreError(f"cannot read image {path}; check --data-root")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    fig, ax = plt.subplots(figsize=(8, 8 * h / max(w, 1)))
    ax.imshow(rgb, extent=(0, w, h, 0))
    try:
        att = AttentionStore(store.run_dir).read(version, image_id)
    except (VersionNotFoundError, StoreError):
        att = None
    if att is not None:
        # the map covers the whole image (valid cells only), so stretch it over the image extent
        ax.imshow(att, cmap="inferno", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")
    for kind in kinds or m.kinds:
        if kind not in m.files:
            raise VersionNotFoundError(f"prior version {version} has no {kind!r} boxes (kinds: {m.kinds})")
        bs = store.read(version, kind).for_image(image_id)
        for (x0, y0, x1, y1), s in zip(bs.boxes, bs.scores):
            ax.add_patch(
                Rectangle(
                    (x0 * w, y0 * h),
                    (x1 - x0) * w,
                    (y1 - y0) * h,
                    fill=False,
                    lw=1.5,
                    edgecolor=KIND_COLOURS[kind],
                    alpha=0.4 + 0.6 * float(s),
                )
            )
        ax.plot([], [], color=KIND_COLOURS[kind], label=f"{kind} ({len(bs)})")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"v{version:04d} image {image_id}" + (" + eigen attention" if att is not None else ""))
    ax.legend(loc="upper right", fontsize=8)
    ax.axis("off")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return output
