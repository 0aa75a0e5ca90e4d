"""model_loading: checkpoint models cached per process and file version; clear errors; digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import save_checkpoint
from joindet.pipeline.config import make_config
from joindet.pipeline.model_loading import checkpoint_model, clear_cache, file_digest, initial_model, resolve_device

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def _save(path: Path, cfg, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, model=build_model(cfg.model), epoch=0, config_digest=cfg.digest())


def test_checkpoint_models_are_cached_and_reloaded_when_the_file_changes(tmp_path: Path) -> None:
    clear_cache()
    cfg = make_config("tiny")
    ckpt = _save(tmp_path / "epoch-0000.pt", cfg, seed=0)
    cpu = resolve_device("cpu")
    first = checkpoint_model(cfg, ckpt, cpu)
    assert not first.training and checkpoint_model(cfg, ckpt, cpu) is first
    state = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in state.items())
    _save(ckpt, cfg, seed=1)
    os.utime(ckpt, ns=(1, os.stat(ckpt).st_mtime_ns + 10**9))  # a rewrite within the same mtime tick
    second = checkpoint_model(cfg, ckpt, cpu)
    assert second is not first
    assert not torch.equal(second.class_embed.weight, first.class_embed.weight)


def test_bad_checkpoints_are_refused_clearly(tmp_path: Path) -> None:
    cfg = make_config("tiny")
    with pytest.raises(FileNotFoundError, match="epoch-0007.pt does not exist"):
        checkpoint_model(cfg, tmp_path / "epoch-0007.pt", torch.device("cpu"))
    other = make_config("tiny")
    other.model = other.model.with_(num_queries=7)
    ckpt = _save(tmp_path / "epoch-0000.pt", other, seed=0)
    with pytest.raises(ValueError, match="does not fit the run's model") as err:
        checkpoint_model(cfg, ckpt, torch.device("cpu"))
    # one whole sentence: what differs, an example, the likely cause (never torch's cut first line)
    assert "weights of another shape (e.g. transformer.query_embed.weight: (7, 128), model (100, 128))" in str(
        err.value
    ) and str(err.value).endswith("preset?")


def test_initial_model_is_in_eval_mode_and_digest_is_sha256(tmp_path: Path) -> None:
    model = initial_model(make_config("tiny"), torch.device("cpu"))
    assert not model.training
    f = tmp_path / "blob"
    f.write_bytes(b"joindet" * 1000)
    assert file_digest(f) == "sha256:" + hashlib.sha256(b"joindet" * 1000).hexdigest()
