"""The run plan: what a run's schedule holds, what of it is done, and what runs next.

The one owner of these rules (the flow, ``joindet runs status``, ``joindet stage run`` and the train
stage all ask here):

- **Blocks.** Epochs ``[0, schedule.epochs)`` are cut into blocks of ``schedule.update_every``
  epochs; after every block but the last, priors version ``n`` = the block's end epoch is mined
  with the checkpoint of epoch ``n - 1`` and smoothed against the previous version. v0 (R_0)
  comes before the first block.
- **Epoch -> version.** Epoch ``e`` trains on the latest committed version ``<=`` the first epoch
  of its block.
- **Shards.** A shard is a contiguous run of whole batches of ``mine.batch_size`` images
  (:func:`shard_ranges`, the one cut): mining version ``n >= 1`` cuts the image index,
  init (v0) the images it will read (the index less the quarantine), each into ``mine.shards``
  shards. Each shard then computes exactly the batches one process would, so a version is
  bit-identical whatever the number of shards (and hence whatever the runner).
- **Done.** A version is done when its manifest is committed; a shard of a version when it is
  staged (its marker, no data read) for the current shard plan under the current
  ``mine.batch_size`` and, when mined by the model, by the checkpoint of epoch ``n - 1`` as it
  is now (an init shard: also under the same images and config digest);
  an epoch when it is at most the newest epoch whose checkpoint file exists and matches its marker
  (size and sha256; older checkpoints may be deleted by ``train.keep_checkpoints``). A version
  whose manifest exists but does not parse is *damaged*: reported, never counted as done.
- **Failures.** Images a shard could not read are recorded in its marker and merged into the
  run's quarantine by :func:`quarantine_failures` (one place, under the writer lock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from joindet.pipeline.checkpoints import checkpoint_name, checkpoint_problem, file_digest, list_epochs, verified_epochs
from joindet.pipeline.config import ScheduleConfig
from joindet.pipeline.run_dir import RunDir


@dataclass(frozen=True)
class Block:
    """Epochs ``[start, end)`` trained on one prior version; ``version``: mined after it (None: last block)."""

    start: int
    end: int
    version: int | None


def blocks(schedule: ScheduleConfig) -> list[Block]:
    """The schedule's training blocks, in order; every block but the last is followed by a version."""
    starts = range(0, schedule.epochs, schedule.update_every)
    ends = [min(s + schedule.update_every, schedule.epochs) for s in starts]
    return [Block(s, e, None if k == len(ends) - 1 else e) for k, (s, e) in enumerate(zip(starts, ends))]


def versions(schedule: ScheduleConfig) -> list[int]:
    """Versions the schedule commits: 0, then the end epoch of every block but the last."""
    return [0] + [b.version for b in blocks(schedule) if b.version is not None]


