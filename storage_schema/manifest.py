"""The version manifest (``priors/vNNNN/manifest.json``) and the staging-shard marker format.

A version exists if and only if its manifest exists. The manifest names every data file of the
version (relative to the version directory) with its row count, byte size and sha256, so that a
reader and ``verify`` can tell an intact file from a truncated or altered one.

Manifest JSON (``schema_version`` 1)::

    {
      "schema_version": 1,
      "version": 10,                      # = the epoch at which the priors were mined
      "parent": 0,                        # version smoothed against, or null
      "created": "2026-01-01T00:00:00+00:00",
      "checkpoint_digest": "sha256:..." | null,
      "config_digest": "..." | null,
      "num_images": 118287,               # images of the run's index (or with boxes, if no index)
      "num_boxes": 5914350,               # rows of the "smoothed" kind
      "files": {"smoothed": {"path": "smoothed-3f2a....parquet", "rows": 5914350,
                             "bytes": 123, "sha256": "..."}, ...},
      "stats": {"smoothed": {"boxes_per_image_mean": ..., "boxes_per_image_median": ...,
                             "mean_box_area": ..., "mean_score": ...}, ...,
                "churn": {"matched": ..., "added": ..., "removed": ..., "mean_iou": ...} | null,
                ...extra statistics given at commit}
    }
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from joindet.storage_schema.tables import KINDS
from joindet.storage_schema.validate import SchemaError, SchemaVersionError, require

#: Version of the on-disk format (manifest, markers, table schemas). Readers refuse other values.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    """One data file of a version: ``path`` relative to the version directory."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of one committed version (see module docstring)."""

    version: int
    parent: int | None
    created: str
    files: dict[str, FileEntry]
    num_images: int
    num_boxes: int
    checkpoint_digest: str | None = None
    config_digest: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def kinds(self) -> list[str]:
        """Kinds stored in this version, in ``KINDS`` order."""
        return [k for k in KINDS if k in self.files]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = {k: asdict(v) for k, v in self.files.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest.json") -> Manifest:
        """Parse and validate; errors are ``SchemaError`` naming ``source`` and the field."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{source}: not valid JSON ({exc}); the file is corrupt") from None
        return cls.from_dict(obj, source)

    @classmethod
    def from_dict(cls, obj: Any, source: str = "manifest.json") -> Manifest:
        require(isinstance(obj, dict), source, "", "the manifest must be a JSON object")
        check_schema_version(obj, source)
        version = _int(obj, "version", source)
        require(version >= 0, source, "version", "must be >= 0")
        parent = obj.get("parent")
        require(
            parent is None or (isinstance(parent, int) and 0 <= parent < version),
            source,
            "parent",
            f"must be null or an earlier version than {version}, got {parent!r}",
        )
        files_obj = obj.get("files")
        require(isinstance(files_obj, dict) and files_obj, source, "files", "must be a non-empty object")
        files = {}
        for kind, entry in files_obj.items():
            require(kind in KINDS, source, f"files.{kind}", f"unknown kind; expected one of {list(KINDS)}")
            files[kind] = _file_entry(entry, source, f"files.{kind}")
        for name in ("checkpoint_digest", "config_digest"):
            require(obj.get(name) is None or isinstance(obj.get(name), str), source, name, "must be a string or null")
        stats = obj.get("stats", {})
        require(isinstance(stats, dict), source, "stats", "must be an object")
        created = obj.get("created")
        require(isinstance(created, str), source, "created", "must be an ISO time string")
        return cls(
            version=version,
            parent=parent,
            created=created,
            files=files,
            num_images=_int(obj, "num_images", source),
            num_boxes=_int(obj, "num_boxes", source),
            checkpoint_digest=obj.get("checkpoint_digest"),
            config_digest=obj.get("config_digest"),
            stats=stats,
            schema_version=obj["schema_version"],
        )


@dataclass(frozen=True)
class ShardMarker:
    """``_staging/vNNNN/mine/shard-SSSSS.json``: the marker written after a shard's Parquet file.

    One shard file holds every kind the shard produced (the ``kind`` column tells them apart);
    ``kinds`` maps kind -> row count. ``meta`` is free-form (e.g. the image range mined).
    """

    version: int
    shard_id: int
    file: FileEntry
    kinds: dict[str, int]
    created: str
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> ShardMarker:
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{source}: not valid JSON ({exc}); the file is corrupt") from None
        require(isinstance(obj, dict), source, "", "the marker must be a JSON object")
        check_schema_version(obj, source)
        kinds = obj.get("kinds")
        require(
            isinstance(kinds, dict) and all(k in KINDS for k in kinds),
            source,
            "kinds",
            f"must map kinds in {list(KINDS)} to row counts",
        )
        return cls(
            version=_int(obj, "version", source),
            shard_id=_int(obj, "shard_id", source),
            file=_file_entry(obj.get("file"), source, "file"),
            kinds={k: int(v) for k, v in kinds.items()},
            created=str(obj.get("created", "")),
            meta=obj.get("meta") or {},
            schema_version=obj["schema_version"],
        )


def check_schema_version(obj: dict[str, Any], source: str) -> None:
    """Refuse a document written by another format version, naming the file and the fix."""
    sv = obj.get("schema_version")
    require(
        isinstance(sv, int) and not isinstance(sv, bool), source, "schema_version", f"must be an integer, got {sv!r}"
    )
    if sv != SCHEMA_VERSION:
        newer = "a newer" if sv > SCHEMA_VERSION else "an older"
        raise SchemaVersionError(
            f"{source}: schema_version {sv} is not supported (this joindet reads {SCHEMA_VERSION}); "
            f"it was written by {newer} joindet, use a matching joindet version to read it"
        )


def _int(obj: dict[str, Any], name: str, source: str) -> int:
    value = obj.get(name)
    require(isinstance(value, int) and not isinstance(value, bool), source, name, f"must be an integer, got {value!r}")
    return value


def _file_entry(entry: Any, source: str, where: str) -> FileEntry:
    require(isinstance(entry, dict), source, where, "must be an object with path, rows, bytes, sha256")
    path = entry.get("path")
    require(
        isinstance(path, str) and path and "/" not in path and ".." not in path,
        source,
        f"{where}.path",
        f"must be a plain file name, got {path!r}",
    )
    sha = entry.get("sha256")
    require(isinstance(sha, str) and len(sha) == 64, source, f"{where}.sha256", "must be a 64-character hex digest")
    rows, size = _int(entry, "rows", source), _int(entry, "bytes", source)
    require(rows >= 0 and size >= 0, source, where, "rows and bytes must be >= 0")
    return FileEntry(path=path, rows=rows, bytes=size, sha256=sha)
