"""Reconstruction protocol: fit (shared between cells), sample an ensemble, CRPS in physical units.

Three parts, split between two processes. :func:`train` and :class:`Predictor` run in the job's
process, with the entry; :func:`score` runs in the harness's process, which holds the hidden
targets and their normalisation, feeds the job process test batches with the target hidden (NaN)
and without normalisation constants, gets back plain sample arrays (``.npy``, through
``benchmark.wire``) and scores those in Kelvin.

Scored rows are (sample, channel) pairs, as in the TC-PRIMED paper; they carry the task's cluster
id (the storm), the unit the headline intervals resample (rows of one storm are not independent). Task hooks used:
``windows(data, split, cell, ctx)``, ``collate``, ``target(batch) -> [B, C, H, W]`` (normalized,
NaN where not observed), ``inputs(batch)`` (the batch with the target's values hidden: what the
entry sees), ``denormalize(x, batch)`` for tensors shaped ``[..., B, C, H, W]``,
``units(batch) -> list[str]`` (cluster ids) and ``sample_ids(batch) -> list[str]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..contracts import Cell, RunContext, TaskSpec
from ..guard import EntryView, without
from ..loading import eval_loader_kwargs
from ..locks import stage_lock
from ..metrics import crps_ensemble
from ..scoring import check_defined, score_job
from ..throughput import Timer, count_flops
from ..validation import check_samples, plain_numpy
from . import JobOutput, stage_keys

HIDDEN = ("target_mean", "target_std")  # the harness's de-normalisation constants, never the entry's


def row_statistics(obs: torch.Tensor, ens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-(sample, channel) means over observed pixels. obs [B, C, H, W], ens [M, B, C, H, W]."""
    valid = torch.isfinite(obs)
    count = valid.sum((-1, -2))
    crps_std = crps_ensemble(obs, ens, estimator="standard", member_dim=0)
    crps_fair = crps_ensemble(obs, ens, estimator="fair", member_dim=0) if ens.shape[0] > 1 else torch.full_like(obs, float("nan"))
    mean = ens.mean(0)
    err = mean - obs
    var = ens.var(0, unbiased=True) if ens.shape[0] > 1 else torch.zeros_like(obs)

    def row_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(valid, x, torch.zeros_like(x)).sum((-1, -2)) / count.clamp_min(1)

    return {
        "pixels": count,
        "crps": row_mean(crps_std),
        "crps_fair": row_mean(crps_fair),
        "abs_error": row_mean(err.abs()),
        "sq_error": row_mean(err.square()),
        "ens_var": row_mean(var),
    }


def score_rows(rows: dict[str, np.ndarray], spec: TaskSpec, members: int) -> dict[str, dict[str, Any]]:
    """CRPS (standard and fair), MAE, RMSE and spread-skill with storm-cluster intervals (the
    task's unit), plus the paper's interval over rows as if independent (``crps_rows_iid``)."""
    metrics = score_job(spec, rows, members)
    check_defined(spec, metrics)
    return metrics


def train(task: Any, data: Any, cell: Cell, entry: Any, ctx: RunContext) -> dict[str, float]:
    """Fit on the training windows (a stage other cells share: built once, under a lock); job process."""
    t = time.perf_counter()
    train_view = EntryView(task.windows(data, "train", cell, ctx))
    val_view = EntryView(task.windows(data, "val", cell, ctx))
    stage = ctx.stage(stage_keys("reconstruction", cell)["fit"])
    with stage_lock(stage.checkpoint_dir):
        entry.fit(train_view, val_view, stage)
    return {"fit_s": time.perf_counter() - t}


class Predictor:
    """Job process: the entry's ensemble for one test batch (target hidden), as plain float32."""

    def __init__(self, task: Any, cell: Cell, entry: Any, ctx: RunContext):
        self.task, self.entry = task, entry
        self.members = int(task.spec.metric.ensemble_size or 1)
        self.timer = Timer(ctx.device, warmup=1)
        self.gen = ctx.generator(offset=7)
        self.flops: int | None = None
        self.flops_batch = 1

    def __call__(self, batch: dict[str, Any]) -> np.ndarray:
        shape = tuple(self.task.target(batch).shape)  # the hidden target's shape (its values are NaN here)
        b = shape[0]
        if self.flops is None:
            self.flops, self.flops_batch = count_flops(lambda: self.entry.sample(without(batch, ()), 1, torch.Generator().manual_seed(0))) or 0, b
        samples = self.timer.time(lambda: self.entry.sample(batch, self.members, self.gen), b)
        return check_samples(plain_numpy("sample", samples), self.members, shape).astype(np.float32)

    def stats(self) -> dict[str, Any]:
        return {"infer_samples_per_s": self.timer.samples_per_second(),
                "flops_per_sample": (self.flops / self.flops_batch) if self.flops else None}


def score(task: Any, data: Any, cell: Cell, ctx: RunContext, predict: Callable[[dict[str, Any]], np.ndarray]) -> JobOutput:
    """Harness process: every test batch, target hidden, through ``predict``; CRPS and friends in
    physical units from the ensembles that come back (checked: shape, finite)."""
    spec: TaskSpec = task.spec
    members = int(spec.metric.ensemble_size or 1)
    test = task.windows(data, "test", cell, ctx)
    loader = torch.utils.data.DataLoader(test, batch_size=int(ctx.hparams.get("eval_batch_size", 8)), shuffle=False,
                                         collate_fn=getattr(task, "collate", None), **eval_loader_kwargs(ctx.hparams, ctx.device))
    cols: dict[str, list[np.ndarray]] = {}
    t = time.perf_counter()
    with torch.inference_mode(), ctx.progress(len(loader), f"sample {cell.name}") as bar:
        for batch in loader:
            target = task.target(batch).float().cpu()
            b, c = target.shape[:2]
            samples = check_samples(np.asarray(predict(without(task.inputs(batch), HIDDEN))), members, target.shape)
            obs_phys = task.denormalize(target, batch)
            ens_phys = task.denormalize(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), batch)
            stats = row_statistics(obs_phys, ens_phys)
            keep = (stats["pixels"] > 0).numpy()
            for name, value in stats.items():
                cols.setdefault(name, []).append(value.numpy()[keep])
            sample_ids = np.broadcast_to(np.asarray(task.sample_ids(batch), dtype=str)[:, None], (b, c))
            clusters = np.broadcast_to(np.asarray(task.units(batch), dtype=str)[:, None], (b, c))
            channels = np.broadcast_to(np.arange(c)[None, :], (b, c))
            cols.setdefault("sample_id", []).append(sample_ids[keep])
            cols.setdefault("cluster", []).append(clusters[keep])
            cols.setdefault("channel", []).append(channels[keep])
            bar.update(1)
    rows = {k: np.concatenate(v) for k, v in cols.items()}
    if not len(rows.get("crps", [])):
        raise RuntimeError(f"cell {cell.name}: the test set has no observed target pixels to score")
    rows["unit_id"] = np.char.add(np.char.add(rows["sample_id"], "/"), rows["channel"].astype(str))
    return JobOutput(metrics=score_rows(rows, spec, members), unit_stats=rows, timings={"sample_s": time.perf_counter() - t},
                     extra={"n_rows": int(len(rows["crps"])), "members": members})