def block_start(epoch: int, update_every: int) -> int:
    """First epoch of ``epoch``'s block."""
    return (epoch // update_every) * update_every


def prior_version_for_epoch(committed: Iterable[int], epoch: int, update_every: int) -> int:
    """The latest committed version <= the first epoch of ``epoch``'s block.

    Raises ValueError when no such version exists (init_priors has not committed v0).
    """
    start = block_start(epoch, update_every)
    usable = [v for v in committed if v <= start]
    if not usable:
        raise ValueError(
            f"no committed prior version <= {start} to train epoch {epoch} on; run init_priors first "
            "(`joindet stage run init RUN`)"
        )
    return max(usable)


def shard_ranges(image_ids: np.ndarray, num_shards: int, batch_size: int) -> list[np.ndarray]:
    """``num_shards`` contiguous ranges of ``image_ids`` (int64, in the given order: the index for
    mining, the images init reads for v0), each a run of whole batches of ``batch_size`` (the last
    batch may be short; shards past the last batch are empty; batches spread evenly). Batch ``k``
    is ``image_ids[k * batch_size:(k + 1) * batch_size]`` whatever the shard count, so the shards
    together compute exactly the batches of one shard (``ImageBatches(..., aligned=True)``)."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} must be at least 1 (mine.shards in the config)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1 (mine.batch_size in the config)")
    ids = np.asarray(image_ids, np.int64)
    batches = np.array_split(np.arange(-(-len(ids) // batch_size)), num_shards)
    return [ids[g[0] * batch_size : (g[-1] + 1) * batch_size] if len(g) else ids[:0] for g in batches]


@dataclass
class ScheduleEntry:
    """One step of the run's schedule and how far it got.

    ``state`` is ``done``, ``staged`` (partly done: some shards mined, some epochs trained),
    ``pending`` or ``damaged`` (a version whose manifest does not parse); ``detail`` says how much
    (``"1 of 2 shards"``, ``"2 of 4 epochs"``) or what is wrong.
    """

    name: str
    state: str
    detail: str = ""


@dataclass
class RunStatus:
    """Where a run stands: its schedule entries, latest version, last checkpoint, next command."""

    path: str
    entries: list[ScheduleEntry] = field(default_factory=list)
    latest_version: int | None = None
    last_checkpoint: int | None = None
    quarantined: int = 0
    next_command: str | None = None
    damaged: dict[int, str] = field(default_factory=dict)  # version -> the error reading its manifest

    @property
    def complete(self) -> bool:
        return all(e.state == "done" for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


class RunPlan:
    """The schedule of one run held against its store and checkpoints.

    Cheap to build; every question reads the run directory afresh (markers, manifests and
    checkpoint names only, never prior data files).
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.schedule = run.config.schedule
        self.blocks = blocks(self.schedule)
        self.versions = versions(self.schedule)

    # ------------------------------------------------------------------ done
    def committed(self) -> set[int]:
        return set(self.run.store.versions())

    def damaged(self) -> dict[int, str]:
        """Versions whose manifest exists but cannot be read: version -> the error (names the file)."""
        out = {}
        for v in self.run.store.versions():
            try:
                self.run.store.manifest(v)
            except ValueError as exc:  # CorruptFileError / SchemaVersionError
                out[v] = str(exc)
        return out

    def trained_epochs(self) -> list[int]:
        """Epochs whose checkpoint exists and matches its marker (hashes each file once per process)."""
        return verified_epochs(self.run.path / "checkpoints")

    def last_checkpoint(self) -> int | None:
        """The newest epoch whose checkpoint exists and verifies, or None (hashes from the newest
        down to the first that verifies: usually one file)."""
        ckpt_dir = self.run.path / "checkpoints"
        return next(
            (e for e in reversed(list_epochs(ckpt_dir)) if checkpoint_problem(ckpt_dir / checkpoint_name(e)) is None),
            None,
        )

    def shards(self, version: int | None = None) -> list[np.ndarray]:
        """The current shard plan of a mined version (``version`` None or >= 1): the image index in
        ``mine.shards`` runs of whole batches of ``mine.batch_size`` (:func:`shard_ranges`; the
        whole index, so the plan, and the attention maps' row groups cut by it, stay put when the
        quarantine grows); of init (``version`` 0): :meth:`init_shards`."""
        if version == 0:
            return self.init_shards()
        cfg = self.run.config.mine
        return shard_ranges(self.run.image_ids(), cfg.shards, cfg.batch_size)

    def init_shards(self) -> list[np.ndarray]:
        """Init's shard plan: the image index less the quarantine, in ``mine.shards`` runs of whole
        batches of ``mine.batch_size`` (:func:`shard_ranges`)."""
        ids = self.run.image_ids()
        skip = self.run.quarantined_ids()
        todo = np.asarray([i for i in ids.tolist() if i not in skip], np.int64) if skip else ids
        cfg = self.run.config.mine
        return shard_ranges(todo, cfg.shards, cfg.batch_size)

    def _expected_meta(self, version: int) -> dict[str, Any]:
        """Marker fields a staged shard of ``version`` must carry to count as done besides its
        range: the batch size it was computed under (another one rounds the network's floats
        differently, even for the same range) and, for init, the config digest."""
        expected: dict[str, Any] = {"batch_size": self.run.config.mine.batch_size}
        if version == 0:
            expected["config_digest"] = self.run.config.digest()
        return expected

    def done_shards(self, version: int) -> set[int]:
        """Shards of the current plan staged (marker parses, data file of the marker's size), for
        the image range this plan gives them (a shard staged under another ``mine.shards`` is not
        done) and, for shards mined by the model, by the checkpoint of epoch ``version - 1`` as it
        is now (a shard mined by a checkpoint that was since replaced is not done).

        Reads every marker once and stats its file; never reads shard data (checked when smooth
        reads it), so planning N shards costs O(N).
        """
        shards = self.shards(version)
        current = self._mining_checkpoint_digest(version)
        expected = self._expected_meta(version)
        return {
            shard_id
            for shard_id, marker in self.run.store.staged_shards(version).items()
            if self._marker_done(marker, shards, current, expected)
        }

    def shard_done(self, version: int, shard_id: int) -> bool:
        """``shard_id in done_shards(version)`` from that shard's own marker alone (what a mining
        task asks before it mines: O(1) in the number of shards)."""
        marker = self.run.store.staged_marker(version, shard_id)
        return marker is not None and self._marker_done(
            marker, self.shards(version), self._mining_checkpoint_digest(version), self._expected_meta(version)
        )

    def _mining_checkpoint_digest(self, version: int) -> str | None:
        """Digest of the checkpoint of epoch ``version - 1`` as it is now (None: none; cached per file)."""
        ckpt = self.run.checkpoint_path(version - 1) if version > 0 else None
        return file_digest(ckpt) if ckpt is not None and ckpt.exists() else None

    @staticmethod
    def _marker_done(
        marker: Any, shards: list[np.ndarray], current: str | None, expected: dict[str, Any] | None = None
    ) -> bool:
        if marker.shard_id >= len(shards):
            return False
        ids = shards[marker.shard_id]
        first, last = (int(ids[0]), int(ids[-1])) if len(ids) else (None, None)
        if (marker.meta.get("first_image_id"), marker.meta.get("last_image_id")) != (first, last):
            return False
        if marker.meta.get("num_images", len(ids)) != len(ids):
            return False
        if any(marker.meta.get(key) != value for key, value in (expected or {}).items()):
            return False
        mined_by = marker.meta.get("checkpoint_digest")
        return mined_by is None or current is None or mined_by == current

    def missing_shards(self, version: int, wanted: Iterable[int] | None = None) -> list[int]:
        """Shards of ``version`` (all, or ``wanted``) not yet done, in order."""
        num = self.run.config.mine.shards
        wanted = list(range(num)) if wanted is None else [int(s) for s in wanted]
        for s in wanted:
            if not 0 <= s < num:
                raise ValueError(f"shard {s} does not exist: version {version} has {num} shards (mine.shards)")
        done = self.done_shards(version)
        return [s for s in wanted if s not in done]

    def block_trained(self, block: Block) -> bool:
        last = self.last_checkpoint()
        return last is not None and last >= block.end - 1

    # ------------------------------------------------------------------ next
    def next_version(self) -> int | None:
        """The first version of the schedule after v0 that is not committed (None: all are)."""
        committed = self.committed()
        return next((v for v in self.versions[1:] if v not in committed), None)

    def next_train_end(self) -> int:
        """End epoch (exclusive) of the block the next training epoch belongs to."""
        last = self.last_checkpoint()
        first_todo = 0 if last is None else last + 1
        return next((b.end for b in self.blocks if first_todo < b.end), self.schedule.epochs)

    # ------------------------------------------------------------------ status
    def status(self) -> RunStatus:
        """Per schedule entry: done / staged / pending / damaged, plus the command that continues
        (or repairs) the run."""
        damaged = self.damaged()
        committed = self.committed() - set(damaged)
        # Training is sequential: every epoch up to the newest checkpoint that verifies is trained
        # (older files may be gone by train.keep_checkpoints); a damaged or missing newest one is not.
        last = self.last_checkpoint()
        num_shards = self.run.config.mine.shards
        entries = [_version_entry("init v0000", 0, committed, damaged)]
        done = len(self.done_shards(0)) if entries[0].state == "pending" else 0
        if done:  # init ran shards and stopped before its commit
            entries[0] = ScheduleEntry("init v0000", "staged", f"{min(done, num_shards)} of {num_shards} shards")
        for b in self.blocks:
            trained = 0 if last is None else max(0, min(last + 1, b.end) - b.start)
            state = "done" if trained == b.end - b.start else ("staged" if trained else "pending")
            entries.append(
                ScheduleEntry(f"train epochs {b.start}-{b.end - 1}", state, f"{trained} of {b.end - b.start} epochs")
            )
            if b.version is None:
                break
            name = f"v{b.version:04d}"
            if b.version in committed:
                entries += [ScheduleEntry(f"mine {name}", "done"), ScheduleEntry(f"smooth {name}", "done")]
                continue
            done = len(self.done_shards(b.version))
            mstate = "done" if done >= num_shards else ("staged" if done else "pending")
            entries.append(ScheduleEntry(f"mine {name}", mstate, f"{min(done, num_shards)} of {num_shards} shards"))
            entries.append(_version_entry(f"smooth {name}", b.version, committed, damaged))
        status = RunStatus(
            path=str(self.run.path),
            entries=entries,
            latest_version=max(committed) if committed else None,
            last_checkpoint=last,
            quarantined=self.run.quarantine().num_rows,
            damaged=damaged,
        )
        if damaged:
            status.next_command = repair_command(self.run, min(damaged))
        elif not status.complete:
            status.next_command = f"joindet flow resume {self.run.path}"
        return status


def _version_entry(name: str, version: int, committed: set[int], damaged: dict[int, str]) -> ScheduleEntry:
    if version in damaged:
        return ScheduleEntry(name, "damaged", damaged[version])
    return ScheduleEntry(name, "done" if version in committed else "pending")


def repair_command(run: RunDir, version: int) -> str:
    """The command that redoes a damaged version (its files move aside to ``priors/_replaced``)."""
    if version == 0:
        return f"joindet stage run init {run.path} --force"
    return f"joindet stage run mine {run.path} --version {version} --force, then joindet flow resume {run.path}"


def check_resumable(run: RunDir) -> None:
    """Raise ValueError before any stage works when the run cannot be continued as it is: a
    damaged version (the message gives the command that repairs it) or checkpoints trained under
    another configuration than run.json's."""
    damaged = RunPlan(run).damaged()
    if damaged:
        v = min(damaged)
        raise ValueError(f"prior version {v} is damaged ({damaged[v]}); repair it with `{repair_command(run, v)}`")
    run.check_checkpoints_agree()


def quarantine_failures(run: RunDir, failed: Iterable[Iterable[Any]]) -> int:
    """Merge ``(image_id, file, reason)`` rows of failed images into the run's quarantine.

    Takes the run's writer lock (re-entrant: callers that hold it already may call this). Returns
    the number of rows added (an image already quarantined keeps its first reason).
    """
    rows = [tuple(row) for row in failed]
    if not rows:
        return 0
    with run.lock():
        return run.add_quarantine(rows)
