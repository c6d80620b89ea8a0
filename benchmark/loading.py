"""DataLoader settings per device: the one place that decides how data reaches the model.

Why here: training (``benchmark.training.fit``) and every evaluation loader must agree on how
many worker processes run, whether batches are pinned, and how far ahead they are prefetched.
On a CPU the defaults keep everything in one process (tests and CI stay single-process and
deterministic); on CUDA they overlap loading with compute so the GPU is not left waiting on
decoding. Profiles override each setting through hyper-parameters (docs/entries.md, "Data
loading"): ``num_workers``, ``pin_memory``, ``persistent_workers``, ``prefetch_factor`` for
training, and the same names prefixed with ``eval_`` for evaluation loaders.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "CUDA_MAX_WORKERS",
    "CUDA_PREFETCH_FACTOR",
    "LOADER_KEYS",
    "EpochKeys",
    "epoch_generator",
    "epoch_rng",
    "eval_loader_kwargs",
    "loader_kwargs",
    "split_key",
    "usable_cores",
]

CUDA_MAX_WORKERS = 8  # beyond ~8 decoding workers per GPU the host, not the loader, is the limit
CUDA_PREFETCH_FACTOR = 4  # batches queued per worker: absorbs uneven per-item decode times
LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")
# Worker processes are forked on Linux whatever Python's default start method (forkserver from
# Python 3.14): a forked worker inherits the dataset instead of unpickling it, and starts fastest.
_FORK = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask under Slurm/cgroups, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows have no affinity mask
        return os.cpu_count() or 1


def _local_ranks() -> int:
    """Processes sharing this host under torchrun: they share its cores, so each gets a share."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _device_type(device: str | torch.device) -> str:
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"loader_kwargs: invalid device {device!r}; use cpu, cuda or cuda:K") from exc


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or value < minimum:
        raise ValueError(f"loader setting {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def loader_kwargs(
    device: str | torch.device,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``torch.utils.data.DataLoader``: explicit values win, ``None`` = device default.

    CPU: 0 workers, no pinning. CUDA: ``min(8, usable cores / local ranks)`` workers, pinned
    memory (asynchronous host-to-device copies), persistent workers (no re-fork per epoch) and a
    prefetch factor of 4. ``persistent_workers``, ``prefetch_factor`` and the start method (fork,
    on Linux) only exist for worker processes, so they are left out when ``num_workers`` is 0
    (DataLoader refuses them then).
    """
    on_cuda = _device_type(device) == "cuda"
    if num_workers is None:
        num_workers = min(CUDA_MAX_WORKERS, usable_cores() // _local_ranks()) if on_cuda else 0
    kwargs: dict[str, Any] = {
        "num_workers": _check_int("num_workers", num_workers, 0),
        "pin_memory": bool(on_cuda if pin_memory is None else pin_memory),
    }
    if kwargs["num_workers"] > 0:
        kwargs["persistent_workers"] = bool(on_cuda if persistent_workers is None else persistent_workers)
        if _FORK:  # the entries' views (benchmark.guard.EntryView) hold closures: only fork can hand them to workers
            kwargs["multiprocessing_context"] = "fork"
        if prefetch_factor is not None or on_cuda:
            chosen = CUDA_PREFETCH_FACTOR if prefetch_factor is None else prefetch_factor
            kwargs["prefetch_factor"] = _check_int("prefetch_factor", chosen, 1)
    return kwargs


def eval_loader_kwargs(hparams: Mapping[str, Any] | None, device: str | torch.device) -> dict[str, Any]:
    """``loader_kwargs`` for evaluation loaders, overridden by the ``eval_<setting>`` hyper-parameters.

    Evaluation loaders are iterated once, so persistent workers buy nothing there: they default to
    off unless ``eval_persistent_workers`` asks for them.
    """
    hparams = hparams or {}
    chosen = {key: hparams.get(f"eval_{key}") for key in LOADER_KEYS}
    if chosen["persistent_workers"] is None:
        chosen["persistent_workers"] = False
    return loader_kwargs(device, **chosen)


# --------------------------------------------------------------------------- epoch-seeded datasets
# A dataset with ``epoch_seeded = True`` is indexed with ``(epoch, index)`` keys and draws its
# randomness from (its seed, epoch, index) only. Why: a counter or RNG state kept in the dataset
# object lives in each worker's copy (advanced there, lost on re-fork), so with worker processes
# the draws would repeat every epoch or depend on which worker read which item.


def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """``(epoch, index)`` of a dataset key: a plain int is epoch 0."""
    if isinstance(key, tuple):
        if len(key) != 2:
            raise TypeError(f"an epoch-seeded dataset key is (epoch, index), got {key!r}")
        epoch, index = key
    else:
        epoch, index = 0, key
    if isinstance(epoch, bool) or isinstance(index, bool) or int(epoch) != epoch or int(index) != index or epoch < 0:
        raise TypeError(f"dataset key must be an index or (epoch >= 0, index) of integers, got {key!r}")
    return int(epoch), int(index)


def epoch_rng(seed: int, epoch: int, index: int, *salt: int) -> np.random.Generator:
    """The NumPy generator of one read: a pure function of (seed, epoch, index[, salt...])."""
    return np.random.default_rng([int(seed) % 2**63, int(epoch), int(index) % 2**63, *(int(s) % 2**63 for s in salt)])


def epoch_generator(seed: int, epoch: int, index: int, *salt: int) -> torch.Generator:
    """A torch generator seeded like :func:`epoch_rng` (for code that draws with torch)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index) % 2**63, *(int(s) % 2**63 for s in salt)])
    return torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0]) >> 1)


class EpochKeys(torch.utils.data.Sampler):
    """Sequential ``(epoch, index)`` keys over ``n`` items for a loader read ``epochs`` times in order.

    For loops outside ``fit`` that read an epoch-seeded training view more than once (each pass
    must draw afresh) with a plain DataLoader (``batch_size``, ``sampler=EpochKeys(...)``).
    """

    def __init__(self, n: int, epochs: int = 1, first_epoch: int = 0):
        if n < 0 or epochs < 0 or first_epoch < 0:
            raise ValueError(f"EpochKeys needs n, epochs, first_epoch >= 0, got {n}, {epochs}, {first_epoch}")
        self.n, self.epochs, self.first_epoch = n, epochs, first_epoch

    def __len__(self) -> int:
        return self.n * self.epochs

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for epoch in range(self.first_epoch, self.first_epoch + self.epochs):
            for index in range(self.n):
                yield epoch, index
