"""Run jobs = (task, cell, entry, profile, seed); write one record per job; never lose others.

Plan (``plan_jobs``, ``job_config``), execution (``benchmark.execution``, in a child process by
default: ``benchmark.isolation``) and recording (``benchmark.results``) are separate. A job that
fails in any way (an entry raising, exiting, crashing, hanging past the per-job timeout, returning
a bad shape) is recorded with its reason and the run goes on. ``resume=True`` skips jobs whose
record exists with the same configuration hash.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import registry
from .contracts import JOB_TIMEOUT_S, Cell, TaskSpec, profile_hparams
from .errors import BenchmarkError
from .execution import JobRequest, JobResult, execute_job
from .execution import seed_everything as seed_everything  # re-exported: entries' tests use it
from .isolation import Outcome, run_isolated
from .results import SCHEMA_VERSION, JobKey, ResultStore, config_hash, environment, now_iso

log = logging.getLogger("benchmark")


@dataclass
class JobSummary:
    key: JobKey
    status: str  # ok | failed | skipped
    path: Path
    message: str = ""


SUPPORTED_DEVICES = ("cpu", "cuda")
ISOLATION = ("process", "none")


def resolve_device(name: str | None) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:k``; anything else is refused before any job runs."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchmarkError(f"invalid --device {name!r}; use auto, cpu, cuda or cuda:K") from None
    if device.type not in SUPPORTED_DEVICES:
        raise BenchmarkError(f"--device {name!r} is not supported (jobs run on {', '.join(SUPPORTED_DEVICES)}); use auto, cpu, cuda or cuda:K")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchmarkError("--device cuda requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchmarkError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def task_recipe(task: Any, profile: str) -> dict[str, Any]:
    """What a task does to its data at ``profile`` (views, crops, loss weights): part of every
    job's configuration, so changing it never lets ``--resume`` or a shared checkpoint reuse
    results made under the old recipe."""
    recipe = getattr(task, "recipe", None)
    return dict(recipe(profile)) if callable(recipe) else {}


def job_config(spec: TaskSpec, cell: Cell, entry_cls: type, profile: str, seed: int, hparams: dict[str, Any], data_identity: dict[str, Any],
               recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines a job's result; its hash keys ``--resume``."""
    return {
        "task": {"name": spec.name, "version": spec.version, "metric": dataclasses.asdict(spec.metric), "bootstrap": dataclasses.asdict(spec.bootstrap),
                 "splits": dict(spec.split_files), "recipe": recipe or {}},
        "cell": cell.to_dict(),
        "entry": entry_cls.metadata.to_dict(),
        "profile": profile,
        "seed": seed,
        "hparams": hparams,
        "data": data_identity,
    }


def plan_jobs(spec: TaskSpec, entries: Sequence[str], cells: Sequence[str] | None, tables: Sequence[str] | None) -> list[tuple[str, Cell]]:
    """(entry, cell) pairs to run: the union over the chosen tables of their cells × entries.

    A table that lists its entries (an ablation) contributes only those; ``--entry`` narrows
    the jobs to the given entries; ``--cell`` runs exactly the given cells for every entry.
    """
    specs = spec.table_specs()
    if tables:
        unknown = sorted(set(tables) - set(specs))
        if unknown:
            raise BenchmarkError(f"task {spec.name!r} has no table(s) {unknown}; tables: {', '.join(specs)}")
        specs = {k: v for k, v in specs.items() if k in tables}
    if cells:
        names = {c.name for c in spec.cells}
        unknown = [c for c in cells if c not in names]
        if unknown:
            raise BenchmarkError(f"task {spec.name!r} has no cell(s) {unknown}; cells: {', '.join(sorted(names))}")
    pairs: list[tuple[str, Cell]] = []
    for entry in entries:
        for cell in spec.cells:
            if cells and cell.name not in cells:
                continue
            in_table = any(cell.name in t.cells and (not t.entries or entry in t.entries) for t in specs.values())
            if in_table or cells:
                pairs.append((entry, cell))
    return pairs


