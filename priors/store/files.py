"""File-level I/O of the prior store: Parquet data files written with checksums and read back
checked against their manifest or marker entry (size, rows, page CRC32s, optionally sha256)."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq

from joindet.priors.boxset import BoxSet, BoxSetError
from joindet.priors.store.errors import CorruptFileError
from joindet.priors.store.fs import RunFS, sha256_hex
from joindet.storage_schema import FileEntry

#: Parquet settings: image_id is sorted and repeats per box, so dictionary + RLE shrink it to
#: about a byte a row; lz4 decodes fast and shrinks coordinates that repeat (cell-aligned region
#: boxes); page CRC32s let every read detect altered pages cheaply.
PARQUET_OPTIONS = {
    "compression": "lz4",
    "use_dictionary": ["image_id", "kind"],
    "write_statistics": ["image_id"],
    "row_group_size": 1 << 20,
    "write_page_checksum": True,
}


def write_parquet(rfs: RunFS, rel: str, table: pa.Table) -> FileEntry:
    """Write ``table`` to ``rel`` (a new, unique name) with page checksums; its manifest entry."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    buf = sink.getvalue()
    rfs.write_bytes(rel, buf)
    return FileEntry(path=rel.rsplit("/", 1)[-1], rows=table.num_rows, bytes=buf.size, sha256=sha256_hex(buf))


def read_checked(rfs: RunFS, rel: str, entry: FileEntry, full_hash: bool = True) -> pa.Table:
    """Read one data file and check it against ``entry``.

    Always: byte size, Parquet page CRC32s (every data and dictionary page; written by
    ``write_parquet``) and row count. With ``full_hash`` also the sha256 of the whole file
    (computed in a second thread while Parquet decodes; hashlib releases the GIL). A size or
    hash mismatch wins over a decoding error, so a damaged file is reported as damaged.
    """
    source = rfs.full(rel)
    if not rfs.exists(rel):
        raise CorruptFileError(f"{source} is missing (listed in the version's manifest); run `joindet priors verify`")
    buf = rfs.read_bytes(rel)
    if buf.size != entry.bytes:
        raise CorruptFileError(
            f"{source} has {buf.size} bytes, its manifest says {entry.bytes}: the file is truncated or altered"
        )
    damaged = CorruptFileError(f"{source} does not match its manifest's sha256: the file is altered")
    hashing = _Hashing(buf) if full_hash else None
    try:
        table = pq.read_table(pa.BufferReader(buf), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        if hashing is not None and hashing.result() != entry.sha256:
            raise damaged from None
        raise CorruptFileError(f"{source} is altered or not a readable Parquet file ({exc})") from None
    if hashing is not None and hashing.result() != entry.sha256:
        raise damaged
    if table.num_rows != entry.rows:
        raise CorruptFileError(f"{source} has {table.num_rows} rows, its manifest says {entry.rows}")
    return table


def to_boxset(table: pa.Table, source: str) -> BoxSet:
    """BoxSet of a checked store file (size, rows, page CRC32s match what the store wrote from a
    validated BoxSet), so the per-row checks are skipped: they cost more than decoding at COCO scale."""
    try:
        return BoxSet.from_arrow(table, validate=False)
    except (BoxSetError, KeyError, pa.ArrowException) as exc:
        raise CorruptFileError(f"{source}: invalid box data ({exc})") from None


class _Hashing:
    """sha256 of a buffer computed in its own thread (a thread per call, not a pool: a pool's
    threads do not survive a fork into a worker process)."""

    def __init__(self, buf: pa.Buffer) -> None:
        self._digest = ""
        self._thread = threading.Thread(target=self._run, args=(buf,), daemon=True)
        self._thread.start()

    def _run(self, buf: pa.Buffer) -> None:
        self._digest = sha256_hex(buf)

    def result(self) -> str:
        self._thread.join()
        return self._digest
