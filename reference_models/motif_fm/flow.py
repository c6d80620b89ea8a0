"""Flow matching on the target source, and the deterministic (mask-token) variant.

Training (both): one available source per sample is the target (uniformly, self-supervised).
Flow matching: t = sigmoid(N(0, 1)), x_t = (1 − t)·x0 + t·x1 with x0 ~ N(0, I) over the target's
whole padded grid (unobserved pixels of x1 are 0), the network predicts the velocity x1 − x0,
and the loss is the MSE over the target's observed pixels and channels only, averaged per
target and then over the batch's targets (``masked_mse``: each target counts equally, whatever
its swath size). Sampling: explicit Euler on ``linspace(0, 1, steps + 1)`` from noise drawn with
the caller's generator (so a seed fixes the realizations), realizations batched along B.

Deterministic: a learned mask token replaces the target's value tokens, the network predicts the
values, MSE on the observed pixels (per target, then over the targets); its ensemble is the
prediction repeated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .backbone import MotifBackbone
from .slots import Slots, pack, random_targets


def masked_mse(pred: Tensor, target: Tensor, valid: Tensor, target_dims: int = 1) -> Tensor:
    """Mean squared error per *target*, then the mean over the targets (as the authors do).

    The leading ``target_dims`` dimensions index the targets (1: ``[B, C, H, W]``, one target per
    sample, slot 0 of the packed slots; 2: ``[B, S, C, H, W]``, one per (sample, source slot)),
    the others are its pixels × channels. Each target's error is the mean over *its* ``valid``
    entries, and the loss is the mean over the targets with at least one valid entry: every target
    counts equally whatever its swath size (a 10 000-pixel AMSR2 swath weighs as much as a
    100-pixel SSM/I one, where pooling the batch's pixels would let the large swaths dominate).
    Targets with no valid entry (a missing slot, a swath with nothing observed) are left out; a
    batch without any valid entry gives 0, still attached to the graph (a zero, finite gradient).

    Under gradient accumulation (and DDP) each micro-batch's loss is this mean over its own
    targets; the training losses return ``scored_targets`` as fit's ``loss_weight``, so fit weights
    each micro-batch by its number of targets and the gradient is that of the mean over all the
    targets of the global batch. No host synchronisation: the counts stay on the device.
    """
    if target_dims < 1 or target_dims >= pred.ndim:
        raise ValueError(f"target_dims must be in [1, {pred.ndim - 1}], got {target_dims}")
    valid = valid.expand_as(pred)
    err = torch.where(valid, (pred.float() - target.float()) ** 2, torch.zeros((), device=pred.device))
    sq = err.flatten(target_dims).flatten(0, target_dims - 1).sum(1)  # [targets]
    count = valid.flatten(target_dims).flatten(0, target_dims - 1).sum(1)
    has = count > 0
    per_target = sq / count.clamp_min(1)
    return torch.where(has, per_target, torch.zeros((), device=pred.device)).sum() / has.sum().clamp_min(1)


def crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x[..., : size[0], : size[1]]


def scored_targets(valid: Tensor, target_dims: int = 1) -> Tensor:
    """How many targets ``masked_mse`` averages over (those with a valid entry): a 0-d device tensor."""
    return valid.flatten(target_dims).any(-1).sum()


class MotifFlowMatching(nn.Module):
    """``forward(batch)`` -> (loss, logs) for ``benchmark.training.fit``; ``sample`` for inference."""

    def __init__(self, backbone: MotifBackbone):
        super().__init__()
        self.backbone = backbone

    @property
    def patch(self) -> int:
        return self.backbone.cfg.patch

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        slots = pack(batch, random_targets(batch), self.patch)
        x1_raw = slots.values[0]
        valid = torch.isfinite(x1_raw)
        x1 = torch.nan_to_num(x1_raw, nan=0.0)
        b = x1.shape[0]
        t = torch.sigmoid(torch.randn(b, device=x1.device))
        x0 = torch.randn_like(x1)
        tb = t[:, None, None, None]
        xt = (1 - tb) * x0 + tb * x1
        v = self.backbone(self.backbone.context(slots), xt, t)
        loss = masked_mse(v, x1 - x0, valid)
        return loss, {"sources_per_sample": slots.present.float().sum(1).mean(), "loss_weight": scored_targets(valid)}  # read by fit on log steps only

    @torch.no_grad()
    def sample(self, batch: Mapping[str, Any], n: int, generator: torch.Generator, steps: int = 24, chunk: int = 10) -> Tensor:
        """[n, B, C, H, W] realizations (normalized units) of each sample's target."""
        slots = pack(batch, list(batch["target"]), self.patch)
        return euler_sample(self.backbone, slots, n, generator, steps, chunk)


def euler_sample(backbone: MotifBackbone, slots: Slots, n: int, generator: torch.Generator, steps: int, chunk: int) -> Tensor:
    """Explicit Euler from noise, one sample at a time with its realizations batched (``chunk`` at
    once): each trajectory runs on that sample's own sources and extents, never on another
    sample's padding or missing slots. The noise of the whole batch is drawn first, in one call."""
    b, (c, h, w) = slots.batch_size, slots.values[0].shape[1:]
    device = slots.values[0].device
    noise = torch.randn((n, b, c, h, w), generator=generator).to(device)  # CPU generator: same draws on any device
    grid = torch.linspace(0.0, 1.0, steps + 1).tolist()
    out = torch.zeros_like(noise)  # beyond a sample's own swath (never scored): 0, the training mean
    chunk = max(1, chunk)
    for i in range(b):
        one = slots.select(i)
        hi, wi = one.values[0].shape[-2:]
        for start in range(0, n, chunk):
            r = min(chunk, n - start)
            ctx = backbone.context(one.repeat(r))
            x = noise[start:start + r, i, :, :hi, :wi]
            for k in range(steps):
                t = torch.full((r,), grid[k], device=device)
                x = x + (grid[k + 1] - grid[k]) * backbone(ctx, x, t).float()
            out[start:start + r, i, :, :hi, :wi] = x
    return crop(out, slots.size)


class MotifDeterministic(nn.Module):
    """The same backbone with a mask token in place of the target, trained with MSE on values."""

    def __init__(self, backbone: MotifBackbone):
        super().__init__()
        if backbone.mask_token is None:
            raise ValueError("the deterministic variant needs a backbone built with mask_token=True")
        self.backbone = backbone

    @property
    def patch(self) -> int:
        return self.backbone.cfg.patch

    def _predict(self, slots: Slots) -> Tensor:
        t = torch.zeros(slots.batch_size, device=slots.values[0].device)
        return self.backbone(self.backbone.context(slots), None, t)

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        slots = pack(batch, random_targets(batch), self.patch)
        y = slots.values[0]
        valid = torch.isfinite(y)
        loss = masked_mse(self._predict(slots), torch.nan_to_num(y, nan=0.0), valid)
        return loss, {"sources_per_sample": slots.present.float().sum(1).mean(), "loss_weight": scored_targets(valid)}  # read by fit on log steps only

    @torch.no_grad()
    def sample(self, batch: Mapping[str, Any], n: int, generator: torch.Generator, steps: int = 0, chunk: int = 0) -> Tensor:
        slots = pack(batch, list(batch["target"]), self.patch)
        pred = crop(self._predict(slots).float(), slots.size)
        return pred.unsqueeze(0).expand(n, *pred.shape).contiguous()
