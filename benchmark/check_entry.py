"""``benchmark check-entry SPEC``: run an entry through a whole job of its family on a mock task.

It exercises exactly the code path of a real run (pre-training/fitting, fine-tuning, inference,
output validation, scoring) at the ``smoke`` profile, in seconds, and says what is wrong.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import registry
from .contracts import RunContext, profile_hparams
from .mock import MockReconstructionTask, MockSegmentationTask
from .protocols import get_protocol
from .throughput import parameter_count


@dataclass
class CheckReport:
    entry: str
    family: str
    ok: bool
    seconds: float
    message: str
    main_metric: float | None = None
    parameters: int | None = None


def check_entry(spec: str, device: str = "cpu", profile: str = "smoke", show_progress: bool = False) -> CheckReport:
    cls = registry.load_entry(spec)  # structural problems raise BenchmarkError with the reason
    meta = cls.metadata
    task = MockSegmentationTask() if meta.family == "segmentation" else MockReconstructionTask()
    data, _ = task.resolve_data(None, profile)
    cell = task.spec.cells[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check-entry-") as tmp:
        ctx = RunContext(device=torch.device(device), seed=0, profile=profile, hparams=profile_hparams(cls, profile),
                         checkpoint_dir=Path(tmp), cell=dict(cell.params), task_info=task.info(data, cell), collate=task.collate, show_progress=show_progress)
        try:
            entry = cls()
            out = get_protocol(meta.family)(task, data, cell, entry, ctx)
        except Exception as exc:  # noqa: BLE001 - the report is the product here
            return CheckReport(meta.name, meta.family, False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    main = out.metrics[task.spec.metric.name]["estimate"]
    return CheckReport(meta.name, meta.family, True, time.perf_counter() - start,
                       f"ran a full {meta.family} job on {task.spec.name} ({cell.name})", float(main), parameter_count(entry))
