"""The tiny run of the fault-injection tests (tests/pipeline/test_faults.py through the stages,
tests/flows/test_cli_faults.py through the command line): its settings and the helpers that copy
and damage it. Its dataset is the ``fault_data`` fixture of tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from joindet.pipeline.model_loading import clear_cache

#: 2 epochs, a new prior version after each (v0, v1), 2 mining shards; no attention maps.
SETTINGS = [
    "schedule.epochs=2",
    "schedule.update_every=1",
    "mine.shards=2",
    "train.num_workers=0",
    "train.batch_size=2",
    "mine.batch_size=2",
    "mine.save_attention=false",
]


def copy_run(base: Path, tmp_path: Path) -> Path:
    """A private copy ``tmp_path/run`` of the run directory ``base``, with no model cached from another copy."""
    clear_cache()
    shutil.copytree(base, tmp_path / "run")
    return tmp_path / "run"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip(path: Path, start: int = 2000, count: int = 1000) -> None:
    """XOR ``count`` bytes of ``path`` from byte ``start`` (as the corruption of issue 15 did)."""
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
