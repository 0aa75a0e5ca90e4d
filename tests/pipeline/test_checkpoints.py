"""Checkpoints: atomic writes, weights_only loading, RNG round trip, clear errors."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from joindet.pipeline.checkpoints import (
    CheckpointError,
    capture_rng,
    checkpoint_name,
    latest_epoch,
    list_epochs,
    load_checkpoint,
    load_model_state,
    restore_rng,
    restore_training_state,
    save_checkpoint,
)


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, opt, sched, scaler


def _step(model, opt, sched) -> None:
    loss = model(torch.randn(5, 3)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_round_trip_restores_every_state(tmp_path: Path) -> None:
    model, opt, sched, scaler = _parts()
    _step(model, opt, sched)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(
        tmp_path / "checkpoints" / checkpoint_name(4),
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=scaler,
        epoch=4,
        prior_version=2,
        config_digest="abc",
        extra={"cat_ids": [1, 5]},
    )
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    model2, opt2, sched2, scaler2 = _parts(seed=9)
    ckpt = load_checkpoint(path)
    assert (ckpt["epoch"], ckpt["prior_version"], ckpt["config_digest"]) == (4, 2, "abc")
    assert ckpt["extra"] == {"cat_ids": [1, 5]}
    assert restore_training_state(ckpt, model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2) == 5
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == sched.get_last_lr()
    # the optimiser continues identically
    torch.manual_seed(0)
    _step(model, opt, sched)
    torch.manual_seed(0)
    _step(model2, opt2, sched2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_loads_with_weights_only(tmp_path: Path) -> None:
    model, opt, sched, scaler = _parts()
    _step(model, opt, sched)
    path = save_checkpoint(
        tmp_path / "e.pt", model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=0, config_digest="d"
    )
    obj = torch.load(path, weights_only=True)  # must not raise: only tensors and plain types inside
    assert obj["epoch"] == 0


def test_ddp_prefix_is_stripped_and_bare_state_dicts_accepted(tmp_path: Path) -> None:
    model, *_ = _parts()
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "bare.pt")
    state = load_model_state(tmp_path / "bare.pt")
    assert set(state) == set(model.state_dict())
    save_checkpoint(tmp_path / "c.pt", model=model, epoch=1, config_digest="d")
    assert set(load_model_state(tmp_path / "c.pt")) == set(model.state_dict())


def test_latest_epoch_ignores_temp_and_foreign_files(tmp_path: Path) -> None:
    assert latest_epoch(tmp_path / "missing") is None
    model, *_ = _parts()
    for e in (0, 3, 1):
        save_checkpoint(tmp_path / checkpoint_name(e), model=model, epoch=e, config_digest="d")
    (tmp_path / ".epoch-0009.pt.abc.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert list_epochs(tmp_path) == [0, 1, 3]
    assert latest_epoch(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("epoch")) == [
        "epoch-0000.json",
        "epoch-0000.pt",
        "epoch-0001.json",
        "epoch-0001.pt",
        "epoch-0003.json",
        "epoch-0003.pt",
    ]
    (tmp_path / "epoch-0005.pt").write_bytes(b"an unfinished write: no marker")
    assert latest_epoch(tmp_path) == 3


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path: Path) -> None:
    model, *_ = _parts()
    path = save_checkpoint(tmp_path / "e.pt", model=model, epoch=0, config_digest="old")

    class Boom(torch.nn.Module):
        def state_dict(self, *a, **k):  # type: ignore[override]
            return {"w": _Unpicklable()}

    class _Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model=Boom(), epoch=1, config_digest="new")
    assert load_checkpoint(path)["config_digest"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.pt"]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_bad_files_give_one_clear_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "epoch-0002.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="epoch-0002.pt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="epoch-0002.pt"):
        load_model_state(path)


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    model, *_ = _parts()
    path = save_checkpoint(tmp_path / "epoch-0000.pt", model=model, epoch=0, config_digest="d")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="epoch-0000.pt is damaged.*retrain epoch 0"):
        load_checkpoint(path)


def test_foreign_format_refused(tmp_path: Path) -> None:
    torch.save({"model": {}, "format": 99}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="x.pt has no marker"):
        load_checkpoint(tmp_path / "x.pt")
    data = (tmp_path / "x.pt").read_bytes()
    marker = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "epoch": 0}
    (tmp_path / "x.json").write_text(json.dumps(marker))
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path / "x.pt")


def test_rng_capture_restore_is_exact() -> None:
    state = capture_rng()
    a = (random.random(), np.random.standard_normal(), torch.randn(2).tolist())
    restore_rng(state)
    assert (random.random(), np.random.standard_normal(), torch.randn(2).tolist()) == a


def test_negative_epoch_refused() -> None:
    with pytest.raises(ValueError):
        checkpoint_name(-1)
