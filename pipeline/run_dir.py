"""One pretraining run on disk: ``run.json``, ``images.parquet``, checkpoints, quarantine, store.

Layout (DESIGN.md, "The run directory and the prior store")::

    RUN/run.json  images.parquet  quarantine.parquet  priors/  attention/  checkpoints/  metrics/

``run.json`` pins the resolved configuration and the dataset (name, root, fingerprint) so that
every later stage, in any process, reopens exactly the same run: ``RunDir.open(path)``.
``RunDir`` keeps the run directory's files; what the schedule holds and what of it is done is
``pipeline.schedule``'s. Local paths only (a POSIX filesystem shared by every machine of a run).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from joindet.pipeline.checkpoints import checkpoint_name, config_disagreements, latest_epoch
from joindet.pipeline.config import RunConfig
from joindet.priors import PriorStore, RunNotFoundError, read_images_table, write_images_table
from joindet.storage_schema import QUARANTINE_SCHEMA, SCHEMA_VERSION

RUN_JSON = "run.json"
IMAGES_FILE = "images.parquet"
QUARANTINE_FILE = "quarantine.parquet"


class RunMismatchError(ValueError):
    """An existing run directory was created with another configuration or dataset."""


class RunDir:
    """Paths and small tables of one run. Build with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path = Path(path)
        self.info = info
        self.config = RunConfig.from_dict(info["config"])
        self.store = PriorStore.shared(self.path)
        self._images: pa.Table | None = None

    def __reduce__(self) -> tuple:
        # Shipped to another process (a Dask worker) as its path: the receiver reopens the run
        # and gets its own store and lock state rather than a copy of this process's.
        return (RunDir.open, (str(self.path),))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path: str | Path, cfg: RunConfig, dataset: Any = None, force: bool = False) -> RunDir:
        """Create the run (or reopen it when config digest and dataset fingerprint agree; changed
        resume-safe settings, ``pipeline.config.RESUME_SAFE_KEYS``, are then written to run.json).

        ``dataset``: an opened ``pipeline.data.Dataset``; None opens ``cfg.data`` (split
        ``cfg.data.split``). With ``force``, a changed configuration replaces run.json (the old one
        is kept beside it) as long as the dataset index is the same; a different dataset is never
        forced onto a run with priors, because their image ids would no longer mean the same images,
        nor a configuration that the run's checkpoints were not trained with.

        Everything happens under the run's writer lock (taken before anything in the directory is
        read for update or written): a call refused because another writer works on the run
        changes nothing. Callers that go on writing (a flow) hold :meth:`writer_lock` around this
        call and their work, so no other writer gets in between.
        """
        path = Path(path)
        cfg.validate()
        if dataset is None:
            from joindet.pipeline.data import open_dataset  # here: runs status never loads a dataset

            dataset = open_dataset(
                cfg.data.dataset,
                root=cfg.data.root,
                split=cfg.data.split,
                annotations=cfg.data.annotations,
                class_list=cfg.data.class_list,
            )
        with cls.writer_lock(path):
            return cls._create_locked(path, cfg, dataset, force)

    @staticmethod
    def writer_lock(path: str | Path) -> AbstractContextManager[Any]:
        """The writer lock of the run at ``path`` (created as an empty directory when missing),
        re-entrant within this process; the same lock as ``RunDir.open(path).lock()``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        return PriorStore.shared(path).lock()

    @classmethod
    def _create_locked(cls, path: Path, cfg: RunConfig, dataset: Any, force: bool) -> RunDir:
        fingerprint = dataset.fingerprint()
        if (path / RUN_JSON).exists():
            run = cls.open(path)
            problems = _differences(run, cfg, fingerprint)
            if not problems:
                _check_checkpoints_agree(path, cfg)
                if cfg.to_dict() != run.config.to_dict():
                    # Only resume-safe settings changed (workers, devices, mining batch size and
                    # shards): the resumed run uses the new ones.
                    info = {**run.info, "config": cfg.to_dict()}
                    _atomic_write(path / RUN_JSON, json.dumps(info, indent=2, sort_keys=True).encode())
                    return cls.open(path)
                return run
            if not force:
                raise RunMismatchError(
                    f"{path / RUN_JSON} was created with a different setup ({'; '.join(problems)}); "
                    "use a new --run-dir, or --force to replace the configuration"
                )
            if run.info["dataset"]["fingerprint"] != fingerprint and run.store.versions():
                raise RunMismatchError(
                    f"{path / RUN_JSON}: the dataset differs from the one this run's priors were mined on "
                    "(fingerprint changed); --force cannot replace it, use a new --run-dir"
                )
            _check_checkpoints_agree(path, cfg)  # before anything is replaced
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            os.replace(path / RUN_JSON, path / f"{RUN_JSON}.replaced-{stamp}")
        else:
            _check_checkpoints_agree(path, cfg)
        path.mkdir(parents=True, exist_ok=True)
        index = dataset.index()
        if not (path / IMAGES_FILE).exists() or force:
            # Images the index shows unreadable (no header, too large) are quarantined now and
            # left out of images.parquet; the others are found when a stage loads them.
            unreadable = dataset.unreadable()
            if unreadable:
                import pyarrow.compute as pc  # here: its import is 0.05-0.1 s of every command's start

                bad = pa.array([r[0] for r in unreadable], pa.int64())
                keep = pc.invert(pc.is_in(index.column("image_id"), value_set=bad))
                write_images_table(path, index.filter(keep))
                _merge_quarantine(path, _quarantine_table(unreadable))
            else:
                write_images_table(path, index)
            _log_dataset(path, dataset, unreadable)
        info = {
            "schema_version": SCHEMA_VERSION,
            "config": cfg.to_dict(),
            "config_digest": cfg.digest(),
            "dataset": {
                "name": dataset.name,
                "root": str(dataset.root),
                "fingerprint": fingerprint,
                "num_images": int(index.num_rows),
                "split": dataset.split,
            },
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "joindet_version": _joindet_version(),
        }
        _atomic_write(path / RUN_JSON, json.dumps(info, indent=2, sort_keys=True).encode())
        return cls.open(path)  # exactly what every later process will see

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run; a clear error when the path is missing or not a run."""
        path = Path(path)
        if not path.exists():
            raise RunNotFoundError(
                f"run directory {path} does not exist; create it with `joindet flow run pretrain --run-dir {path}`"
            )
        meta = path / RUN_JSON
        if not meta.is_file():
            raise RunNotFoundError(
                f"{path} is not a joindet run (no {RUN_JSON}); point at the directory a pretrain flow created"
            )
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunMismatchError(f"{meta} is not valid JSON ({exc}); restore it or start a new run") from None
        for key in ("schema_version", "config", "config_digest", "dataset"):
            if key not in info:
                raise RunMismatchError(f"{meta} has no {key!r} field; it was not written by joindet")
        if info["schema_version"] != SCHEMA_VERSION:
            raise RunMismatchError(
                f"{meta}: schema_version {info['schema_version']} is not supported (this joindet reads "
                f"{SCHEMA_VERSION}); use the joindet version that created the run"
            )
        return cls(path, info)

    # ------------------------------------------------------------------ data
    def dataset(self, split: str | None = None) -> Any:
        """The run's dataset re-opened from run.json; ``split`` None: the pretraining split.

        Other splits (``data.eval_split``) are opened from the same recorded dataset root.
        """
        d = self.info["dataset"]
        cfg = self.config.data
        split = d["split"] if split is None else split
        from joindet.pipeline.data import open_dataset

        return open_dataset(
            d["name"],
            root=d["root"],
            split=split,
            annotations=cfg.annotations if split == d["split"] else None,
            class_list=cfg.class_list,
        )

    def images(self) -> pa.Table:
        """The pinned dataset index (IMAGES_SCHEMA), sorted by image_id."""
        if self._images is None:
            self._images = read_images_table(self.path)  # validated; CorruptFileError names the file
        return self._images

    def image_ids(self) -> np.ndarray:
        """int64 [N] image ids of the index, sorted."""
        return self.images().column("image_id").to_numpy()

    # ------------------------------------------------------------------ quarantine
    def quarantine(self) -> pa.Table:
        """Images that could not be read (QUARANTINE_SCHEMA); empty when none."""
        return _read_quarantine(self.path)

    def quarantined_ids(self) -> set[int]:
        return set(self.quarantine().column("image_id").to_pylist())

    def add_quarantine(self, rows: Iterable[tuple[int, str, str]] | pa.Table) -> int:
        """Add ``(image_id, file, reason)`` rows (first reason of an id wins); returns rows added.

        Callers hold the run's lock (the file is rewritten whole, atomically).
        """
        new = rows if isinstance(rows, pa.Table) else _quarantine_table(list(rows))
        return _merge_quarantine(self.path, new)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / "checkpoints" / checkpoint_name(epoch)

    def last_checkpoint(self) -> int | None:
        """Epoch of the newest committed checkpoint (one with its marker), or None; whether the
        file verifies is ``RunPlan.last_checkpoint``'s question."""
        return latest_epoch(self.path / "checkpoints")

    def check_checkpoints_agree(self) -> None:
        """Raise :class:`RunMismatchError` when a checkpoint was trained under another config digest
        than run.json's (checked before any stage works, so nothing is mined from it)."""
        _check_checkpoints_agree(self.path, self.config)

    def metrics_dir(self) -> Path:
        d = self.path / "metrics"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------------ lock
    def lock(self) -> AbstractContextManager[Any]:
        """The run's single-writer lock (the store's), re-entrant within this process."""
        return self.store.lock()


