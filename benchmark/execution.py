"""Execute one planned job, split between the job's process and the harness's process.

The job's process (:func:`serve_job`, in a child from ``benchmark.isolation``) loads the task and
the entry by name, trains, then answers prediction requests: the harness sends it test batches
without their truth, it sends back plain arrays. The harness's process (:func:`run_job`) holds the
truth and scores what comes back (the protocols' ``score``), so the job's process never loads the
test labels or hidden targets, and nothing it sends is more than numbers. With
``isolation="none"`` the same two halves run in one process (for debuggers).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import registry
from .contracts import BATCH_FIELDS, RunContext
from .curves import TENSORBOARD_ENV
from .isolation import Channel, JobEnded, Session
from .protocols import JobOutput, get_protocol
from .results import environment
from .throughput import parameter_count, peak_memory_mb, reset_peak_memory, train_throughput
from .training import seed_everything


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
    tensorboard: bool = False


@dataclass
class JobResult:
    """What one job produced."""

    output: JobOutput
    seconds: float
    peak_memory_mb: float | None
    peak_memory_kind: str
    parameters: int | None
    environment: dict[str, Any] = field(default_factory=dict)


_LOADED: dict[tuple, Any] = {}  # a process's loaded tasks and data, reused by the jobs it runs


def resolve_data(task: Any, data_root: Path | None, profile: str, show_progress: bool | None = None) -> tuple[Any, Any]:
    """``task.resolve_data``, passing the run's progress choice to the tasks that take it (a task's
    first use may generate its embedded dataset; older and third-party tasks lack the keyword)."""
    try:
        takes = "show_progress" in inspect.signature(task.resolve_data).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return task.resolve_data(data_root, profile, show_progress=show_progress)
    return task.resolve_data(data_root, profile)


def task_and_data(req: JobRequest) -> tuple[Any, Any]:
    key = (req.task, str(req.data_root), req.profile)
    if key not in _LOADED:
        task = registry.load_task(req.task)
        data, _ = resolve_data(task, req.data_root, req.profile, None if req.show_progress else False)
        _LOADED[key] = (task, data)
    return _LOADED[key]


def context(req: JobRequest, task: Any, data: Any, show_progress: bool | None = None) -> RunContext:
    cell = task.spec.cell(req.cell)
    info = dict(task.info(data, cell)) if hasattr(task, "info") else {}
    info.setdefault("recipe", req.recipe)  # entries may adapt to the views (e.g. cropped training samples)
    return RunContext(device=torch.device(req.device), seed=req.seed, profile=req.profile, hparams=dict(req.hparams),
                      checkpoint_dir=req.checkpoint_dir, cell=dict(cell.params), task_info=info, collate=getattr(task, "collate", None),
                      show_progress=req.show_progress if show_progress is None else show_progress)


# --------------------------------------------------------------------------- the job's process
class JobProcess:
    """The entry's side of a job: train, then predict label-free batches."""

    def __init__(self, req: JobRequest, loaded: tuple[Any, Any, type] | None = None):
        if req.threads:
            torch.set_num_threads(req.threads)
        if req.tensorboard:  # every fit of this job also writes TensorBoard events
            os.environ[TENSORBOARD_ENV] = "1"
        else:
            os.environ.pop(TENSORBOARD_ENV, None)
        logging.basicConfig(level=req.log_level, format="%(levelname)s %(name)s: %(message)s")
        if loaded is None:
            self.task, self.data = task_and_data(req)
            cls = registry.load_entry(req.entry)
        else:
            self.task, self.data, cls = loaded
        self.req = req
        self.cell = self.task.spec.cell(req.cell)
        self.ctx = context(req, self.task, self.data)
        self.protocol = get_protocol(self.task.spec.family)
        seed_everything(req.seed)
        reset_peak_memory(self.ctx.device)
        self.entry = cls()
        self.predictor: Any = None

    def train(self) -> dict[str, Any]:
        timings = self.protocol.train(self.task, self.data, self.cell, self.entry, self.ctx)
        self.predictor = self.protocol.Predictor(self.task, self.cell, self.entry, self.ctx)
        return {"timings": timings, "fit_log": dict(self.ctx.fit_log)}

    def predict(self, batch: dict[str, Any]) -> np.ndarray:
        with torch.inference_mode():
            return self.predictor(batch)

    def final(self) -> dict[str, Any]:
        peak, kind = peak_memory_mb(self.ctx.device)
        return {"stats": self.predictor.stats(), "peak_memory_mb": peak, "peak_memory_kind": kind,
                "parameters": parameter_count(self.entry), "environment": environment(self.req.device)}


