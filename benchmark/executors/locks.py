"""One writer per run folder: an exclusive ``fcntl`` lock on ``<run folder>/.lock``.

The lock is a POSIX record lock (``fcntl.lockf``) on the file, not the file's existence, so
the **stale-lock rule** needs no guessing: the operating system releases the lock when its
holder exits or is killed (SIGKILL included), and on NFS the server releases it when the
holder's client stops renewing its lease (NFSv4: the lease time, 90 s by default; NFSv3: the
``lockd``/``statd`` recovery when the node reboots). A ``.lock`` file left behind by a dead
worker is therefore free to take; its text (``host``, ``pid``, ``started``, written by the
holder and cleared on release) only names the owner in messages and progress.

NFS caveats: locks need working lock support on the mount (NFSv4, or NFSv3 with ``lockd``);
mounts with ``nolock`` or ``local_lock=all`` make the lock node-local and two nodes could then
train the same run. POSIX locks belong to a process: a second lock taken by the SAME process
does not conflict (units run one per process, so this never happens in the executors).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another live worker holds the run folder's lock."""


def read_owner(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The owner recorded in ``run_dir/.lock`` (``None`` when free or unreadable).

    Advisory: a worker killed without releasing leaves its owner text behind until the next
    holder overwrites it.
    """
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


class RunLock:
    """Exclusive lock of one run folder, held for the life of the ``with`` block.

    ``wait`` seconds: how long to keep retrying while another worker holds it (a retried unit
    whose previous node was lost waits here until NFS frees the dead node's lock).
    """

    def __init__(self, run_dir: str | os.PathLike[str], wait: float = 0.0, poll: float = 1.0):
        self.path = Path(run_dir) / LOCK_NAME
        self.wait, self.poll = float(wait), float(poll)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise OSError(f"{self.path}: cannot lock ({err.strerror})") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    owner = read_owner(self.path.parent) or {}
                    raise RunLocked(
                        f"{self.path.parent}: another worker is writing this run (host "
                        f"{owner.get('host', '?')}, pid {owner.get('pid', '?')}); it is skipped "
                        "here and a rerun picks it up if that worker dies"
                    ) from None
                time.sleep(self.poll)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
