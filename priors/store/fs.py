"""File access of the prior store, behind ``pyarrow.fs`` so a run can later live on object storage.

Paths handed around inside the store are relative to the run directory ("priors/v0010/...").
Local paths are the supported case today; a URL (``s3://...``, ``gs://...``) is resolved with
``pyarrow.fs.FileSystem.from_uri`` and works for everything except the writer lock.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs


@dataclass(frozen=True)
class RunFS:
    """A file system rooted at one run directory."""

    fs: pafs.FileSystem
    root: str
    is_local: bool

    @classmethod
    def open(cls, run_dir: str | Path) -> RunFS:
        text = str(run_dir)
        if "://" in text and not text.startswith("file://"):
            fs, root = pafs.FileSystem.from_uri(text)
            return cls(fs, root.rstrip("/"), False)
        if text.startswith("file://"):
            text = text[len("file://") :]
        return cls(pafs.LocalFileSystem(), os.path.abspath(text), True)

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def local_path(self, rel: str = "") -> Path:
        return Path(self.full(rel))

    # ------------------------------------------------------------------ queries
    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.full(rel)).type != pafs.FileType.NotFound

    def is_dir(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.full(rel)).type == pafs.FileType.Directory

    def size(self, rel: str) -> int:
        return int(self.fs.get_file_info(self.full(rel)).size or 0)

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) directly inside ``rel``; [] when it does not exist."""
        if not self.is_dir(rel):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.full(rel), allow_not_found=True))
        return sorted(Path(i.path).name for i in infos)

    def read_bytes(self, rel: str) -> pa.Buffer:
        """The whole file as one Arrow buffer (no extra copy for Parquet decoding)."""
        with self.fs.open_input_file(self.full(rel)) as f:
            return f.read_buffer()

    # ------------------------------------------------------------------ writes
    def mkdir(self, rel: str) -> None:
        self.fs.create_dir(self.full(rel), recursive=True)

    def write_bytes(self, rel: str, data: bytes | pa.Buffer) -> None:
        """Write a new file (data files get unique names, so no one ever sees a partial one
        under a name a manifest or marker refers to)."""
        if self.is_local:
            # Flushed to disk before the manifest or marker that names it is written, so a crash
            # (power loss included) never leaves a manifest pointing at a truncated file.
            with open(self.local_path(rel), "wb") as f:
                f.write(memoryview(data))
                f.flush()
                os.fsync(f.fileno())
            return
        with self.fs.open_output_stream(self.full(rel)) as f:
            f.write(data)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` atomically: temp file + rename locally, a single put on object stores."""
        if not self.is_local:
            self.write_bytes(rel, data)
            return
        tmp = f"{rel}.tmp-{uuid.uuid4().hex[:8]}"
        path = self.local_path(tmp)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path, self.local_path(rel))
        _fsync_dir(os.path.dirname(self.local_path(rel)))

    def move(self, src: str, dst: str) -> None:
        self.fs.move(self.full(src), self.full(dst))

    def delete_file(self, rel: str) -> None:
        self.fs.delete_file(self.full(rel))

    def delete_dir(self, rel: str) -> None:
        self.fs.delete_dir(self.full(rel))


def sha256_hex(data: bytes | pa.Buffer | memoryview) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


def unique_token() -> str:
    return uuid.uuid4().hex[:12]


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (POSIX: the directory entry itself is fsynced)."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)
