"""``benchmark check-entry SPEC``: run an entry through a whole job of its family on a mock task.

It exercises the code path of a real run (pre-training/fitting, fine-tuning, inference, output
validation, scoring) at the ``smoke`` profile, in seconds, and says what is wrong. Then it probes
honesty. The mock task lives in the entry's process, truth included (a real job's process never
holds the test truth), so the probe changes that truth (every test label moved to another class;
the hidden target values replaced) and has the entry predict the whole test set again. An honest
entry cannot tell; an entry whose predictions move towards the changed truth has found it some
other way (the heap, the files) and fails. Everything runs in a child process, so an entry that
exits or crashes fails the check instead of ending it; the report comes back as JSON.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import registry
from .contracts import profile_hparams
from .execution import JobProcess, JobRequest
from .guard import without
from .isolation import run_isolated
from .mock import MockReconstructionTask, MockSegmentationTask
from .protocols import get_protocol
from .protocols import reconstruction as rec_protocol
from .protocols import segmentation as seg_protocol

CHECK_TIMEOUT_S = 1800.0


@dataclass
class CheckReport:
    entry: str
    family: str
    ok: bool
    seconds: float
    message: str
    main_metric: float | None = None
    parameters: int | None = None
    warnings: list[str] = field(default_factory=list)


def _pass(task: Any, data: Any, cell: Any, ctx: Any, predict: Callable[[dict[str, Any]], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, truth) over the whole test set, batch by batch, given what a real job gets."""
    preds, truth = [], []
    with torch.inference_mode():
        if task.spec.family == "segmentation":
            for batch in seg_protocol._loader(task.labeled(data, "test", cell, ctx), task, 4):
                preds.append(predict(without(batch, seg_protocol.HIDDEN)).reshape(-1))
                truth.append(batch["label"].numpy().reshape(-1))
        else:
            loader = torch.utils.data.DataLoader(task.windows(data, "test", cell, ctx), batch_size=8, shuffle=False, collate_fn=task.collate)
            for batch in loader:
                preds.append(predict(without(task.inputs(batch), rec_protocol.HIDDEN)).mean(0).reshape(-1))
                truth.append(task.target(batch).numpy().reshape(-1))
    return np.concatenate(preds), np.concatenate(truth)


def hidden_truth_probe(task: Any, data: Any, cell: Any, ctx: Any, predict: Callable[[dict[str, Any]], np.ndarray]) -> tuple[bool, str]:
    """(passed, what was found). Predictions must not move towards a changed truth more than two
    identical passes differ from each other."""
    first, _ = _pass(task, data, cell, ctx, predict)
    second, _ = _pass(task, data, cell, ctx, predict)
    task.perturb_hidden(data, seed=1234)
    third, changed = _pass(task, data, cell, ctx, predict)
    if task.spec.family == "segmentation":
        valid = changed != task.spec.metric.ignore_index
        before, after = float((first[valid] == changed[valid]).mean()), float((third[valid] == changed[valid]).mean())
        noise = float((first != second).mean())
        moved = after - before > max(0.05, 3 * noise)
        what, detail = "test labels", f"agreement with the changed labels {100 * before:.1f} % -> {100 * after:.1f} %"
    else:
        ok = np.isfinite(changed)
        before, after = float(((first - changed)[ok] ** 2).mean()), float(((third - changed)[ok] ** 2).mean())
        noise = float(((first - second) ** 2).mean())
        moved = before - after > max(0.1 * before, 3 * noise)
        what, detail = "hidden target values", f"squared error to the changed targets {before:.3g} -> {after:.3g}"
    if moved:
        return False, (f"predictions follow the {what} when the harness changes them ({detail}), though the entry is never "
                       "given them: it reads them some other way (the interpreter's heap, the dataset's files)")
    note = "" if noise == 0 else f" (two identical passes differ: {noise:.3g})"
    return True, f"hidden-truth probe passed{note}"


def _check(arg: tuple[str, str, str]) -> dict[str, Any]:
    spec, device, profile = arg
    cls = registry.load_entry(spec)  # structural problems raise BenchmarkError with the reason
    meta = cls.metadata
    task = MockSegmentationTask() if meta.family == "segmentation" else MockReconstructionTask()
    data, _ = task.resolve_data(None, profile)
    cell = task.spec.cells[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="job-") as tmp:
        req = JobRequest(task=f"benchmark.mock:{type(task).__name__}", entry=spec, profile=profile, cell=cell.name, seed=0, device=device,
                         data_root=None, hparams=profile_hparams(cls, profile), recipe={}, checkpoint_dir=Path(tmp), show_progress=False)
        try:
            job = JobProcess(req, (task, data, cls))
            job.train()
            out = get_protocol(meta.family).score(task, data, cell, job.ctx, job.predict)
            honest, probe = hidden_truth_probe(task, data, cell, job.ctx, job.predict)
            parameters = job.final()["parameters"]
        except Exception as exc:  # noqa: BLE001 - the report is the product here
            return dataclasses.asdict(CheckReport(meta.name, meta.family, False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"))
    seconds = time.perf_counter() - start
    if not honest:
        return dataclasses.asdict(CheckReport(meta.name, meta.family, False, seconds, probe))
    main = out.metrics[task.spec.metric.name]["estimate"]
    warnings = [] if probe == "hidden-truth probe passed" else [probe]
    return dataclasses.asdict(CheckReport(meta.name, meta.family, True, seconds, f"ran a full {meta.family} job on {task.spec.name} ({cell.name}); "
                                          "hidden-truth probe passed", float(main), parameters, warnings))


def check_entry(spec: str, device: str = "cpu", profile: str = "smoke", show_progress: bool = False) -> CheckReport:
    """Check ``spec`` in a child process (structural errors raise ``BenchmarkError`` here first)."""
    cls = registry.load_entry(spec)
    del show_progress  # the check is quiet: its report is the output
    outcome = run_isolated(_check, (spec, device, profile), CHECK_TIMEOUT_S)
    if not outcome.ok:
        return CheckReport(cls.metadata.name, cls.metadata.family, False, outcome.seconds, outcome.error)
    rep = outcome.value
    try:  # the child's report is JSON; rebuild it field by field (nothing else is accepted)
        return CheckReport(cls.metadata.name, cls.metadata.family, bool(rep["ok"]), float(rep["seconds"]), str(rep["message"]),
                           None if rep.get("main_metric") is None else float(rep["main_metric"]),
                           None if rep.get("parameters") is None else int(rep["parameters"]), [str(w) for w in rep.get("warnings", [])])
    except (KeyError, TypeError, ValueError):
        return CheckReport(cls.metadata.name, cls.metadata.family, False, outcome.seconds, "the check's process sent a malformed report")
