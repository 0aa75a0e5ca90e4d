"""``joindet runs verify RUN``: check every file of a run against what vouches for it.

- ``run.json`` parses and names this joindet's schema version;
- ``images.parquet`` and ``quarantine.parquet`` read and match their schemas;
- every committed prior version: its manifest parses, every data file matches the manifest's
  size, rows, sha256 and the boxes schema (the store's own ``PriorStore.verify``);
- every checkpoint: its marker parses and the file matches its size and sha256; a ``.pt``
  without a marker (an unfinished write) and a marker without its ``.pt`` are reported too.

Each problem is one sentence naming the file (and, where there is one, the fix).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from joindet.pipeline.checkpoints import checkpoint_problem
from joindet.pipeline.run_dir import QUARANTINE_FILE, RunDir
from joindet.priors import PriorStore, RunNotFoundError
from joindet.storage_schema import QUARANTINE_SCHEMA


def verify_run(path: str | Path) -> list[str]:
    """Problems found in the run at ``path`` (empty: every file verifies).

    Raises ``RunNotFoundError`` when ``path`` does not exist. Reads every data file and every
    checkpoint whole (sha256), so it costs about one read of the run directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunNotFoundError(f"run directory {path} does not exist; check the path")
    problems: list[str] = []
    try:
        RunDir.open(path)
    except (ValueError, OSError) as exc:
        problems.append(str(exc))
    problems += PriorStore(path).verify()  # images.parquet and every committed version
    problems += _quarantine_problems(path / QUARANTINE_FILE)
    problems += _checkpoint_problems(path / "checkpoints")
    return problems


def _quarantine_problems(f: Path) -> list[str]:
    if not f.exists():
        return []
    try:
        table = pq.read_table(f)
        missing = [n for n in QUARANTINE_SCHEMA.names if n not in table.schema.names]
        if missing:
            return [f"{f} has no column {missing[0]!r}; it was not written by joindet"]
        table.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
    except (pa.ArrowException, OSError) as exc:
        return [f"{f} is not a readable quarantine table ({exc}); restore it or delete it to re-detect bad images"]
    return []


def _checkpoint_problems(ckpt_dir: Path) -> list[str]:
    if not ckpt_dir.is_dir():
        return []
    stems = sorted({p.stem for p in ckpt_dir.glob("epoch-*") if p.suffix in (".pt", ".json")})
    return [p for stem in stems if (p := checkpoint_problem(ckpt_dir / f"{stem}.pt")) is not None]


__all__ = ["verify_run"]