def serve_job(req: JobRequest, channel: Channel) -> None:
    """Child process: train, answer every batch the harness sends with an array, then report."""
    job = JobProcess(req)
    channel.send("ready", job.train())
    while (batch := channel.recv()) is not None:
        channel.send("prediction", {}, job.predict(batch))
    channel.send("result", job.final())


# --------------------------------------------------------------------------- the harness's process
def _number(value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return kind(value)


def _count(value: Any) -> int | None:
    """A positive whole number the job reported (a batch size, a rank count), else None (unknown)."""
    number = _number(value, int)
    return number if number is not None and number >= 1 and number == value else None


def _inside(path: Any) -> str | None:
    """A path the job reports relative to its own folder, or None if it could point anywhere else."""
    if not isinstance(path, str) or not path or len(path) > 300:
        return None
    parts = Path(path).parts
    return path if not Path(path).is_absolute() and ".." not in parts else None


def fit_log_from(raw: Any) -> dict[str, dict[str, Any]]:
    """The training log a job reported, reduced to the numbers ``RunContext.record_fit`` writes."""
    out: dict[str, dict[str, Any]] = {}
    for stage, info in (raw or {}).items() if isinstance(raw, dict) else ():
        if isinstance(info, dict):
            out[str(stage)[:100]] = {"steps": _number(info.get("steps"), int) or 0, "resumed_from": _number(info.get("resumed_from"), int) or 0,
                                     "samples": _number(info.get("samples"), int) or 0, "seconds": _number(info.get("seconds")) or 0.0,
                                     "curve": _inside(info.get("curve")),
                                     **{key: _count(info.get(key)) for key in BATCH_FIELDS}}
    return out


def _result(out: JobOutput, ready: dict[str, Any], final: dict[str, Any], seconds: float) -> JobResult:
    fit_log = fit_log_from(ready.get("fit_log"))
    stats = final.get("stats") if isinstance(final.get("stats"), dict) else {}
    timings = {str(k)[:50]: _number(v) for k, v in (ready.get("timings") or {}).items()} if isinstance(ready.get("timings"), dict) else {}
    env = final.get("environment") if isinstance(final.get("environment"), dict) else {}
    out.throughput = {"infer_samples_per_s": _number(stats.get("infer_samples_per_s")), "train_samples_per_s": train_throughput(fit_log),
                      "flops_per_sample": _number(stats.get("flops_per_sample"))}
    out.timings = {**timings, **out.timings}
    out.extra = {**out.extra, "fit_log": fit_log}
    return JobResult(out, seconds, _number(final.get("peak_memory_mb")), str(final.get("peak_memory_kind", "?"))[:50],
                     _number(final.get("parameters"), int), env)


def train_only(req: JobRequest, loaded: tuple[Any, Any, type] | None = None) -> dict[str, Any]:
    """A non-zero rank's part of a job under torchrun: train in this process (DDP joins the ranks
    inside ``fit``) and report the training log; rank 0 alone predicts and is scored."""
    return JobProcess(req, loaded).train()


def run_job(req: JobRequest, isolated: bool, timeout: float | None = None, env: dict[str, str] | None = None,
            loaded: tuple[Any, Any, type] | None = None) -> JobResult:
    """One job from the harness's side: the entry trains and predicts in a job process (or here,
    when not ``isolated``), the harness scores. Raises :class:`JobEnded` or the scoring's errors."""
    start = time.perf_counter()
    task, data = (loaded[0], loaded[1]) if loaded is not None else task_and_data(req)
    cell = task.spec.cell(req.cell)
    scoring_ctx = context(req, task, data)
    protocol = get_protocol(task.spec.family)
    if not isolated:
        job = JobProcess(req, loaded)
        ready = job.train()
        out = protocol.score(task, data, cell, scoring_ctx, job.predict)
        return _result(out, ready, job.final(), time.perf_counter() - start)
    with Session(serve_job, req, timeout, env) as session:
        ready, _ = session.expect("ready")

        def predict(batch: dict[str, Any]) -> np.ndarray:
            session.send(batch)
            _, array = session.expect("prediction")
            if array is None:
                raise JobEnded("the job's process sent a prediction without an array")
            return array

        out = protocol.score(task, data, cell, scoring_ctx, predict)
        session.send(None)
        final, _ = session.expect("result")
    return _result(out, ready, final, time.perf_counter() - start)
