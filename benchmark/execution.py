"""Execute one planned job: load what it names, train and score through the family protocol.

A :class:`JobRequest` is plain data (names, paths, numbers), so the same job runs in the harness's
process (``isolation="none"``) or in a child process (``benchmark.isolation``), where anything the
entry does (raise, exit, crash, hang) ends only that job. The result comes back as a
:class:`JobResult`; recording it is the runner's business.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import registry
from .contracts import RunContext
from .protocols import JobOutput, get_protocol
from .results import environment
from .throughput import parameter_count, peak_memory_mb, reset_peak_memory


@dataclass(frozen=True)
class JobRequest:
    """Everything a process needs to run one job, by name (picklable)."""

    task: str  # registered name or module:Class spec, as given to ``run``
    entry: str  # the entry spec as given to ``run``
    profile: str
    cell: str
    seed: int
    device: str
    data_root: Path | None
    hparams: dict[str, Any]
    recipe: dict[str, Any]
    checkpoint_dir: Path
    show_progress: bool = True
    threads: int | None = None  # torch intra-op threads of the harness, replicated in a child
    log_level: int = logging.WARNING


@dataclass
class JobResult:
    """What one job produced."""

    output: JobOutput
    seconds: float
    peak_memory_mb: float
    peak_memory_kind: str
    parameters: int | None
    environment: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_LOADED: dict[tuple, Any] = {}  # a process's loaded tasks and data, reused by the jobs it runs


def _task_and_data(req: JobRequest) -> tuple[Any, Any]:
    key = (req.task, str(req.data_root), req.profile)
    if key not in _LOADED:
        task = registry.load_task(req.task)
        data, _ = task.resolve_data(req.data_root, req.profile)
        _LOADED[key] = (task, data)
    return _LOADED[key]


def execute_job(req: JobRequest, loaded: tuple[Any, Any, type] | None = None) -> JobResult:
    """Run ``req``; ``loaded`` = (task, data, entry class) already in this process, else loaded by name."""
    if req.threads:
        torch.set_num_threads(req.threads)
    logging.basicConfig(level=req.log_level, format="%(levelname)s %(name)s: %(message)s")
    if loaded is None:
        task, data = _task_and_data(req)
        cls = registry.load_entry(req.entry)
    else:
        task, data, cls = loaded
    cell = task.spec.cell(req.cell)
    device = torch.device(req.device)
    info = dict(task.info(data, cell)) if hasattr(task, "info") else {}
    info.setdefault("recipe", req.recipe)  # entries may adapt to the views (e.g. cropped training samples)
    ctx = RunContext(device=device, seed=req.seed, profile=req.profile, hparams=dict(req.hparams), checkpoint_dir=req.checkpoint_dir,
                     cell=dict(cell.params), task_info=info, collate=getattr(task, "collate", None), show_progress=req.show_progress)
    seed_everything(req.seed)
    reset_peak_memory(device)
    start = time.perf_counter()
    entry = cls()
    out = get_protocol(task.spec.family)(task, data, cell, entry, ctx)
    peak, kind = peak_memory_mb(device)
    return JobResult(out, time.perf_counter() - start, peak, kind, parameter_count(entry), environment(req.device))
