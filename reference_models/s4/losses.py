"""S4's pre-training losses: space-time InfoNCE across modalities and masked cross-modal L1.

Memory: a batch holds B·T·H·W positions (e.g. 4·12·32·32 ≈ 49 k); an all-pairs similarity matrix
over them would not fit, so each step samples ``n_positions`` valid (b, t, h, w) positions
(the same positions in both modalities) and contrasts them against each other: for an anchor,
the positive is the other modality at the same position, the negatives are the other modality
at the other sampled positions — other places, other dates and other samples of the batch.
This is the paper's loss restricted to a random subset of negatives (a standard, unbiased
approximation whose difficulty grows with ``n_positions``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def sample_positions(mask: torch.Tensor, height: int, width: int, n: int) -> torch.Tensor:
    """Flat indices into ``[B, T, H, W]`` of up to ``n`` distinct positions on valid dates."""
    valid = mask[:, :, None, None].expand(-1, -1, height, width).reshape(-1)
    idx = valid.nonzero().squeeze(1)
    if len(idx) > n:
        idx = idx[torch.randperm(len(idx), device=idx.device)[:n]]
    return idx


def flatten_positions(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``z [B, D, T, H, W]`` → ``[N, D]`` rows at flat ``[B, T, H, W]`` indices ``idx``."""
    return z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1])[idx]


def space_time_infonce(za: torch.Tensor, zb: torch.Tensor, mask: torch.Tensor, n_positions: int, tau: float = 0.5) -> torch.Tensor:
    """Symmetric InfoNCE between two aligned feature maps ``[B, D, T, H, W]`` (cosine / ``tau``)."""
    idx = sample_positions(mask, za.shape[3], za.shape[4], n_positions)
    a = F.normalize(flatten_positions(za, idx).float(), dim=1)
    b = F.normalize(flatten_positions(zb, idx).float(), dim=1)
    logits = a @ b.T / tau
    target = torch.arange(len(idx), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over valid dates. ``pred/target [B, C, T, H, W]``, ``mask [B, T]``."""
    m = mask.to(pred.dtype)[:, None, :, None, None]
    denom = (m.sum() * pred.shape[1] * pred.shape[3] * pred.shape[4]).clamp_min(1)
    return ((pred - target).abs() * m).sum() / denom