def _entries(names: Sequence[str], family: str, profile: str) -> dict[str, registry.ResolvedEntry]:
    """Resolve every entry and fix its identity; two entries claiming one name is an error naming both."""
    out: dict[str, registry.ResolvedEntry] = {}
    for name in names:
        resolved = registry.resolve_entry(name)
        if resolved.cls.metadata.family != family:
            raise BenchmarkError(f"entry {name!r} is a {resolved.cls.metadata.family} entry; this task needs {family}")
        profile_hparams(resolved.cls, profile)  # fails early, naming the profiles the entry has
        if resolved.name in out:
            if out[resolved.name].cls is resolved.cls:
                continue  # the same entry given twice
            raise BenchmarkError(f"two entries are named {resolved.name!r}: {out[resolved.name].source} and {resolved.source}; "
                                 "records are kept by name, so give one of them another metadata.name")
        out[resolved.name] = resolved
    return out


def default_isolation() -> str:
    """Child processes per job, except under torchrun (each rank is already its own process and
    holds the process group)."""
    return "none" if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else "process"


def run(
    task_name: str,
    entry_names: Sequence[str] | None = None,
    *,
    profile: str = "mini",
    seeds: Sequence[int] | None = None,
    data_root: Path | None = None,
    device: str | None = None,
    resume: bool = False,
    results_dir: Path = Path("results"),
    cells: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
    show_progress: bool = True,
    isolation: str | None = None,
    job_timeout: float | None = None,
) -> list[JobSummary]:
    """Run every (cell, entry, seed) job of a task and return one summary per job.

    ``seeds`` defaults to the task's seeds for ``profile`` (``TaskSpec.seeds``: 3 at mini and
    paper, 1 at smoke): tables average them and put their spread into the intervals.
    ``isolation="process"`` (the default) runs each job in a child process with ``job_timeout``
    seconds (default: ``JOB_TIMEOUT_S[profile]``; 0 = none); ``"none"`` runs jobs in this process
    (debuggers, torchrun).
    """
    task = registry.load_task(task_name)
    spec: TaskSpec = task.spec
    seeds = list(seeds) if seeds is not None else spec.default_seeds(profile)
    bad = [s for s in seeds if not 0 <= int(s) < 2**31]
    if bad:
        raise BenchmarkError(f"seeds must be integers in [0, 2^31), got {bad}")
    isolation = isolation or default_isolation()
    if isolation not in ISOLATION:
        raise BenchmarkError(f"isolation must be one of {', '.join(ISOLATION)}, got {isolation!r}")
    timeout = JOB_TIMEOUT_S.get(profile) if job_timeout is None else (job_timeout or None)
    if timeout is not None and timeout <= 0:
        raise BenchmarkError(f"the job timeout must be positive (0 = none), got {job_timeout}")
    if timeout and isolation == "none":
        log.info("jobs run in this process: the per-job timeout cannot be enforced")
    names = list(entry_names) if entry_names else registry.entries_of_family(spec.family)
    if not names:
        raise BenchmarkError(f"no entries of family {spec.family!r} are registered; give --entry module:Class or file.py:Class")
    entries = _entries(names, spec.family, profile)
    dev = resolve_device(device)
    data, identity = task.resolve_data(data_root, profile)
    identity_dict = dataclasses.asdict(identity)
    log.info("task %s: %s data at %s", spec.name, identity.kind, identity.root)
    store = ResultStore(results_dir)
    jobs = plan_jobs(spec, list(entries), cells, tables)
    if not jobs:
        raise BenchmarkError("nothing to run: no (entry, cell) pair matches the chosen tables, cells and entries")
    setting = _Setting(task_name, task, data, identity_dict, profile, dev, store, resume, show_progress, data_root, isolation, timeout)
    summaries: list[JobSummary] = []
    total = len(seeds) * len(jobs)
    for seed in seeds:
        for entry_name, cell in jobs:
            summary = _run_job(setting, entries[entry_name], cell, seed)
            summaries.append(summary)
            if summary.status == "failed":
                log.error("job %d/%d %s/%s/%s seed %d failed: %s", len(summaries), total, spec.name, entry_name, cell.name, seed, summary.message)
    return summaries


