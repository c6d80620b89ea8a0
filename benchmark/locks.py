"""A lock on a training stage's checkpoint folder, so concurrent jobs never build a stage twice.

The first job to reach a stage trains it while holding an exclusive ``flock`` on
``<stage folder>/.lock``; a job of another worker (or Slurm node) that needs the same stage waits
on the lock and then finds the finished checkpoint, which ``benchmark.training.fit`` resumes or
skips. ``flock`` works across processes on local disks and on NFSv4 / Lustre mounted with flock
support; without ``fcntl`` (not POSIX) the lock does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("benchmark")


@contextlib.contextmanager
def stage_lock(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ModuleNotFoundError:  # pragma: no cover - not POSIX
        yield
        return
    if int(os.environ.get("RANK", "0") or 0) != 0:  # torchrun: rank 0 holds it for its ranks (they train in step with it)
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another job to finish the stage %s", folder)
            start = time.perf_counter()
            fcntl.flock(fh, fcntl.LOCK_EX)
            log.info("stage %s ready after %.1f s", folder, time.perf_counter() - start)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
