"""Per-step loss, gradient norm and logs kept on the device until a logging step reads them.

Why: ``float(loss)`` / ``.item()`` each step makes the host wait for the accelerator to drain its
queue, so data loading, kernel launches and compute stop overlapping. ``fit`` keeps each step's
values as 0-d tensors here and reads all pending ones with one copy per device every
``log_every`` steps (and before checkpoints and at the end), so every step still gets its curve
row and its entry in ``FitResult.losses``, only later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["PendingSteps", "StepValues", "read_scalars"]

Scalar = Tensor | float


@dataclass
class StepValues:
    """What one optimizer step reports; tensors until read, then floats."""

    step: int
    loss: Scalar
    grad_norm: Scalar
    lr: float
    samples: int  # samples of this step over all ranks
    logs: dict[str, Scalar] = field(default_factory=dict)
    samples_so_far: int = 0  # samples of the fit call up to and including this step
    elapsed_s: float = 0.0  # host time since the fit call began, when the step was issued

    def as_logs(self) -> dict[str, float]:
        """The ``logs`` handed to ``on_step`` and kept in ``FitResult.final_logs``."""
        return {k: float(v) for k, v in self.logs.items()} | {"lr": self.lr, "grad_norm": float(self.grad_norm)}


def scalar(value: Any, name: str) -> Scalar:
    """A log value as a detached 0-d tensor (no host read) or a Python float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"log {name!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.detach()
        return value.reshape(()) if value.ndim else value
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"log {name!r} must be a number or a 0-d tensor, got {type(value).__name__}") from exc


def read_scalars(values: list[Scalar]) -> list[float]:
    """Host floats of ``values`` with one device-to-host copy per device and dtype (one sync in all,
    not one per value); each float is exactly what ``.item()`` of its tensor gives."""
    out: list[float | None] = [v if isinstance(v, float) else None for v in values]
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, Tensor):
            groups.setdefault((v.device, v.dtype), []).append(i)
    for indices in groups.values():
        read = torch.stack([values[i] for i in indices]).cpu().tolist()
        for i, x in zip(indices, read, strict=True):
            out[i] = float(x)
    return [float(x) for x in out]


class PendingSteps:
    """Steps whose values are still on the device, read together by ``drain``."""

    def __init__(self) -> None:
        self._steps: list[StepValues] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, values: StepValues) -> None:
        """Queue a step; its tensors are detached so no autograd graph outlives the step."""
        for name in ("loss", "grad_norm"):
            value = getattr(values, name)
            if isinstance(value, Tensor):
                value = value.detach()
                setattr(values, name, value.reshape(()) if value.ndim else value)
        self._steps.append(values)

    def drain(self) -> list[StepValues]:
        """All pending steps, in order, with their values as floats; the queue is left empty."""
        steps, self._steps = self._steps, []
        flat: list[Scalar] = []
        for s in steps:
            flat += [s.loss, s.grad_norm, *s.logs.values()]
        values = iter(read_scalars(flat))
        for s in steps:
            s.loss, s.grad_norm = next(values), next(values)
            s.logs = {k: next(values) for k in s.logs}
        return steps
