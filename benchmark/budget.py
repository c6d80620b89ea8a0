"""Epoch budgets to optimizer steps: the one rule every network entry's profile goes through.

Profiles give a stage's budget in epochs (``<stage>_epochs``, the papers' unit) and, optionally,
a floor on the updates (``<stage>_min_steps``); ``benchmark.training.fit`` counts steps. The floor
may depend on the cell's label fraction (``{"0.1": 200, "1.0": 600}``): a short CPU profile
otherwise gives a task with few or small training samples far fewer updates than another at the
same epochs (the embedded South Sudan's 390 tiles of 16 × 16 px make 98 steps per epoch at batch
4, PASTIS-R's 600 patches 150), and a from-scratch network can then end where it started (a
uniform guess). One function, so the S4 family and the SSL baselines cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .contracts import RunContext

__all__ = ["MINI_FINETUNE_MIN_STEPS", "min_steps", "stage_steps", "with_stage_steps"]

# The suite's ``mini`` fine-tuning floor (every network entry's profile uses it): 200 updates with
# 10 % of the labels, 600 with all of them -- what 4 epochs give PASTIS-R's 600 training patches --
# so the embedded South Sudan (98 steps per epoch) is not fine-tuned for a third fewer updates.
MINI_FINETUNE_MIN_STEPS: dict[str, int] = {"0.1": 200, "1.0": 600}


def min_steps(value: int | Mapping[str, int] | None, label_fraction: float | None) -> int:
    """The floor on a stage's updates: an int, or a mapping from label fraction (as a string key:
    TOML/JSON keys are strings) to the floor, read at the largest fraction not above the cell's
    (the smallest listed fraction's floor below it). No fraction (a task without one) reads 1.0."""
    if value is None:
        return 1
    if not isinstance(value, Mapping):
        return int(value)
    try:
        table = sorted((float(k), int(v)) for k, v in value.items())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"min_steps mapping needs label-fraction keys and integer values, got {dict(value)}") from exc
    if not table:
        raise ValueError("min_steps mapping is empty")
    fraction = 1.0 if label_fraction is None else float(label_fraction)
    eligible = [steps for f, steps in table if f <= fraction + 1e-9]
    return eligible[-1] if eligible else table[0][1]


def stage_steps(hp: Mapping[str, Any], stage: str, n: int, label_fraction: float | None = None) -> int | None:
    """``<stage>_steps`` if the profile gives it; else ``<stage>_epochs`` passes over ``n`` samples
    in batches of ``<stage>_batch_size`` (or ``batch_size``), at least ``<stage>_min_steps``; None
    when the profile gives neither."""
    if f"{stage}_steps" in hp:
        return int(hp[f"{stage}_steps"])
    if f"{stage}_epochs" not in hp:
        return None
    batch = int(hp.get(f"{stage}_batch_size", hp["batch_size"]))
    per_epoch = max(1, -(-int(n) // batch))
    return max(min_steps(hp.get(f"{stage}_min_steps"), label_fraction), int(hp[f"{stage}_epochs"]) * per_epoch)


def with_stage_steps(ctx: RunContext, stage: str, n: int) -> RunContext:
    """A copy of ``ctx`` whose hparams hold ``<stage>_steps`` for a stage over ``n`` samples (the
    label fraction comes from the cell). The count needs no world size: ``batch_size`` is the
    global batch, so W ranks make the same steps over the same epochs as one process."""
    steps = stage_steps(ctx.hparams, stage, n, (ctx.cell or {}).get("label_fraction"))
    if steps is None:
        return ctx
    return dataclasses.replace(ctx, hparams={**ctx.hparams, f"{stage}_steps": steps})
