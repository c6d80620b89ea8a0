"""The harness under ``torchrun``: every rank trains, rank 0 alone scores, records and reports.

Why rank 0 alone evaluates: scoring is a pass over the test set that is cheap next to training,
and done in one process it is exact by construction (the same per-unit statistics, bootstrap and
record as a single-process run). Sharding it would need a gather of per-unit statistics in a
fixed order for no gain in what the record says.

The ranks talk through torchrun's key-value store (``env://``: the agent's store, or one hosted
by rank 0 with several tenants when the environment was set by hand), under their own prefix, in
JSON. A rank never blocks in a collective here: it polls for the key it expects *or* for the
other rank's ``exit`` key, so a rank that fails or stops early (an exception, Ctrl-C, an error
before the tables) releases the others at once instead of leaving them in a barrier, and every
wait also has a deadline. A rank that dies without a word is torchrun's to reap: it stops the
remaining ranks when one exits non-zero.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .errors import BenchmarkError

PREFIX = "benchmark-harness/"
POLL_S = 0.05  # how often a waiting rank looks at the store: a job's cost, not the step's
_CURRENT: Ranks | None = None


class RankEnded(BenchmarkError):
    """Another rank posted its exit status while this one waited for it (``code``: that status)."""

    def __init__(self, rank: int, code: int):
        super().__init__(f"rank {rank} stopped (exit status {code}) before it sent what this rank waited for")
        self.rank, self.code = rank, code


def launched_world_size() -> int:
    """Ranks torchrun started (``WORLD_SIZE``; 1 outside it), without touching any process group."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        raise BenchmarkError(f"WORLD_SIZE must be an integer, got {os.environ.get('WORLD_SIZE')!r}") from None


class Ranks:
    """This process's rank and the message board it shares with the other ranks."""

    def __init__(self, store: Any, rank: int, world: int):
        self.store, self.rank, self.world = store, rank, world
        self._runs = 0

    def new_run(self) -> str:
        """A prefix for the names of one run's messages: a process may plan and run more than once
        (the API), and every rank counts its runs alike."""
        self._runs += 1
        return f"run{self._runs}/"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _key(self, name: str, rank: int) -> str:
        return f"{name}@{rank}"

    def post(self, name: str, value: Any) -> None:
        """Publish ``value`` (JSON) under ``name`` for this rank; each name is posted once per run."""
        self.store.set(self._key(name, self.rank), json.dumps(value))

    def wait(self, name: str, rank: int, timeout_s: float) -> Any:
        """What ``rank`` posted under ``name``; :class:`RankEnded` if it posted its exit status
        first, :class:`BenchmarkError` after ``timeout_s`` seconds of silence."""
        want, ended = self._key(name, rank), self._key("exit", rank)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.store.check([want]):
                return json.loads(self.store.get(want))
            if name != "exit" and self.store.check([ended]):
                raise RankEnded(rank, int(json.loads(self.store.get(ended))))
            if time.monotonic() > deadline:
                raise BenchmarkError(f"rank {self.rank} waited {timeout_s:.0f} s for rank {rank}'s {name!r} and got nothing")
            time.sleep(POLL_S)

    def posted(self, name: str, rank: int) -> Any:
        """What ``rank`` posted under ``name`` so far (None when nothing yet), without waiting."""
        want, ended = self._key(name, rank), self._key("exit", rank)
        if self.store.check([want]):
            return json.loads(self.store.get(want))
        if self.store.check([ended]):
            raise RankEnded(rank, int(json.loads(self.store.get(ended))))
        return None

    def from_main(self, name: str, value: Any, timeout_s: float) -> Any:
        """Rank 0's ``value`` on every rank (rank 0 posts it, the others wait for it)."""
        if self.main:
            self.post(name, value)
            return value
        return self.wait(name, 0, timeout_s)


def join(timeout_s: float = 1800.0) -> Ranks | None:
    """This process's :class:`Ranks` under torchrun (made once per process), None in one process."""
    global _CURRENT
    world = launched_world_size()
    if world <= 1:
        return None
    if _CURRENT is None:
        import torch.distributed as dist

        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise BenchmarkError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch the run with torchrun")
        store, rank, size = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s)))
        _CURRENT = Ranks(dist.PrefixStore(PREFIX, store), rank, size)
    return _CURRENT


def current() -> Ranks | None:
    """The :class:`Ranks` this process joined, if it did."""
    return _CURRENT


def is_main() -> bool:
    """True on rank 0 and in a single process: the one that scores, records, renders and prints."""
    ranks = current()
    return ranks.main if ranks is not None else int(os.environ.get("RANK", "0") or 0) == 0


def exit_code_of(exc: BaseException) -> int:
    """The status the CLI exits with for ``exc`` (as ``benchmark.cli.main`` maps it)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 2 if isinstance(exc, BenchmarkError) else 1


def same_exit_status(command: Callable[[], int], timeout_s: float = 3600.0) -> int:
    """Run ``command`` on every rank and exit with rank 0's status on all of them: a rank that
    raises posts its status first (so no other rank waits for it), the others take rank 0's."""
    try:
        code = command()
    except RankEnded as exc:
        if exc.rank != 0:
            raise
        return exc.code  # rank 0 stopped first and said why; this rank ends as it did
    except BaseException as exc:
        ranks = current()
        if ranks is not None:
            ranks.post("exit", exit_code_of(exc))
        raise
    ranks = current()
    if ranks is None:
        return code
    if ranks.main:
        ranks.post("exit", code)
        return code
    try:
        return int(ranks.wait("exit", 0, timeout_s))
    except BenchmarkError:
        return 1
