"""Which samples each optimizer step of ``fit`` trains on, and how they are split.

Why a plan of *global* batches: ``FitConfig.batch_size`` is the paper's batch, the samples that
share one optimizer step. Splitting it over ranks (DDP) and micro-batches (gradient accumulation)
is a memory decision, so it must not change which samples share a step: one process at batch G,
two processes at micro-batch G/2, and one process at micro-batch G/4 with accumulation 4 all see
the same global batches in the same order and, with the loss weighting of ``fit``, compute the
same update up to float rounding -- when the loss is a sum of per-sample terms: what couples the
samples of one forward (BatchNorm statistics, in-batch negatives) sees a micro-batch only.

The epoch order is one permutation from a seeded generator, whatever the world size; global batch
``s`` of an epoch is its slice ``[s·G, (s+1)·G)``, rank ``r`` takes every ``world``-th sample of it
(``[r::world]``) and cuts its share into micro-batches of ``micro_batch`` samples. At world size 1
with no micro-batching this is exactly the order ``fit`` used before micro-batches existed, so
those checkpoints still resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["BatchSplit", "GlobalBatchSampler"]


@dataclass(frozen=True)
class BatchSplit:
    """Global batch = micro-batch × accumulation × world size, checked once here."""

    global_batch: int
    micro_batch: int
    world: int

    @classmethod
    def of(cls, global_batch: int, micro_batch_size: int, world: int) -> BatchSplit:
        """The split of ``global_batch`` (``micro_batch_size`` 0 = one micro-batch per rank)."""
        if world < 1:
            raise ValueError(f"world size must be >= 1, got {world}")
        if micro_batch_size == 0:
            if global_batch % world:
                raise ValueError(
                    f"FitConfig: batch_size {global_batch} (the global batch) cannot be split evenly over "
                    f"{world} ranks; make it a multiple of {world} or set micro_batch_size")
            micro_batch_size = global_batch // world
        if global_batch % (micro_batch_size * world):
            raise ValueError(
                f"FitConfig: batch_size {global_batch} (the global batch) is not a multiple of "
                f"micro_batch_size {micro_batch_size} × world size {world} = {micro_batch_size * world}")
        return cls(global_batch, micro_batch_size, world)

    @property
    def accumulate(self) -> int:
        """Micro-batches per rank and optimizer step."""
        return self.global_batch // (self.micro_batch * self.world)


@dataclass(frozen=True)
class StepPlan:
    """One optimizer step on this rank: its micro-batches (dataset keys) and the global count."""

    micro_batches: list[list[Any]]
    global_samples: int  # samples of the step over all ranks (padding included)


class GlobalBatchSampler(Sampler[list[Any]]):
    """Batch sampler over this rank's micro-batches, one epoch at a time, resumable mid-epoch.

    ``start_epoch(epoch, skip_steps)`` draws the epoch's permutation (the generator state at the
    epoch start is kept for checkpoints) and plans its steps after the first ``skip_steps``;
    iterating yields their micro-batches in order, and ``steps`` tells how they group into steps.
    A last partial global batch (``drop_last`` off, or a dataset smaller than the batch) is padded
    under DDP by repeating its own samples so every rank gets the same number of micro-batches.
    With ``epoch_seeded`` the keys are ``(epoch, index)`` tuples (``benchmark.loading``).
    """

    def __init__(self, n: int, seed: int, split: BatchSplit, rank: int, drop_last: bool, epoch_seeded: bool) -> None:
        if n < 1:
            raise ValueError("the training dataset is empty")
        self.n, self.split, self.rank, self.epoch_seeded = n, split, rank, epoch_seeded
        self.drop_last = drop_last and n >= split.global_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start_state = self.generator.get_state()
        self.steps: list[StepPlan] = []

    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.split.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def start_epoch(self, epoch: int, skip_steps: int) -> None:
        self.epoch_start_state = self.generator.get_state()
        order = torch.randperm(self.n, generator=self.generator).tolist()
        g, world = self.split.global_batch, self.split.world
        self.steps = []
        for first in range(skip_steps * g, self.steps_per_epoch() * g, g):
            chunk = order[first:first + g]
            if len(chunk) % world:  # partial global batch under DDP: equal shares for every rank
                target = -(-len(chunk) // world) * world
                chunk = (chunk * (target // len(chunk) + 1))[:target]
            share = [(epoch, i) if self.epoch_seeded else i for i in chunk[self.rank::world]]
            micro = self.split.micro_batch
            self.steps.append(StepPlan([share[k:k + micro] for k in range(0, len(share), micro)], len(chunk)))

    def __iter__(self) -> Iterator[list[Any]]:
        for step in self.steps:
            yield from step.micro_batches

    def __len__(self) -> int:
        return sum(len(step.micro_batches) for step in self.steps)
