"""Segmentation protocol: pre-train (shared between cells), fine-tune, predict, mIoU with CIs.

Three parts, split between two processes. :func:`train` and :class:`Predictor` run in the job's
process, with the entry; :func:`score` runs in the harness's process, which holds the test labels,
feeds the job process test batches without them, gets back plain class maps (``.npy``, through
``benchmark.wire``) and scores those. The job's process never loads the test labels.

Units of the bootstrap are test patches: per-patch confusion matrices are the sufficient
statistics, so any interval or paired comparison can be recomputed from the stored ``.npz``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..contracts import Cell, RunContext, TaskSpec
from ..errors import EntryOutputError
from ..guard import EntryView, without
from ..loading import eval_loader_kwargs
from ..locks import stage_lock
from ..metrics import confusion_matrix
from ..scoring import check_defined, score_job
from ..throughput import Timer, count_flops
from ..validation import check_logits, plain_numpy
from . import JobOutput, stage_keys

HIDDEN = ("label",)  # what a segmentation entry never sees at pre-training or prediction time


def _loader(dataset: Any, task: Any, batch_size: int, ctx: RunContext | None = None) -> torch.utils.data.DataLoader:
    """The test loader, in order; workers / pinning / prefetch per ``ctx``'s device and ``eval_*``
    hparams (no ``ctx``: one process)."""
    settings = eval_loader_kwargs(ctx.hparams, ctx.device) if ctx is not None else eval_loader_kwargs(None, "cpu")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=getattr(task, "collate", None),
                                       **settings)


def score_confusions(cms: np.ndarray, spec: TaskSpec) -> dict[str, dict[str, Any]]:
    """mIoU and overall accuracy with headline intervals from per-unit confusion matrices [N, K, K]."""
    metrics = score_job(spec, {"confusion": cms})
    check_defined(spec, metrics)
    return metrics


def train(task: Any, data: Any, cell: Cell, entry: Any, ctx: RunContext) -> dict[str, float]:
    """Pre-train (a stage other cells share: built once, under a lock) and fine-tune; job process."""
    stages = stage_keys("segmentation", cell)
    timings = {}
    t = time.perf_counter()
    pre = ctx.stage(stages["pretrain"])
    with stage_lock(pre.checkpoint_dir):
        entry.pretrain(EntryView(task.unlabeled(data, cell, ctx), hidden=HIDDEN), pre)
    timings["pretrain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    fine = ctx.stage(stages["finetune"])
    with stage_lock(fine.checkpoint_dir):
        entry.finetune(EntryView(task.labeled(data, "train", cell, ctx)), cell.params["modality"], fine)
    timings["finetune_s"] = time.perf_counter() - t
    return timings


class Predictor:
    """Job process: the entry's class map of one label-free test batch, as a plain int16 array."""

    def __init__(self, task: Any, cell: Cell, entry: Any, ctx: RunContext):
        self.entry, self.modality = entry, cell.params["modality"]
        self.k = task.spec.metric.num_classes
        self.timer = Timer(ctx.device, warmup=1)
        self.flops: int | None = None
        self.flops_batch = 1

    def __call__(self, batch: dict[str, Any]) -> np.ndarray:
        b, _, _, h, w = batch[self.modality].shape
        if self.flops is None:
            self.flops, self.flops_batch = count_flops(lambda: self.entry.predict(without(batch, ()), self.modality)) or 0, b
        logits = self.timer.time(lambda: self.entry.predict(batch, self.modality), b)
        logits = check_logits(plain_numpy("predict", logits), b, self.k, h, w)
        return logits.argmax(1).astype(np.int16)

    def stats(self) -> dict[str, Any]:
        return {"infer_samples_per_s": self.timer.samples_per_second(),
                "flops_per_sample": (self.flops / self.flops_batch) if self.flops else None}


def score(task: Any, data: Any, cell: Cell, ctx: RunContext, predict: Callable[[dict[str, Any]], np.ndarray]) -> JobOutput:
    """Harness process: every test batch, without its labels, through ``predict``; mIoU from the
    class maps that come back (checked: shape, classes)."""
    spec: TaskSpec = task.spec
    k, ignore = spec.metric.num_classes, spec.metric.ignore_index
    loader = _loader(task.labeled(data, "test", cell, ctx), task, int(ctx.hparams.get("eval_batch_size", 4)), ctx)
    cms, ids = [], []
    t = time.perf_counter()
    with torch.inference_mode(), ctx.progress(len(loader), f"predict {cell.name}") as bar:
        for batch in loader:
            label = batch["label"]
            b, h, w = label.shape
            ids.extend(str(i) for i in batch.get("id", range(len(ids), len(ids) + b)))
            pred = np.asarray(predict(without(batch, HIDDEN)))
            if pred.shape != (b, h, w) or pred.dtype.kind not in "iu":
                raise EntryOutputError(f"predict: the job returned a class map of shape {pred.shape} ({pred.dtype}), expected {(b, h, w)} integers")
            if pred.size and (pred.min() < 0 or pred.max() >= k):
                raise EntryOutputError(f"predict: class indices outside [0, {k})")
            cms.append(confusion_matrix(torch.from_numpy(pred.astype(np.int64)), label, k, ignore_index=ignore, per_unit=True).numpy())
            bar.update(1)
    cm = np.concatenate(cms).astype(np.int64)
    return JobOutput(metrics=score_confusions(cm, spec), unit_stats={"confusion": cm, "unit_id": np.asarray(ids, dtype=str)},
                     timings={"predict_s": time.perf_counter() - t}, extra={"n_test_units": int(len(cm))})
