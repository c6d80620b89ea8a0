"""Segmentation protocol: pre-train (shared between cells), fine-tune, predict, mIoU with CIs.

Units of the bootstrap are test patches: per-patch confusion matrices are the sufficient
statistics, so any interval or paired comparison can be recomputed from the stored ``.npz``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..contracts import Cell, RunContext, TaskSpec
from ..guard import EntryView, without
from ..locks import stage_lock
from ..metrics import confusion_matrix
from ..probes import perturb_labels, probe
from ..scoring import check_defined, score_job
from ..throughput import Timer, count_flops, train_throughput
from ..validation import check_logits
from . import JobOutput, stage_keys

HIDDEN = ("label",)  # what a segmentation entry never sees at pre-training or prediction time


def _loader(dataset: Any, task: Any, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=getattr(task, "collate", None))


def score_confusions(cms: np.ndarray, spec: TaskSpec) -> dict[str, dict[str, Any]]:
    """mIoU and overall accuracy with headline intervals from per-unit confusion matrices [N, K, K]."""
    metrics = score_job(spec, {"confusion": cms})
    check_defined(spec, metrics)
    return metrics


def run_segmentation_job(task: Any, data: Any, cell: Cell, entry: Any, ctx: RunContext) -> JobOutput:
    spec: TaskSpec = task.spec
    modality = cell.params["modality"]
    k = spec.metric.num_classes
    ignore = spec.metric.ignore_index
    timings: dict[str, float] = {}

    t = time.perf_counter()
    stages = stage_keys("segmentation", cell)
    pre = ctx.stage(stages["pretrain"])
    with stage_lock(pre.checkpoint_dir):  # a stage shared with other cells' jobs is built once
        entry.pretrain(EntryView(task.unlabeled(data, cell, ctx), hidden=HIDDEN), pre)
    timings["pretrain_s"] = time.perf_counter() - t

    t = time.perf_counter()
    fine = ctx.stage(stages["finetune"])
    with stage_lock(fine.checkpoint_dir):
        entry.finetune(EntryView(task.labeled(data, "train", cell, ctx)), modality, fine)
    timings["finetune_s"] = time.perf_counter() - t

    test = task.labeled(data, "test", cell, ctx)
    loader = _loader(test, task, int(ctx.hparams.get("eval_batch_size", 4)))
    timer = Timer(ctx.device, warmup=1)
    cms, ids = [], []
    flops: int | None = None
    flops_batch = 1
    probed: str | None = None
    t = time.perf_counter()
    with torch.inference_mode(), ctx.progress(len(loader), f"predict {cell.name}") as bar:
        for batch in loader:
            # truth and ids stay with the harness; the entry gets a copy without the label
            label = batch["label"]
            b, h, w = label.shape
            ids.extend(str(i) for i in batch.get("id", range(len(ids), len(ids) + b)))
            if flops is None:
                flops, flops_batch = count_flops(lambda batch=batch: entry.predict(without(batch, HIDDEN), modality)) or 0, b
            seen = without(batch, HIDDEN)
            logits = timer.time(lambda seen=seen: entry.predict(seen, modality), b)
            check_logits(logits, b, k, h, w)
            pred = logits.argmax(1).cpu()
            if probed is None:  # first batch: predictions must not depend on the labels the entry never saw
                probed = probe(lambda batch=batch: entry.predict(without(batch, HIDDEN), modality).argmax(1).cpu(),
                               lambda batch=batch: perturb_labels(batch, k, ignore), "test labels", first=pred)
            cms.append(confusion_matrix(pred, label, k, ignore_index=ignore, per_unit=True).numpy())
            bar.update(1)
    timings["predict_s"] = time.perf_counter() - t
    cm = np.concatenate(cms).astype(np.int64)
    metrics = score_confusions(cm, spec)
    throughput = {
        "infer_samples_per_s": timer.samples_per_second(),
        "train_samples_per_s": train_throughput(ctx.fit_log),
        "flops_per_sample": (flops / flops_batch) if flops else None,
    }
    return JobOutput(
        metrics=metrics,
        unit_stats={"confusion": cm, "unit_id": np.asarray(ids, dtype=str)},
        throughput=throughput,
        timings=timings,
        extra={"n_test_units": int(len(cm)), "fit_log": dict(ctx.fit_log), "hidden_truth_probe": probed},
    )
