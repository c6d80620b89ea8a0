"""``benchmark check-entry SPEC``: run an entry through a whole job of its family on a mock task.

It exercises exactly the code path of a real run (pre-training/fitting, fine-tuning, inference,
output validation, scoring) at the ``smoke`` profile, in seconds, and says what is wrong. Then it
probes honesty: the entry predicts the test set again after the harness changed the hidden truth
(test labels, hidden target values) that the entry is never given. An honest entry's predictions
cannot change; an entry whose predictions do change has found the truth some other way (the heap,
the files) and fails. Everything runs in a child process, so an entry that exits or crashes
fails the check instead of ending it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import registry
from .contracts import RunContext, profile_hparams
from .guard import without
from .isolation import run_isolated
from .mock import MockReconstructionTask, MockSegmentationTask
from .protocols import get_protocol
from .protocols import reconstruction as rec_protocol
from .protocols import segmentation as seg_protocol
from .throughput import parameter_count

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


def _predictions(task: Any, data: Any, cell: Any, entry: Any, ctx: RunContext) -> list[torch.Tensor]:
    """The entry's test predictions, given exactly what a real job gives it."""
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        if task.spec.family == "segmentation":
            modality = cell.params["modality"]
            loader = seg_protocol._loader(task.labeled(data, "test", cell, ctx), task, 4)
            for batch in loader:  # the harness's batch (with labels) is alive while the entry predicts
                out.append(entry.predict(without(batch, seg_protocol.HIDDEN), modality).argmax(1).cpu())
        else:
            members = int(task.spec.metric.ensemble_size or 1)
            loader = torch.utils.data.DataLoader(task.windows(data, "test", cell, ctx), batch_size=8, shuffle=False, collate_fn=task.collate)
            for batch in loader:
                seen = without(task.inputs(batch), rec_protocol.HIDDEN)
                out.append(entry.sample(seen, members, torch.Generator().manual_seed(0)).float().cpu())
    return out


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(torch.nan_to_num(x), torch.nan_to_num(y)) for x, y in zip(a, b, strict=True))


def hidden_truth_probe(task: Any, data: Any, cell: Any, entry: Any, ctx: RunContext) -> tuple[bool, str]:
    """(passed, what was found): predictions before and after the hidden truth changes."""
    first = _predictions(task, data, cell, entry, ctx)
    if not _same(first, _predictions(task, data, cell, entry, ctx)):
        return True, "hidden-truth probe not run: predictions differ between two identical passes (non-deterministic predict)"
    task.perturb_hidden(data, seed=1234)
    if not _same(first, _predictions(task, data, cell, entry, ctx)):
        what = "test labels" if task.spec.family == "segmentation" else "hidden target values"
        return False, (f"predictions change when the harness changes the {what}, which the entry is never given: "
                       "it reads them some other way (the interpreter's heap, the dataset's files)")
    return True, "hidden-truth probe passed"


def _check(arg: tuple[str, str, str]) -> CheckReport:
    spec, device, profile = arg
    cls = registry.load_entry(spec)  # structural problems raise BenchmarkError with the reason
    meta = cls.metadata
    task = MockSegmentationTask() if meta.family == "segmentation" else MockReconstructionTask()
    data, _ = task.resolve_data(None, profile)
    cell = task.spec.cells[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check-entry-") as tmp:
        ctx = RunContext(device=torch.device(device), seed=0, profile=profile, hparams=profile_hparams(cls, profile),
                         checkpoint_dir=Path(tmp), cell=dict(cell.params), task_info=task.info(data, cell), collate=task.collate, show_progress=False)
        try:
            entry = cls()
            out = get_protocol(meta.family)(task, data, cell, entry, ctx)
            honest, probe = hidden_truth_probe(task, data, cell, entry, ctx)
        except Exception as exc:  # noqa: BLE001 - the report is the product here
            return CheckReport(meta.name, meta.family, False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    if not honest:
        return CheckReport(meta.name, meta.family, False, seconds, probe)
    main = out.metrics[task.spec.metric.name]["estimate"]
    warnings = [] if probe.endswith("passed") else [probe]
    return CheckReport(meta.name, meta.family, True, seconds, f"ran a full {meta.family} job on {task.spec.name} ({cell.name}); {probe}",
                       float(main), parameter_count(entry), warnings)


def check_entry(spec: str, device: str = "cpu", profile: str = "smoke", show_progress: bool = False) -> CheckReport:
    """Check ``spec`` in a child process (structural errors raise ``BenchmarkError`` here first)."""
    cls = registry.load_entry(spec)
    del show_progress  # the check is quiet: its report is the output
    outcome = run_isolated(_check, (spec, device, profile), CHECK_TIMEOUT_S)
    if outcome.ok:
        return outcome.value
    return CheckReport(cls.metadata.name, cls.metadata.family, False, outcome.seconds, outcome.error)
