"""Run configuration: presets, overrides, round trip through run.json, digest."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from joindet.pipeline.config import ConfigError, RunConfig, ScheduleConfig, apply_overrides, make_config
from joindet.pipeline.schedule import blocks, versions


def _blocks(schedule):
    return [(b.start, b.end) for b in blocks(schedule)]


def test_tiny_preset_has_two_update_rounds() -> None:
    cfg = make_config("tiny", "synthetic")
    assert versions(cfg.schedule) == [0, 2, 4]
    assert _blocks(cfg.schedule) == [(0, 2), (2, 4), (4, 6)]
    assert cfg.model.num_queries <= 100 and cfg.model.d_model <= 64


def test_paper_schedule_depends_on_dataset() -> None:
    assert versions(make_config("paper", "coco").schedule) == [0, 10, 20, 30, 40]
    assert _blocks(make_config("paper", "imagenet").schedule) == [(e, e + 1) for e in range(5)]


def test_overrides_parse_by_field_type() -> None:
    cfg = make_config(
        "tiny",
        "synthetic",
        [
            "priors.momentum=0.3",
            "priors.max_per_image=none",
            "mine.save_attention=false",
            "priors.update=nms",
            "schedule.epochs=8",
        ],
    )
    assert cfg.priors.momentum == pytest.approx(0.3)
    assert cfg.priors.max_per_image is None
    assert cfg.mine.save_attention is False
    assert cfg.priors.update == "nms"
    assert versions(cfg.schedule) == [0, 2, 4, 6]


@pytest.mark.parametrize(
    "override, message",
    [
        ("priors.momentum", "section.key=value"),
        ("nope.x=1", "unknown config"),
        ("priors.nope=1", "unknown config key"),
        ("priors.momentum=abc", "cannot read 'abc' as float"),
        ("priors.momentum=2", "must lie in [0, 1]"),
        ("priors.update=magic", "choose one of"),
    ],
)
def test_bad_overrides_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config("tiny", "synthetic", [override])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("huge")


def test_round_trip_through_json_keeps_digest() -> None:
    cfg = make_config("paper", "coco", ["priors.source=region"])
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.digest() == cfg.digest()


def test_digest_ignores_resume_safe_keys_only() -> None:
    base = make_config("tiny", "synthetic")
    assert apply_overrides(make_config("tiny", "synthetic"), ["mine.shards=7"]).digest() == base.digest()
    assert apply_overrides(make_config("tiny", "synthetic"), ["priors.momentum=0.2"]).digest() != base.digest()


def test_from_dict_rejects_unknown_keys() -> None:
    d = make_config("tiny").to_dict()
    d["priors"]["bogus"] = 1
    with pytest.raises(ConfigError, match="priors.bogus"):
        RunConfig.from_dict(d)


@given(st.integers(1, 60), st.integers(1, 20))
def test_schedule_blocks_cover_all_epochs(epochs: int, every: int) -> None:
    s = ScheduleConfig(epochs=epochs, update_every=every)
    covered = [e for a, b in _blocks(s) for e in range(a, b)]
    assert covered == list(range(epochs))
    assert versions(s)[0] == 0 and all(v % every == 0 for v in versions(s))
    assert len(versions(s)) == len(_blocks(s))


def test_override_of_frozen_model_section() -> None:
    cfg = make_config("tiny", "synthetic", ["model.num_queries=7", "model.train_size=128,144"])
    assert cfg.model.num_queries == 7
    assert cfg.model.train_size == (128, 144)
    assert make_config("tiny", "synthetic").model.num_queries != 7


def test_jitter_override_is_a_float_pair() -> None:
    cfg = make_config("tiny", "synthetic", ["train.jitter=0.5,1.5"])
    assert cfg.train.jitter == (0.5, 1.5)
