"""Family protocols: how a job of each task family is trained, run and scored.

A protocol knows the *family's* contract (which entry methods to call, which metric to compute)
but nothing about a concrete task or entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np


@dataclass
class JobOutput:
    """What a protocol hands back to the runner for one job."""

    metrics: dict[str, dict[str, Any]]  # name -> BootstrapResult.to_dict() (+ extras)
    unit_stats: dict[str, np.ndarray]  # per-unit sufficient statistics, saved as .npz
    throughput: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def stage_keys(family: str, cell: Any) -> dict[str, str]:
    """The checkpoint key of every training stage of a ``family`` job in ``cell``: two cells with
    equal keys train the very same models (seed for seed) and differ only in how they are scored."""
    if family == "segmentation":
        return {"pretrain": cell.shared.get("pretrain", "pretrain"), "finetune": cell.shared.get("finetune", f"finetune-{cell.name}")}
    if family == "reconstruction":
        return {"fit": cell.shared.get("fit", "fit")}
    raise ValueError(f"no protocol for family {family!r}")


def get_protocol(family: str) -> ModuleType:
    """The family's protocol module: ``train`` and ``Predictor`` (job process), ``score`` (harness)."""
    if family == "segmentation":
        from . import segmentation

        return segmentation
    if family == "reconstruction":
        from . import reconstruction

        return reconstruction
    raise ValueError(f"no protocol for family {family!r}")