# ---------------------------------------------------------------------- helpers
def _check_checkpoints_agree(path: Path, cfg: RunConfig) -> None:
    ckpt_dir = path / "checkpoints"
    wrong = config_disagreements(ckpt_dir, cfg.digest())
    if wrong:
        more = f" (and {len(wrong) - 1} more checkpoints)" if len(wrong) > 1 else ""
        raise RunMismatchError(
            f"{ckpt_dir / checkpoint_name(wrong[0])}{more} was trained under another "
            f"configuration than the one given (config digest differs); nothing was changed. Use the run's own "
            f"configuration, move {ckpt_dir} aside to train again from scratch, or use a new --run-dir"
        )


def _differences(run: RunDir, cfg: RunConfig, fingerprint: str) -> list[str]:
    problems = []
    if run.info["config_digest"] != cfg.digest():
        old, new = _flatten(run.config.to_dict()), _flatten(cfg.to_dict())
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        problems.append(f"config changed: {shown}" + (" ..." if len(changed) > 5 else ""))
    if run.info["dataset"]["fingerprint"] != fingerprint:
        problems.append("dataset index changed (fingerprint differs)")
    return problems


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _log_dataset(path: Path, dataset: Any, unreadable: list[tuple[int, str, str]]) -> None:
    """``RUN/logs/dataset.log``: what indexing left out (quarantined images, dropped boxes)."""
    lines = [f"quarantined at indexing: image {i} ({file}): {reason}" for i, file, reason in unreadable]
    dropped = dataset.dropped_boxes()
    if dropped:
        lines.append(f"dropped {dropped} ground-truth boxes with zero or negative width or height")
    if lines:
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        (path / "logs").mkdir(exist_ok=True)
        with open(path / "logs" / "dataset.log", "a", encoding="utf-8") as f:
            f.writelines(f"{stamp} {line}\n" for line in lines)


