"""Pictures: `priors plot` draws a grid of several images with every kind in its own style, scores
and ground truth; the report's evolution strip has cells of at least 256 px with ground truth on
the prior panels and the attention map as a translucent overlay with a colour bar."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from joindet.flows.cli import main  # noqa: E402
from joindet.pipeline.report.evolution import StripCell, StripRow, evolution_figure  # noqa: E402
from joindet.pipeline.report.panels import (  # noqa: E402
    ATTENTION_ALPHA,
    KIND_STYLES,
    draw_attention,
    draw_ground_truth,
    draw_priors,
    scaled_attention,
)
from joindet.priors import BoxSet, PriorStore, write_images_table  # noqa: E402
from joindet.priors.store.attention_maps import AttentionStore  # noqa: E402


def test_kinds_differ_in_colour_and_line_style() -> None:
    styles = list(KIND_STYLES.values())
    assert len({s["color"] for s in styles}) == len({str(s["linestyle"]) for s in styles}) == len(styles)
    # drawn thickest first: a thinner box of another kind on top of an identical one stays visible
    widths = [s["linewidth"] for s in styles]
    assert widths[0] == max(widths)


def test_panel_helpers_draw_boxes_scores_truth_and_a_translucent_map() -> None:
    fig, ax = plt.subplots()
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]])
    assert draw_priors(ax, "region", boxes, np.array([0.2, 0.9, 0.5]), 100, 50, max_boxes=2) == 2
    assert sorted(t.get_text() for t in ax.texts) == ["0.50", "0.90"]  # the two best, with their scores
    assert draw_ground_truth(ax, np.array([[10, 5, 20, 10]])) == 1
    image = draw_attention(ax, np.array([[1.0, 3.0], [np.nan, 5.0]]), 100, 50)
    assert image.get_alpha() == ATTENTION_ALPHA < 1
    np.testing.assert_allclose(scaled_attention(np.array([[1.0, 3.0], [np.nan, 5.0]])), [[0, 0.5], [np.nan, 1]])
    plt.close(fig)


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_evolution_cells_are_at_least_256_px_with_a_colour_bar() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((160, 160, 3)) * 255).astype(np.uint8)
    cell = StripCell(np.array([[0.1, 0.1, 0.6, 0.6]]), np.array([0.8]), rng.random((10, 10)))
    rows = [StripRow(1, image, {0: cell, 2: cell}, np.array([[10.0, 10.0, 50.0, 40.0]]))]
    png = evolution_figure(rows, [0, 2])
    width, height = _png_size(png)
    assert width >= 3 * 256 and height >= 256  # ground truth column + two versions
    without_map = evolution_figure([StripRow(1, image, {0: StripCell(cell.boxes, cell.scores, None)}, None)], [0])
    assert _png_size(without_map)[0] < width


@pytest.fixture()
def run_with_images(tmp_path: Path) -> Path:
    import cv2

    run, root = tmp_path / "run", tmp_path / "images"
    root.mkdir()
    for i in (1, 2, 3):
        cv2.imwrite(str(root / f"{i}.png"), np.full((60, 80, 3), 40 * i, np.uint8))
    ids = [1, 2, 3]
    write_images_table(
        run,
        pa.table(
            {
                "image_id": ids,
                "file": [f"{i}.png" for i in ids],
                "width": pa.array([80] * 3, pa.int32()),
                "height": pa.array([60] * 3, pa.int32()),
            }
        ),
    )
    same = np.array([[0.1, 0.1, 0.5, 0.5]] * 3)
    store = PriorStore(run)
    store.commit(
        2,
        {
            "region": BoxSet.from_arrays(ids, same, [0.5, 0.6, 0.7], "region"),
            "instance": BoxSet.from_arrays(ids, same, [0.9, 0.8, 0.7], "instance"),
            "smoothed": BoxSet.from_arrays(ids, same, [0.7, 0.7, 0.7]),
        },
    )
    att = AttentionStore(run)
    att.create(2, ids, (8, 8))
    for i in ids:
        att.write(2, i, np.random.default_rng(i).random((6, 8)))
    (run / "run.json").write_text(json.dumps({"config": {"data": {"root": str(root)}}}))
    return run


def test_plot_draws_a_grid_of_images(run_with_images: Path, tmp_path: Path) -> None:
    one, three = tmp_path / "one.png", tmp_path / "three.png"
    res = CliRunner().invoke(main, ["priors", "plot", str(run_with_images), "--image", "2", "-o", str(one)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["priors", "plot", str(run_with_images), "--images", "3", "-o", str(three)])
    assert res.exit_code == 0 and "3 images of v0002" in res.output, res.output
    assert Image.open(three).size[0] > 1.3 * Image.open(one).size[0]  # three panels side by side
    res = CliRunner().invoke(
        main, ["priors", "plot", str(run_with_images), "--image-ids", "3,1", "-o", str(tmp_path / "two.png")]
    )
    assert res.exit_code == 0 and "2 images" in res.output
    res = CliRunner().invoke(main, ["priors", "plot", str(run_with_images), "--image-ids", "x", "-o", str(one)])
    assert res.exit_code == 2 and "comma-separated" in res.output


def test_plot_draws_every_box_unless_told_otherwise(run_with_images: Path, tmp_path: Path) -> None:
    """A user looks at the priors: by default every box of every kind; --max-boxes N the best N."""
    rng = np.random.default_rng(0)
    xy = rng.random((14, 2)) * 0.5
    many = BoxSet.from_arrays([1] * 14, np.concatenate([xy, xy + 0.4], 1), rng.random(14))
    PriorStore(run_with_images).commit(4, {"smoothed": many}, parent=2)
    out = tmp_path / "all.png"
    res = CliRunner().invoke(main, ["priors", "plot", str(run_with_images), "--image", "1", "-o", str(out)])
    assert res.exit_code == 0 and "every box" in res.output, res.output
    res = CliRunner().invoke(
        main, ["priors", "plot", str(run_with_images), "--image", "1", "--max-boxes", "3", "-o", str(out)]
    )
    assert res.exit_code == 0 and "the best 3 boxes per kind" in res.output, res.output
    assert "default: every box" in " ".join(CliRunner().invoke(main, ["priors", "plot", "--help"]).output.split())
    fig, ax = plt.subplots()
    assert draw_priors(ax, "smoothed", many.boxes, many.scores, 80, 60) == 14  # no cap unless asked
    plt.close(fig)


def test_plot_draws_ground_truth_of_the_run_dataset(tiny_data: Path, tmp_path: Path) -> None:
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    run = RunDir.create(tmp_path / "run", make_config("tiny", "synthetic", [f"data.root={tiny_data}"]))
    ids = run.image_ids()
    run.store.commit(0, {"smoothed": BoxSet.from_arrays(ids, np.tile([[0.1, 0.1, 0.4, 0.4]], (len(ids), 1)))})
    out = tmp_path / "gt.png"
    res = CliRunner().invoke(main, ["priors", "plot", str(run.path), "--images", "2", "-o", str(out)])
    assert res.exit_code == 0 and "with ground truth" in res.output, res.output
    res = CliRunner().invoke(main, ["priors", "plot", str(run.path), "--images", "2", "--no-gt", "-o", str(out)])
    assert res.exit_code == 0 and "with ground truth" not in res.output
