"""Report data: timings derived from timestamps, the verdict, log reading, HTML escaping."""

from __future__ import annotations

import html as _html
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from joindet.pipeline.report.build import WITHIN_NOISE, judge, loop_verdict
from joindet.pipeline.report.collect import ReportData, VersionInfo, read_train_log, stage_timings
from joindet.pipeline.report.html import table


def _version(v: int, created: str) -> VersionInfo:
    return VersionInfo(
        version=v, parent=None if v == 0 else 0, created=created, kinds=["smoothed"], stats={"smoothed": {}}, churn=None
    )


def test_stage_timings_derive_init_and_mining_from_timestamps() -> None:
    versions = [_version(0, "2026-01-01T00:00:10+00:00"), _version(2, "2026-01-01T00:05:00+00:00")]
    log = [
        {"epoch": 0, "seconds": 100.5, "time": "2026-01-01T00:02:00+00:00"},
        {"epoch": 1, "seconds": 90.0, "time": "2026-01-01T00:04:00+00:00"},
        {"epoch": 2, "seconds": 80.0, "time": "2026-01-01T00:07:00+00:00"},
    ]
    t = {x.stage: x for x in stage_timings("2026-01-01T00:00:00+00:00", versions, log)}
    assert t["init_priors v0000"].seconds == 10.0 and t["init_priors v0000"].how.startswith("derived")
    assert t["train epoch 0"].seconds == 100.5 and t["train epoch 0"].how.startswith("recorded")
    assert t["mine + smooth v0002"].seconds == 60.0  # epoch 1 logged 00:04:00 -> v2 at 00:05:00
    assert "mine + smooth v0001" not in t and "mine + smooth v0003" not in t
    assert [x.stage for x in stage_timings(None, versions, [])] == []


def test_loop_verdict_compares_like_with_like_and_says_within_noise() -> None:
    d = ReportData(run_path="r", info={"config": {"data": {"split": "train"}}})
    assert loop_verdict(d) == []
    d.prior_metrics = {
        "v0000": {"smoothed": {"AR@100": 0.2}},
        "v0004": {"smoothed": {"AR@100": 0.3}},
        "v0002": {"smoothed": {"AR@100": 0.1}},
    }
    d.proposals = [
        {"epoch": 5, "split": "val", "metrics": {"AR@100": 0.15}},
        {"epoch": 3, "split": "val", "metrics": {"AR@100": 0.9}},
    ]
    chance = {"train": {100: {"AR@100": 0.12}}, "val": {100: {"AR@100": 0.14}}}
    rows = loop_verdict(d, chance, tolerance=0.02)
    (q1, b1, a1, h1), (q2, b2, a2, h2), (q3, b3, a3, h3) = rows
    assert "v0004" in q1 and "train split" in q1 and (b1, a1, h1) == (0.2, 0.3, True)
    # the last checkpoint (not the best), against random crops of the same (val) split: +0.01
    assert "epoch 5" in q2 and "val split" in q2 and (b2, a2, h2) == (0.14, 0.15, WITHIN_NOISE)
    # v0002 is below 100 random crops on the train split: flagged
    assert q3.startswith("flag: v0002") and (b3, a3, h3) == (0.12, 0.1, False)
    # the example: 0.0924 -> 0.0935 is no improvement
    d.prior_metrics = {"v0000": {"smoothed": {"AR@100": 0.0924}}, "v0008": {"smoothed": {"AR@100": 0.0935}}}
    assert loop_verdict(d, {}, tolerance=0.02)[0][3] == WITHIN_NOISE
    assert loop_verdict(d, {}, tolerance=0.0005)[0][3] is True


def test_judge() -> None:
    assert judge(0.1, 0.2, 0.05) is True and judge(0.2, 0.1, 0.05) is False
    assert judge(0.1, 0.12, 0.05) == WITHIN_NOISE and judge(None, 0.1, 0.05) is None


def test_read_train_log_skips_a_line_cut_short_and_sorts(tmp_path: Path) -> None:
    p = tmp_path / "train.jsonl"
    p.write_text('{"epoch": 1, "loss": 2}\n{"epoch": 0, "loss": 3}\n{"epoch": 2, "lo')
    assert [r["epoch"] for r in read_train_log(p)] == [0, 1]
    assert read_train_log(tmp_path / "missing.jsonl") == []


@given(st.text(), st.text())
def test_table_escapes_every_value(header: str, value: str) -> None:
    out = table([header], [[value]])
    assert (
        f"<th>{_html.escape(header)}</th>" in out and f"<td>{_html.escape(value)}</td>" in out or value in ("yes", "no")
    )
    assert out.count("<td") == 1 and out.count("<th>") == 1