@dataclass
class _Setting:
    """What every job of one ``run`` shares."""

    task_name: str
    task: Any
    data: Any
    identity: dict[str, Any]
    profile: str
    device: torch.device
    store: ResultStore
    resume: bool
    show_progress: bool
    data_root: Path | None
    isolation: str
    timeout: float | None


def _run_job(s: _Setting, entry: registry.ResolvedEntry, cell: Cell, seed: int) -> JobSummary:
    spec: TaskSpec = s.task.spec
    cls = entry.cls
    key = JobKey(spec.name, s.profile, entry.name, cell.name, seed)
    hparams = {**profile_hparams(cls, s.profile), **dict(cell.params.get("hparams", {}))}
    recipe = task_recipe(s.task, s.profile)
    cfg = job_config(spec, cell, cls, s.profile, seed, hparams, s.identity, recipe)
    cfg_hash = config_hash(cfg)
    path = s.store.record_path(key)
    if s.resume and s.store.is_done(key, cfg_hash):
        log.info("skip %s/%s/%s seed %d (done)", spec.name, entry.name, cell.name, seed)
        return JobSummary(key, "skipped", path, "already done")
    # Shared stages (one pre-training for several cells) live under a hash of what determines them,
    # so a changed profile or dataset never resumes from a stale checkpoint.
    work_key = config_hash({"entry": cls.metadata.to_dict(), "hparams": hparams, "data": s.identity, "task": [spec.name, spec.version], "recipe": recipe})
    request = JobRequest(task=s.task_name, entry=entry.spec, profile=s.profile, cell=cell.name, seed=seed, device=str(s.device),
                         data_root=s.data_root, hparams=hparams, recipe=recipe, checkpoint_dir=s.store.work_dir(key) / work_key,
                         show_progress=s.show_progress, threads=torch.get_num_threads(), log_level=logging.getLogger().getEffectiveLevel())
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "task": {"name": spec.name, "version": spec.version, "family": spec.family, "recipe": recipe},
        "cell": cell.to_dict(),
        "entry": cls.metadata.to_dict(),
        "entry_source": entry.provenance(),
        "profile": s.profile,
        "seed": seed,
        "hparams": hparams,
        "config_hash": cfg_hash,
        "data": s.identity,
        "execution": {"isolation": s.isolation, "timeout_s": s.timeout},
        "started": now_iso(),
    }
    if s.isolation == "process":
        outcome = run_isolated(execute_job, request, s.timeout)
    else:
        outcome = _in_process(request, (s.task, s.data, cls))
    if not outcome.ok:
        record.update(status="failed", error=outcome.error, traceback=outcome.traceback, timed_out=outcome.timed_out,
                      environment=environment(str(s.device), probe_device=False), wall_time_s=outcome.seconds, finished=now_iso())
        where, note = s.store.write(key, record, None)
        return JobSummary(key, "failed", where, outcome.error + (f" ({note})" if note else ""))
    result: JobResult = outcome.value
    out = result.output
    throughput = {**out.throughput, "peak_memory_mb": result.peak_memory_mb, "peak_memory_kind": result.peak_memory_kind,
                  "parameters": result.parameters, "device": str(s.device), "device_name": result.environment.get("device_name")}
    record.update(status="ok", environment=result.environment, metrics=out.metrics, throughput=throughput, timings=out.timings,
                  extra=out.extra, wall_time_s=outcome.seconds, finished=now_iso())
    where, note = s.store.write(key, record, out.unit_stats)
    if note:
        log.info("%s/%s seed %d: %s", entry.name, cell.name, seed, note)
    return JobSummary(key, "ok", where, note)


def _in_process(request: JobRequest, loaded: tuple[Any, Any, type]) -> Outcome:
    """The job in this process: exceptions (SystemExit and interrupts raised by the entry too)
    end the job only; the user's Ctrl-C cannot be told apart here and stops the run."""
    import time
    import traceback

    from .isolation import describe

    start = time.perf_counter()
    try:
        return Outcome(True, value=execute_job(request, loaded), seconds=time.perf_counter() - start)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - one failing job must not stop the others
        return Outcome(False, error=describe(exc), traceback=traceback.format_exc(), seconds=time.perf_counter() - start)