def _read_quarantine(path: Path) -> pa.Table:
    f = path / QUARANTINE_FILE
    if not f.exists():
        return QUARANTINE_SCHEMA.empty_table()
    return pq.read_table(f).select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)


def _merge_quarantine(path: Path, new: pa.Table) -> int:
    """Add the rows of ``new`` whose image_id is not quarantined yet to ``path/quarantine.parquet``
    (rewritten whole, atomically); returns the rows added."""
    old = _read_quarantine(path)
    known = set(old.column("image_id").to_pylist())
    seen: set[int] = set()
    keep = []
    for i, image_id in enumerate(new.column("image_id").to_pylist()):
        if image_id not in known and image_id not in seen:
            keep.append(i)
            seen.add(image_id)
    if not keep:
        return 0
    merged = pa.concat_tables([old, new.cast(QUARANTINE_SCHEMA).take(keep)]).sort_by("image_id")
    tmp = path / f".{QUARANTINE_FILE}.{os.getpid()}.tmp"
    pq.write_table(merged, tmp)
    os.replace(tmp, path / QUARANTINE_FILE)
    return len(keep)


def _quarantine_table(rows: list[tuple[int, str, str]]) -> pa.Table:
    return pa.table(
        {"image_id": [int(r[0]) for r in rows], "file": [str(r[1]) for r in rows], "reason": [str(r[2]) for r in rows]},
        schema=QUARANTINE_SCHEMA,
    )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _joindet_version() -> str:
    try:
        from importlib.metadata import version

        return version("joindet")
    except Exception:  # not installed (running from a checkout)
        return "unknown"
