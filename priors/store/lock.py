"""One writer per run: ``RUN/priors/.writer.lock``.

The lock file holds the owner's pid, host and start time (JSON) and is held with ``fcntl.flock``
for as long as the writer works. The flock is the only truth:

- flock taken and the record names this host (or nothing) -> the lock is ours, whatever pid the
  file records: the kernel drops a flock when its process dies, so a recorded owner that no longer
  holds it is gone, even when its pid now belongs to an unrelated live process;
- flock held by another open file (another process, or another writer in this process) -> refused,
  naming the recorded pid and host;
- record naming another host -> refused: where flocks are not shared between machines (some NFS
  mounts) a free flock says nothing about that host's writer. The message says to delete the
  file once that process is gone.

The file is never unlinked on release (unlinking a flock'ed file lets two processes lock two
different inodes); release empties it instead.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from joindet.priors.store.errors import StoreLockedError


class WriterLock:
    """Exclusive writer lock on one file; use as a context manager or ``acquire``/``release``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict | None:
        """The recorded owner ``{"pid", "host", "since"}``, or None when the file is empty/absent."""
        try:
            text = self.path.read_text(encoding="utf-8")
            return json.loads(text) if text.strip() else None
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def acquire(self) -> None:
        if self._fd is not None:
            raise StoreLockedError(f"{self.path}: this writer already holds the lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise self._locked_error() from None
            raise
        # The flock is ours: a recorded owner of this host is stale (it would hold the flock if it
        # were alive); one of another host may hold a flock this host cannot see.
        host = socket.gethostname()
        owner = self.holder()
        if owner is not None and owner.get("host") not in (None, host):
            os.close(fd)
            raise self._locked_error(owner)
        record = json.dumps({"pid": os.getpid(), "host": host, "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _locked_error(self, owner: dict | None = None) -> StoreLockedError:
        owner = owner or self.holder() or {}
        pid, host = owner.get("pid", "?"), owner.get("host", "?")
        return StoreLockedError(
            f"run is locked by another writer (pid {pid} on host {host}); wait for it to finish, "
            f"or delete {self.path} if that process is gone"
        )
