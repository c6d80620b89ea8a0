"""What the harness checks about an entry's outputs before scoring them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import EntryOutputError


def check_tensor(name: str, out: object, shape: Sequence[int], *, floating: bool = True, finite: bool = True) -> torch.Tensor:
    """Raise ``EntryOutputError`` saying exactly what is wrong with ``out``."""
    if not isinstance(out, torch.Tensor):
        raise EntryOutputError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise EntryOutputError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    if floating and not out.is_floating_point():
        raise EntryOutputError(f"{name} returned dtype {out.dtype}, expected a floating dtype")
    if finite:
        bad = (~torch.isfinite(out)).sum().item()
        if bad:
            raise EntryOutputError(f"{name} returned {bad} non-finite value(s) (NaN or inf) out of {out.numel()}")
    return out


def check_logits(out: object, batch_size: int, num_classes: int, height: int, width: int) -> torch.Tensor:
    return check_tensor("predict", out, (batch_size, num_classes, height, width))


def check_samples(out: object, n: int, target_shape: Sequence[int]) -> torch.Tensor:
    return check_tensor("sample", out, (n, *target_shape))
