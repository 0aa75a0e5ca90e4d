"""The versioned prior store of one run: ``RUN/priors/``.

Layout (DESIGN.md, "The run directory and the prior store")::

    priors/v0010/manifest.json                      <- the version exists iff this exists
    priors/v0010/<kind>-<token>.parquet             <- one BOXES_SCHEMA file per kind
    priors/_staging/v0020/mine/shard-00003-<token>.parquet + shard-00003.json   (work in progress)
    priors/_replaced/v0010-<UTC time>/              <- versions moved aside by ``--force``
    priors/.writer.lock

Commit protocol: data files are written first under unique names, the manifest (with each file's
rows, bytes and sha256) last and atomically. Readers check size, rows and the Parquet page CRC32s
of what they read (``verify`` and ``read(..., full_hash=True)`` the sha256 too), so a truncated
or altered file is reported by name rather than silently decoded.

Staging: a shard holds every kind it produced in one Parquet file plus a marker JSON written after
it (``write_shard(version, shard_id, {"region": a, "instance": b})``). The per-kind form
``write_shard(version, kind, shard_id, boxset)`` rewrites the shard's file with that kind replaced
and then its marker, so a shard's kinds always change together. A shard is done when its marker
parses and its file exists with the marker's size: bookkeeping reads markers and one stat per
shard, never data, so planning N shards costs O(N). The data are checked (sha256, page CRC32s,
rows) when they are read (``read_staged``), which names a damaged shard.

One writer per run (``lock()``) for commit, move_aside and gc; shards may be written by many
workers concurrently (each shard is its own files).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from joindet.priors.boxset import BoxSet
from joindet.priors.store.checks import check_kinds, check_known_images, check_range
from joindet.priors.store.errors import (
    CorruptFileError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    VersionExistsError,
    VersionNotFoundError,
)
from joindet.priors.store.files import read_checked, to_boxset, write_parquet
from joindet.priors.store.fs import RunFS, unique_token
from joindet.priors.store.images import IMAGES_FILE, read_images_table
from joindet.priors.store.lock import WriterLock
from joindet.priors.store.stats import version_stats
from joindet.storage_schema import KINDS, Manifest, SchemaError, ShardMarker, validate_boxes_table
from joindet.storage_schema import SchemaVersionError as _SchemaVersion

PRIORS = "priors"
STAGING = f"{PRIORS}/_staging"
REPLACED = f"{PRIORS}/_replaced"
LOCK_FILE = f"{PRIORS}/.writer.lock"
MANIFEST = "manifest.json"
_VERSION_DIR = re.compile(r"^v(\d{4,})$")
_MARKER = re.compile(r"^shard-(\d{5,})\.json$")
_REPLACED_DIR = re.compile(r"^v(\d{4,})-\d{8}T\d+$")

#: PriorStore.shared: one store object per (process, run directory).
_SHARED: dict[tuple[int, str], PriorStore] = {}
_SHARED_MUTEX = threading.Lock()


def version_dir(version: int) -> str:
    return f"{PRIORS}/v{version:04d}"


class PriorStore:
    """Versions of priors of one run directory (a local path; URLs later, see ``store_fs``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = run_dir
        self.rfs = RunFS.open(run_dir)
        self._lock: WriterLock | None = None
        self._lock_depth = 0
        self._lock_mutex = threading.Lock()

    @classmethod
    def shared(cls, run_dir: str | Path) -> PriorStore:
        """The one store object of ``run_dir`` in this process.

        The writer lock is re-entrant per store object, so everything in one process that works
        on the same run (a flow, its stages, mining threads) must share one: a second object
        would be refused the lock its own process holds.
        """
        key = (os.getpid(), str(Path(run_dir).resolve()))
        with _SHARED_MUTEX:
            store = _SHARED.get(key)
            if store is None:
                store = _SHARED[key] = cls(run_dir)
            return store

    def __repr__(self) -> str:
        return f"PriorStore({str(self.run_dir)!r})"

    # ------------------------------------------------------------------ versions
    def exists(self) -> bool:
        return self.rfs.is_dir()

    def require_run(self) -> None:
        """Raise ``RunNotFoundError`` unless the run directory exists."""
        if not self.exists():
            raise RunNotFoundError(f"run directory {self.run_dir} does not exist; check the path")

    def versions(self) -> list[int]:
        """Committed versions (those with a manifest), ascending."""
        found = []
        for name in self.rfs.listdir(PRIORS):
            m = _VERSION_DIR.match(name)
            if m and self.rfs.exists(f"{PRIORS}/{name}/{MANIFEST}"):
                found.append(int(m.group(1)))
        return sorted(found)

    def latest(self) -> int | None:
        v = self.versions()
        return v[-1] if v else None

    def has_version(self, version: int) -> bool:
        return self.rfs.exists(f"{version_dir(version)}/{MANIFEST}")

    def manifest(self, version: int) -> Manifest:
        """The parsed manifest; ``VersionNotFoundError`` / ``CorruptFileError`` / ``SchemaVersionError``."""
        rel = f"{version_dir(version)}/{MANIFEST}"
        if not self.has_version(version):
            self.require_run()
            have = ", ".join(str(v) for v in self.versions()) or "none"
            raise VersionNotFoundError(
                f"run {self.run_dir} has no committed prior version {version} (committed: {have})"
            )
        source = str(self.rfs.full(rel))
        try:
            m = Manifest.from_json(self.rfs.read_bytes(rel).to_pybytes(), source)
        except _SchemaVersion as exc:
            raise SchemaVersionError(str(exc)) from None
        except SchemaError as exc:
            raise CorruptFileError(f"corrupt manifest: {exc}") from None
        if m.version != version:
            raise CorruptFileError(f"{source}: field 'version' is {m.version}, expected {version}")
        return m

    def read(self, version: int, kind: str = "smoothed", *, full_hash: bool = False) -> BoxSet:
        """All boxes of one kind of a committed version.

        The file is checked against the manifest (size, rows) and its Parquet page CRC32s, which
        catch truncation and altered data; ``full_hash=True`` also checks the sha256 (as ``verify``
        does; it costs about as much as decoding at COCO scale).
        """
        m = self.manifest(version)
        if kind not in m.files:
            raise VersionNotFoundError(
                f"prior version {version} of run {self.run_dir} has no {kind!r} boxes (kinds: {m.kinds})"
            )
        table = read_checked(self.rfs, f"{version_dir(version)}/{m.files[kind].path}", m.files[kind], full_hash)
        return to_boxset(table, self.rfs.full(f"{version_dir(version)}/{m.files[kind].path}"))

    def file_path(self, version: int, kind: str = "smoothed") -> str:
        """Full path (or URL path) of one kind's Parquet file of a committed version."""
        m = self.manifest(version)
        if kind not in m.files:
            raise VersionNotFoundError(f"prior version {version} has no {kind!r} boxes (kinds: {m.kinds})")
        return self.rfs.full(f"{version_dir(version)}/{m.files[kind].path}")

    # ------------------------------------------------------------------ staging
    def _staging_dir(self, version: int) -> str:
        return f"{STAGING}/v{version:04d}/mine"

    def write_shard(
        self,
        version: int,
        kind_or_shard: str | int,
        shard_or_kinds: int | Mapping[str, BoxSet],
        boxset: BoxSet | None = None,
        *,
        meta: dict[str, Any] | None = None,
    ) -> ShardMarker:
        """Stage one shard of an uncommitted version.

        Two forms: ``write_shard(version, shard_id, {"region": a, "instance": b})`` (preferred: all
        kinds of a shard at once) and ``write_shard(version, kind, shard_id, boxset)`` (replaces
        that kind in the shard, keeping its other kinds). ``meta`` is kept in the marker.
        """
        if isinstance(kind_or_shard, str):
            if boxset is None or not isinstance(shard_or_kinds, (int, np.integer)):
                raise TypeError("write_shard(version, kind, shard_id, boxset) needs a shard id and a BoxSet")
            shard_id, kinds = int(shard_or_kinds), {kind_or_shard: boxset}
            previous = self._valid_marker(version, shard_id)
            if previous is not None:
                old = self._read_shard(version, previous)
                kept = {k: old.of_kind(k) for k in previous.kinds if k != kind_or_shard}
                kinds = {**kept, **kinds}
                meta = {**previous.meta, **(meta or {})}
        else:
            if not isinstance(shard_or_kinds, Mapping):
                raise TypeError("write_shard(version, shard_id, kinds) needs a dict kind -> BoxSet")
            shard_id, kinds = int(kind_or_shard), dict(shard_or_kinds)
        if shard_id < 0:
            raise StoreError(f"shard id must be >= 0, got {shard_id}")
        if self.has_version(version):
            raise VersionExistsError(
                f"prior version {version} of run {self.run_dir} is already committed; versions are "
                "immutable (re-run with --force to replace it)"
            )
        check_kinds(kinds)
        table = BoxSet.concat([bs.with_kind(k) for k, bs in kinds.items()]).to_arrow()
        stage = self._staging_dir(version)
        self.rfs.mkdir(stage)
        name = f"shard-{shard_id:05d}-{unique_token()}.parquet"
        entry = write_parquet(self.rfs, f"{stage}/{name}", table)
        marker = ShardMarker(
            version, shard_id, entry, {k: len(bs) for k, bs in kinds.items()}, _now(), dict(meta or {})
        )
        old_marker = self._valid_marker(version, shard_id, check_file=False)
        self.rfs.write_atomic(f"{stage}/shard-{shard_id:05d}.json", marker.to_json().encode())
        if old_marker is not None and old_marker.file.path != name:
            with contextlib.suppress(OSError):
                self.rfs.delete_file(f"{stage}/{old_marker.file.path}")
        return marker

    def staged_shards(self, version: int) -> dict[int, ShardMarker]:
        """Markers of the staged shards of ``version`` (marker parses, its file exists with the
        marker's size; one marker read and one stat per shard, no data read)."""
        out = {}
        for name in self.rfs.listdir(self._staging_dir(version)):
            m = _MARKER.match(name)
            if m:
                marker = self._valid_marker(version, int(m.group(1)))
                if marker is not None:
                    out[marker.shard_id] = marker
        return out

    def done_shards(self, version: int) -> set[int]:
        """Ids of the valid staged shards (see ``staged_shards``); a resume redoes the others."""
        return set(self.staged_shards(version))

    def staged_marker(self, version: int, shard_id: int) -> ShardMarker | None:
        """The marker of one staged shard (see ``staged_shards``), None when it is not staged."""
        return self._valid_marker(version, shard_id)

    def shard_done(self, version: int, shard_id: int) -> bool:
        """Whether one shard is staged (its own marker and one stat; see ``staged_shards``)."""
        return self._valid_marker(version, shard_id) is not None

    def read_staged(self, version: int, kind: str) -> BoxSet:
        """The boxes of ``kind`` over every staged shard of ``version``, sorted by image_id.

        Each shard file is checked against its marker (size, sha256, page CRC32s, rows):
        ``CorruptFileError`` names a damaged one.
        """
        return self.read_staged_kinds(version, (kind,))[kind]

    def read_staged_kinds(self, version: int, kinds: tuple[str, ...] = ("region", "instance")) -> dict[str, BoxSet]:
        """``read_staged`` of several kinds, reading (and checking) each shard file once."""
        check_kinds({k: BoxSet.empty() for k in kinds})
        every = self.read_staged_all(version)
        return {k: every.of_kind(k) for k in kinds}

    def read_staged_all(self, version: int, shard_ids: Iterable[int] | None = None) -> BoxSet:
        """Every staged box of ``version`` (of the shards ``shard_ids`` only, when given), all kinds,
        sorted by image_id (stable: shard order, then each shard file's row order); each shard file
        read and checked once."""
        markers = self.staged_shards(version)
        wanted = sorted(markers) if shard_ids is None else sorted({int(s) for s in shard_ids})
        missing = [s for s in wanted if s not in markers]
        if missing:
            raise StoreError(f"version {version} has no staged shard {missing[0]} (staged: {sorted(markers)})")
        return BoxSet.concat(self._read_shard(version, markers[s]) for s in wanted)

    def discard_staging(self, version: int) -> bool:
        """Delete the staged shards of ``version`` (a forced redo that starts from none, when the
        committed version it replaces is kept aside); False when nothing was staged."""
        src = f"{STAGING}/v{version:04d}"
        with self.lock():
            if not self.rfs.is_dir(src):
                return False
            self.rfs.delete_dir(src)
            return True

    def _valid_marker(self, version: int, shard_id: int, check_file: bool = True) -> ShardMarker | None:
        """The parsed marker of a shard, or None when missing, unparsable, of another shard or (with
        ``check_file``) when its data file is missing or of another size (one stat, no read)."""
        stage = self._staging_dir(version)
        rel = f"{stage}/shard-{shard_id:05d}.json"
        try:
            marker = ShardMarker.from_json(self.rfs.read_bytes(rel).to_pybytes(), self.rfs.full(rel))
        except (OSError, SchemaError):
            return None
        if marker.shard_id != shard_id or marker.version != version:
            return None
        # One stat: a missing file has size 0, a Parquet file never does.
        if check_file and self.rfs.size(f"{stage}/{marker.file.path}") != marker.file.bytes:
            return None
        return marker

    def _read_shard(self, version: int, marker: ShardMarker) -> BoxSet:
        rel = f"{self._staging_dir(version)}/{marker.file.path}"
        return to_boxset(read_checked(self.rfs, rel, marker.file), self.rfs.full(rel))

    # ------------------------------------------------------------------ commit
    @contextlib.contextmanager
    def lock(self) -> Iterator[PriorStore]:
        """Hold the run's writer lock (re-entrant within this store object, from any thread)."""
        if not self.rfs.is_local:
            raise StoreError(f"{self.run_dir}: the writer lock needs a local run directory")
        with self._lock_mutex:
            if self._lock_depth == 0:
                lock = WriterLock(self.rfs.local_path(LOCK_FILE))
                lock.acquire()
                self._lock = lock
            self._lock_depth += 1
        try:
            yield self
        finally:
            with self._lock_mutex:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock is not None:
                    self._lock.release()
                    self._lock = None

    def commit(
        self,
        version: int,
        kinds: Mapping[str, BoxSet],
        parent: int | None = None,
        checkpoint_digest: str | None = None,
        config_digest: str | None = None,
        extra_stats: dict[str, Any] | None = None,
        parent_smoothed: BoxSet | None = None,
    ) -> Manifest:
        """Commit ``kinds`` (must include "smoothed") as ``version``: data files, then the manifest.

        Coordinates must lie in [0, 1] (within 1e-4, which is clipped); image_ids must be in the
        run's images.parquet when it exists. Statistics include churn of "smoothed" against the
        parent's "smoothed" (``parent_smoothed``: those boxes when the caller has already read them,
        so they are not read again). Raises ``VersionExistsError`` if ``version`` is committed.
        """
        if version < 0:
            raise StoreError(f"version must be >= 0, got {version}")
        check_kinds(kinds)
        if "smoothed" not in kinds:
            raise StoreError(f"commit of version {version} needs a 'smoothed' kind (the boxes training reads)")
        with self.lock():
            if self.has_version(version):
                raise VersionExistsError(
                    f"prior version {version} of run {self.run_dir} is already committed; versions "
                    "are immutable (re-run with --force to replace it)"
                )
            if parent is not None:
                if parent >= version:
                    raise StoreError(f"parent version {parent} must be earlier than version {version}")
                parent_boxes = self.read(parent, "smoothed") if parent_smoothed is None else parent_smoothed
            images = read_images_table(self.run_dir) if self.rfs.exists(IMAGES_FILE) else None
            checked = {k: check_range(kinds[k], k) for k in KINDS if k in kinds}
            if images is not None:
                check_known_images(checked, images.column("image_id").to_numpy(), self.run_dir)
            stats = version_stats(checked, images, parent_boxes if parent is not None else None)
            stats.update(extra_stats or {})
            vdir = version_dir(version)
            self.rfs.mkdir(vdir)
            files = {}
            for k, bs in checked.items():
                table = bs.with_kind(k).to_arrow()
                files[k] = write_parquet(self.rfs, f"{vdir}/{k}-{unique_token()}.parquet", table)
            num_images = (
                images.num_rows
                if images is not None
                else int(len(np.unique(np.concatenate([b.unique_image_ids() for b in checked.values()]))))
            )
            manifest = Manifest(
                version=version,
                parent=parent,
                created=_now(),
                files=files,
                num_images=num_images,
                num_boxes=len(checked["smoothed"]),
                checkpoint_digest=checkpoint_digest,
                config_digest=config_digest,
                stats=stats,
            )
            self.rfs.write_atomic(f"{vdir}/{MANIFEST}", manifest.to_json().encode())
            return manifest

    def move_aside(self, version: int) -> Path:
        """Move a committed version to ``priors/_replaced/vNNNN-<UTC time>`` (never deleted).

        A version whose manifest exists but is damaged moves too (that is how it is repaired).
        """
        with self.lock():
            if not self.has_version(version):
                self.manifest(version)  # raises VersionNotFoundError with the committed list
            dst = self._replaced_name(f"v{version:04d}")
            self.rfs.mkdir(REPLACED)
            self.rfs.move(version_dir(version), dst)
            return self.rfs.local_path(dst)

    def move_staging_aside(self, version: int) -> Path | None:
        """Move the staged shards of ``version`` to ``priors/_replaced/staging-vNNNN-<UTC time>``
        (a forced re-mine starts from none); None when nothing is staged."""
        src = f"{STAGING}/v{version:04d}"
        with self.lock():
            if not self.rfs.is_dir(src):
                return None
            dst = self._replaced_name(f"staging-v{version:04d}")
            self.rfs.mkdir(REPLACED)
            self.rfs.move(src, dst)
            return self.rfs.local_path(dst)

    def replaced(self) -> list[tuple[int, str]]:
        """Versions moved aside, ``(version, name under priors/_replaced)``, oldest first per version."""
        out = []
        for name in sorted(self.rfs.listdir(REPLACED)):
            m = _REPLACED_DIR.match(name)
            if m:
                out.append((int(m.group(1)), name))
        return out

    def restore(self, version: int, name: str | None = None) -> str:
        """Put a moved-aside copy of ``version`` back (``name``: which one; default the newest).

        The copy must verify (manifest parses, every file matches it) and ``version`` must not be
        committed (move the current one aside first, e.g. with ``--force``). Returns the name
        restored. Raises ``StoreError`` naming what is wrong.
        """
        with self.lock():
            copies = [n for v, n in self.replaced() if v == version]
            if name is not None:
                if name not in copies:
                    raise VersionNotFoundError(
                        f"{self.rfs.full(REPLACED)} holds no copy {name!r} of version {version} "
                        f"(copies: {', '.join(copies) or 'none'})"
                    )
                copies = [name]
            if not copies:
                raise VersionNotFoundError(
                    f"no moved-aside copy of version {version} in {self.rfs.full(REPLACED)}; nothing to restore"
                )
            chosen = copies[-1]
            problems = self._check_version_dir(f"{REPLACED}/{chosen}", version)
            if problems:
                raise CorruptFileError(f"the moved-aside copy {chosen} cannot be restored: {problems[0]}")
            if self.rfs.exists(version_dir(version)):
                if self.has_version(version):
                    raise VersionExistsError(
                        f"version {version} is committed in {self.rfs.full(PRIORS)}; move it aside first "
                        f"(`--force` on the stage that made it) or restore into a copy of the run"
                    )
                self.rfs.move(version_dir(version), self._replaced_name(f"uncommitted-v{version:04d}"))
            self.rfs.move(f"{REPLACED}/{chosen}", version_dir(version))
            return chosen

    def _replaced_name(self, stem: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        return f"{REPLACED}/{stem}-{stamp}"

    def _check_version_dir(self, vdir: str, version: int) -> list[str]:
        """Problems of the version directory ``vdir`` (manifest parses and names ``version``; every
        file matches its size, rows, sha256 and the boxes schema)."""
        rel = f"{vdir}/{MANIFEST}"
        try:
            m = Manifest.from_json(self.rfs.read_bytes(rel).to_pybytes(), self.rfs.full(rel))
        except (OSError, SchemaError, _SchemaVersion) as exc:
            return [f"{self.rfs.full(rel)}: {exc}" if isinstance(exc, OSError) else str(exc)]
        if m.version != version:
            return [f"{self.rfs.full(rel)}: field 'version' is {m.version}, expected {version}"]
        problems = []
        for kind, entry in m.files.items():
            frel = f"{vdir}/{entry.path}"
            try:
                table = read_checked(self.rfs, frel, entry, True)
                validate_boxes_table(table, self.rfs.full(frel), kind)
            except (StoreError, SchemaError) as exc:
                problems.append(str(exc))
        return problems

    # ------------------------------------------------------------------ maintenance
    def verify(self) -> list[str]:
        """Problems found (empty when every file of every version matches its manifest)."""
        self.require_run()
        problems: list[str] = []
        if self.rfs.exists(IMAGES_FILE):
            try:
                read_images_table(self.run_dir)
            except (StoreError, SchemaError, OSError, pa.ArrowException) as exc:
                problems.append(str(exc))
        for v in self.versions():
            try:
                m = self.manifest(v)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            for kind, entry in m.files.items():
                rel = f"{version_dir(v)}/{entry.path}"
                try:
                    table = read_checked(self.rfs, rel, entry)
                    validate_boxes_table(table, self.rfs.full(rel), kind)
                except (StoreError, SchemaError) as exc:
                    problems.append(str(exc))
        return problems

    def gc(self, dry_run: bool = False) -> list[str]:
        """Remove staging, uncommitted version directories and files no manifest references.

        Returns the paths (relative to the run directory) removed, or with ``dry_run`` those that
        would be (nothing is touched). ``_replaced`` is kept; a damaged version is left whole.
        """
        self.require_run()
        with self.lock():
            doomed = self._garbage()
            if dry_run:
                return doomed
            for rel in doomed:
                if self.rfs.is_dir(rel):
                    self.rfs.delete_dir(rel)
                else:
                    self.rfs.delete_file(rel)
            if self.rfs.is_dir(STAGING) and not self.rfs.listdir(STAGING):
                self.rfs.delete_dir(STAGING)
        return doomed

    def _garbage(self) -> list[str]:
        out = [f"{STAGING}/{name}" for name in self.rfs.listdir(STAGING)]
        for name in self.rfs.listdir(PRIORS):
            if not _VERSION_DIR.match(name):
                continue
            vdir = f"{PRIORS}/{name}"
            if not self.rfs.exists(f"{vdir}/{MANIFEST}"):
                out.append(vdir)
                continue
            try:
                keep = {MANIFEST, *(e.path for e in self.manifest(int(name[1:])).files.values())}
            except StoreError:
                continue  # damaged: what it references is unknown, so nothing of it is garbage
            out += [f"{vdir}/{f}" for f in self.rfs.listdir(vdir) if f not in keep]
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
