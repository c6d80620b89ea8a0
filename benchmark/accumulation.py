"""Forward and backward of one optimizer step's micro-batches, weighted as one global batch.

Why weighting: a loss is a mean over *units* (samples, pixels, target fields). Averaging the
micro-batch means with equal weights is the global mean only when every micro-batch holds the
same number of units; MoTiF's windows do not. Each micro-batch's loss is therefore weighted by its
units over the units of the whole step on all ranks, so the gradient is that of the mean over all
units of the global batch, whatever the split. ``loss_fn`` names the units with the logs key
``"loss_weight"`` (a 0-d tensor or a number); without it a micro-batch weighs its sample count.

No host reads: sample counts are known from the batch plan, so the default weights are Python
numbers applied before each backward; weights from ``loss_fn`` are tensors, so the loss is
back-propagated times its weight and the summed gradient is divided by the total weight (summed
over ranks with an all-reduce) after the last backward. A step of one micro-batch on one process
is back-propagated as is, so such runs compute exactly what they did before micro-batches existed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .batching import StepPlan
from .step_values import Scalar, scalar

__all__ = ["LOSS_WEIGHT", "MicroBatchStep"]

LOSS_WEIGHT = "loss_weight"  # the logs key that weights a micro-batch's loss (never logged)


class MicroBatchStep:
    """Runs ``loss_fn`` and backward over a step's micro-batches; gradients are left in ``.grad``."""

    def __init__(self, wrapped: nn.Module, ddp: nn.parallel.DistributedDataParallel | None,
                 loss_fn: Callable[[nn.Module, Any], Any], trainable: list[Tensor], world: int,
                 device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager],
                 to_device: Callable[[Any, torch.device], Any], desc: str) -> None:
        self.wrapped, self.ddp, self.loss_fn, self.trainable = wrapped, ddp, loss_fn, trainable
        self.world, self.device, self.autocast, self.to_device, self.desc = world, device, autocast, to_device, desc

    def __call__(self, micro_batches: list[Any], plan: StepPlan) -> tuple[Tensor, dict[str, Scalar]]:
        """The step's rank-local loss (unit-weighted mean over its micro-batches) and logs."""
        single = self.world == 1 and len(micro_batches) == 1
        weighted: bool | None = None
        weights: list[Scalar] = []
        losses: list[Tensor] = []
        logs: list[dict[str, Scalar]] = []
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync():
                loss, user_logs = self._forward(batch)
                has_weight = LOSS_WEIGHT in user_logs
                if weighted is None:
                    weighted = has_weight
                elif weighted != has_weight:
                    raise ValueError(f"{self.desc}: loss_fn returned {LOSS_WEIGHT!r} for some micro-batches of a "
                                     "step and not for others; return it always or never")
                samples = len(plan.micro_batches[i])
                weight = _weight(user_logs.pop(LOSS_WEIGHT, samples), self.desc)
                if single:
                    loss.backward()
                elif weighted:
                    (loss * weight).backward()
                else:  # the share of this micro-batch in the step, times world to undo DDP's mean
                    factor = samples * self.world / plan.global_samples
                    (loss if factor == 1.0 else loss * factor).backward()
            weights.append(weight)
            losses.append(loss.detach())
            logs.append({k: scalar(v, k) for k, v in user_logs.items()})
        if single:
            return losses[0], logs[0]
        total = sum(weights[1:], weights[0])
        if weighted:
            self._normalise_gradients(total)
        return _weighted_mean(losses, weights, total), _mean_logs(logs, weights, total)

    def _forward(self, batch: Any) -> tuple[Tensor, dict[str, Any]]:
        batch = self.to_device(batch, self.device)
        with self.autocast():
            out = self.loss_fn(self.wrapped, batch)
        loss, user_logs = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise ValueError(f"{self.desc}: loss_fn must return a scalar tensor, got {type(loss).__name__}")
        return loss, dict(user_logs)

    def _normalise_gradients(self, local_total: Scalar) -> None:
        """Divide the summed weighted gradients by the step's total weight over all ranks."""
        total = torch.zeros((), dtype=torch.float32, device=self.device) + local_total  # a kernel, not a copy
        if self.world > 1:
            dist.all_reduce(total)  # DDP already averaged the gradients over ranks: hence × world below
        scale = self.world / total.clamp_min(torch.finfo(torch.float32).tiny)
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in self.trainable:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for dtype, grads in by_dtype.items():  # the scale in each gradient's own dtype, not the first one's
            torch._foreach_mul_(grads, scale.to(dtype))


def _weight(value: Any, desc: str) -> Scalar:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{desc}: {LOSS_WEIGHT!r} must be a 0-d tensor or a number, got shape {tuple(value.shape)}")
        return value.detach().reshape(()).float()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{desc}: {LOSS_WEIGHT!r} must be a 0-d tensor or a number, got {type(value).__name__}")
    return float(value)


def _weighted_mean(values: list[Scalar], weights: list[Scalar], total: Scalar) -> Scalar:
    """Σ w·v / Σ w; a total weight of 0 (no unit in the step, e.g. on one rank) gives Σ w·v = 0, not 0/0."""
    acc = sum((w * v for w, v in zip(weights[1:], values[1:], strict=True)), weights[0] * values[0])
    if isinstance(total, Tensor):
        return acc / total.clamp_min(torch.finfo(total.dtype).tiny)
    return acc / max(total, 1e-30)


def _mean_logs(logs: list[Mapping[str, Scalar]], weights: list[Scalar], total: Scalar) -> dict[str, Scalar]:
    """Each log's weighted mean over the micro-batches that reported it."""
    keys = dict.fromkeys(k for entry in logs for k in entry)
    out: dict[str, Scalar] = {}
    for key in keys:
        pairs = [(w, entry[key]) for w, entry in zip(weights, logs, strict=True) if key in entry]
        ws, vs = [w for w, _ in pairs], [v for _, v in pairs]
        out[key] = _weighted_mean(vs, ws, sum(ws[1:], ws[0]))
    return out
