"""SITS helpers shared by tasks and entries: nearest-timestamp alignment (S4's radar/optical pairing).

It lives in the harness package because entries (which may not import tasks) need it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

ALIGNED_LENGTH = "aligned_length"  # batch key: ``aligned_length`` of the batch, computed on the host


def nearest_date_indices(src_dates: torch.Tensor, ref_dates: torch.Tensor) -> torch.Tensor:
    """For each reference date, the index of the nearest source date (ties go to the earlier one).

    Both are 1-D, in days; ``src_dates`` must be sorted ascending.
    """
    if src_dates.ndim != 1 or ref_dates.ndim != 1:
        raise ValueError("dates must be 1-D")
    if len(src_dates) == 0:
        raise ValueError("cannot align onto an empty source series")
    if len(src_dates) > 1 and bool((src_dates[1:] < src_dates[:-1]).any()):
        raise ValueError("source dates must be sorted ascending")
    right = torch.searchsorted(src_dates.contiguous(), ref_dates.contiguous()).clamp(max=len(src_dates) - 1)
    left = (right - 1).clamp(min=0)
    pick_left = (ref_dates - src_dates[left]).abs() <= (src_dates[right] - ref_dates).abs()
    return torch.where(pick_left, left, right)


def align_series(series: torch.Tensor, src_dates: torch.Tensor, ref_dates: torch.Tensor) -> torch.Tensor:
    """``series [T_src, ...]`` resampled at ``ref_dates`` by nearest date: ``[T_ref, ...]``."""
    return series[nearest_date_indices(src_dates, ref_dates)]


def align_batch(series: torch.Tensor, src_dates: torch.Tensor, src_mask: torch.Tensor, ref_dates: torch.Tensor) -> torch.Tensor:
    """Batched alignment for padded series. ``series [B, T_s, ...]``, ``src_dates/src_mask [B, T_s]``,
    ``ref_dates [B, T_r]`` → ``[B, T_r, ...]``; padded source dates are never picked."""
    big = torch.finfo(torch.float32).max / 4
    d = (ref_dates[:, :, None].float() - src_dates[:, None, :].float()).abs()
    d = torch.where(src_mask[:, None, :].bool(), d, torch.full_like(d, big))
    idx = d.argmin(-1)  # [B, T_r]
    gather = idx.view(*idx.shape, *([1] * (series.ndim - 2))).expand(-1, -1, *series.shape[2:])
    return torch.gather(series, 1, gather)


def align_modalities(batch: dict, a: str = "radar", b: str = "optical") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S4's pre-processing on a padded batch: per sample, the modality with fewer valid dates keeps
    its dates and the other is resampled onto them by nearest date.

    Returns ``x_a [B, T, C_a, H, W]``, ``x_b [B, T, C_b, H, W]`` and the common ``mask [B, T]``.
    """
    na, nb = batch[f"{a}_mask"].sum(1), batch[f"{b}_mask"].sum(1)
    use_b = nb <= na  # the shorter series is the reference
    t = batch[ALIGNED_LENGTH] if ALIGNED_LENGTH in batch else aligned_length(batch, a, b)
    ref_dates = torch.where(use_b[:, None], batch[f"{b}_dates"][:, :t], batch[f"{a}_dates"][:, :t])
    ref_mask = torch.where(use_b[:, None], batch[f"{b}_mask"][:, :t], batch[f"{a}_mask"][:, :t])
    xa = align_batch(batch[a], batch[f"{a}_dates"], batch[f"{a}_mask"], ref_dates)
    xb = align_batch(batch[b], batch[f"{b}_dates"], batch[f"{b}_mask"], ref_dates)
    zero = ~ref_mask[:, :, None, None, None]
    return xa.masked_fill(zero, 0), xb.masked_fill(zero, 0), ref_mask


def aligned_length(batch: dict, a: str = "radar", b: str = "optical") -> int:
    """Dates in ``align_modalities``'s output: the batch's longest "shorter of the two" series.

    A data-dependent size, so reading it from device tensors waits for the device; on host
    tensors (the collate function's) it costs nothing.
    """
    return int(torch.minimum(batch[f"{a}_mask"].sum(1), batch[f"{b}_mask"].sum(1)).max())


@dataclass(frozen=True)
class AlignedLengthCollate:
    """``collate`` that also stores ``aligned_length`` in the batch (a plain int, which stays on
    the host when the batch moves), so ``align_modalities`` on the device never syncs. A class,
    not a closure, so loader workers started by spawn/forkserver can pickle it."""

    collate: Callable[[list[Any]], Any] | None
    a: str = "radar"
    b: str = "optical"

    def __call__(self, items: list[Any]) -> Any:
        batch = (self.collate or torch.utils.data.default_collate)(items)
        batch[ALIGNED_LENGTH] = aligned_length(batch, self.a, self.b)
        return batch
