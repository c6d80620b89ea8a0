"""Reconstruction protocol: fit (shared between cells), sample an ensemble, CRPS in physical units.

Scored rows are (sample, channel) pairs, as in the TC-PRIMED paper; they carry the task's cluster
id (the storm), the unit the headline intervals resample (rows of one storm are not independent). Task hooks used:
``windows(data, split, cell, ctx)``, ``collate``, ``target(batch) -> [B, C, H, W]`` (normalized,
NaN where not observed), ``inputs(batch)`` (the batch with the target's values hidden: what the
entry sees), ``denormalize(x, batch)`` for tensors shaped ``[..., B, C, H, W]``,
``units(batch) -> list[str]`` (cluster ids) and ``sample_ids(batch) -> list[str]``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..contracts import Cell, RunContext, TaskSpec
from ..guard import EntryView, without
from ..locks import stage_lock
from ..metrics import crps_ensemble
from ..probes import perturb_targets, probe
from ..scoring import check_defined, score_job
from ..throughput import Timer, count_flops, train_throughput
from ..validation import check_samples
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


def run_reconstruction_job(task: Any, data: Any, cell: Cell, entry: Any, ctx: RunContext) -> JobOutput:
    spec: TaskSpec = task.spec
    members = int(spec.metric.ensemble_size or 1)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    train = task.windows(data, "train", cell, ctx)
    val = task.windows(data, "val", cell, ctx)
    stage = ctx.stage(stage_keys("reconstruction", cell)["fit"])
    with stage_lock(stage.checkpoint_dir):  # a stage shared with other cells' jobs is built once
        entry.fit(EntryView(train), EntryView(val), stage)
    timings["fit_s"] = time.perf_counter() - t

    test = task.windows(data, "test", cell, ctx)
    loader = torch.utils.data.DataLoader(test, batch_size=int(ctx.hparams.get("eval_batch_size", 8)), shuffle=False, collate_fn=getattr(task, "collate", None))
    timer = Timer(ctx.device, warmup=1)
    gen = ctx.generator(offset=7)
    cols: dict[str, list[np.ndarray]] = {}
    flops: int | None = None
    flops_batch = 1
    probed: str | None = None
    t = time.perf_counter()
    with torch.inference_mode(), ctx.progress(len(loader), f"sample {cell.name}") as bar:
        for batch in loader:
            if probed is None:  # first batch: samples must not depend on the hidden target values
                probed = probe(lambda batch=batch: entry.sample(without(task.inputs(batch), HIDDEN), members, torch.Generator().manual_seed(1)),
                               lambda batch=batch: perturb_targets(batch), "hidden target values")
            # truth, its normalisation and the unit ids are taken before the entry runs; the
            # entry gets a copy of the inputs (target hidden, no normalisation constants)
            target = task.target(batch).float().cpu()
            b, c = target.shape[:2]
            obs_phys = task.denormalize(target, batch)
            sample_ids = np.broadcast_to(np.asarray(task.sample_ids(batch), dtype=str)[:, None], (b, c))
            clusters = np.broadcast_to(np.asarray(task.units(batch), dtype=str)[:, None], (b, c))
            inputs = task.inputs(batch)
            if flops is None:
                flops, flops_batch = count_flops(lambda inputs=inputs: entry.sample(without(inputs, HIDDEN), 1, torch.Generator().manual_seed(0))) or 0, b
            seen = without(inputs, HIDDEN)
            samples = timer.time(lambda seen=seen: entry.sample(seen, members, gen), b)
            check_samples(samples, members, target.shape)
            ens_phys = task.denormalize(samples.float().cpu(), batch)
            stats = row_statistics(obs_phys, ens_phys)
            keep = (stats["pixels"] > 0).numpy()
            for name, value in stats.items():
                cols.setdefault(name, []).append(value.numpy()[keep])
            channels = np.broadcast_to(np.arange(c)[None, :], (b, c))
            cols.setdefault("sample_id", []).append(sample_ids[keep])
            cols.setdefault("cluster", []).append(clusters[keep])
            cols.setdefault("channel", []).append(channels[keep])
            bar.update(1)
    timings["sample_s"] = time.perf_counter() - t
    rows = {k: np.concatenate(v) for k, v in cols.items()}
    if not len(rows.get("crps", [])):
        raise RuntimeError(f"cell {cell.name}: the test set has no observed target pixels to score")
    rows["unit_id"] = np.char.add(np.char.add(rows["sample_id"], "/"), rows["channel"].astype(str))
    metrics = score_rows(rows, spec, members)
    throughput = {
        "infer_samples_per_s": timer.samples_per_second(),
        "train_samples_per_s": train_throughput(ctx.fit_log),
        "flops_per_sample": (flops / flops_batch) if flops else None,
    }
    return JobOutput(metrics=metrics, unit_stats=rows, throughput=throughput, timings=timings,
                     extra={"n_rows": int(len(rows["crps"])), "members": members, "fit_log": dict(ctx.fit_log), "hidden_truth_probe": probed})
