"""Fixed-length temporal subsampling, deterministic (the same dates every epoch and every run).

Random subsampling of test inputs makes scores depend on RNG state (a known hazard of some
harnesses), so this picks evenly spaced dates.
"""

from __future__ import annotations

import torch


def even_indices(n_dates: int, length: int) -> torch.Tensor:
    """``length`` evenly spaced indices into ``n_dates`` (all of them if the series is shorter)."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if n_dates <= length:
        return torch.arange(n_dates)
    return torch.linspace(0, n_dates - 1, length).round().long()


def subsample_sample(sample: dict, length: int | None, modalities: tuple[str, ...] = ("radar", "optical")) -> dict:
    """Keep ``length`` evenly spaced dates of each modality of a SITS sample (None: keep all)."""
    if length is None:
        return sample
    out = dict(sample)
    for mod in modalities:
        if mod in sample:
            idx = even_indices(sample[mod].shape[0], length)
            out[mod] = sample[mod][idx]
            out[f"{mod}_dates"] = sample[f"{mod}_dates"][idx]
    return out
