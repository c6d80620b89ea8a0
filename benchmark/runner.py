"""Run jobs = (task, cell, entry, profile, seed); write one record per job; never lose others.

Three parts, one module each: the plan (``benchmark.plan``: which jobs, their configuration and
shared stages), execution (``benchmark.executors`` spreads jobs over this process, worker
processes or Slurm; ``benchmark.execution`` runs one job, in a child process by default:
``benchmark.isolation``) and recording (``benchmark.results``: atomic, resumable, nothing lost).
This module joins them: :func:`run_planned` executes one planned job and records it, wherever it
runs; :func:`run` plans, executes and returns the summaries. Under ``torchrun`` the plan runs on
every rank instead, rank 0 alone scoring and recording (``benchmark.ranked``).

A job that fails in any way (an entry raising, exiting, crashing, hanging past the per-job timeout,
returning a bad shape) is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import BenchmarkError
from .execution import JobResult, run_job
from .isolation import JobEnded, Outcome, describe
from .plan import (
    Loaded,
    PlannedJob,
    RunOptions,
    job_config,
    make_plan,
    plan_jobs,
    resolve_device,
    task_recipe,
)
from .ranks import launched_world_size
from .results import JobKey, ResultStore, environment, now_iso
from .tamper import ResultsGuard
from .training import seed_everything as seed_everything  # re-exported: entries' tests use it

log = logging.getLogger("benchmark")
__all__ = ["JobSummary", "job_config", "plan_jobs", "resolve_device", "run", "run_planned", "task_recipe"]


@dataclass
class JobSummary:
    key: JobKey
    status: str  # ok | failed | skipped
    path: Path
    message: str = ""
    seconds: float = 0.0


def run_planned(job: PlannedJob, loaded: Loaded | None = None, env: dict[str, str] | None = None,
                guard: ResultsGuard | None = None) -> JobSummary:
    """Execute one planned job (the entry in a job process unless its isolation is ``none``; the
    scoring here) and record it. ``env``: variables for the job's process (e.g. ``CUDA_VISIBLE_DEVICES``);
    ``guard``: restores other records the job changed, and fails the job for it."""
    record = started_record(job, launched_world_size())
    done = attempt_job(job, loaded, env, guard, time.perf_counter())
    return record_failure(job, done, record) if isinstance(done, Outcome) else record_result(job, done, record)


def started_record(job: PlannedJob, world_size: int) -> dict[str, Any]:
    """The job's record as it starts: the plan's part, the start time, and the ranks it runs on."""
    return {**job.record, "started": now_iso(), "execution": {**job.record.get("execution", {}), "world_size": world_size}}


def attempt_job(job: PlannedJob, loaded: Loaded | None, env: dict[str, str] | None, guard: ResultsGuard | None,
             start: float) -> JobResult | Outcome:
    """Run and score the job: its result, or the :class:`Outcome` saying why it has none."""
    objects = None if loaded is None else (loaded.task, loaded.data, loaded.entries[job.key.entry].cls)
    before = guard.snapshot() if guard is not None else None
    try:
        result = run_job(job.request, job.isolation == "process", job.timeout, env, objects)
        tampered = guard.restore(before) if guard is not None and before is not None else []
        if tampered:
            raise JobEnded(f"the job changed {len(tampered)} file(s) of the results folder outside its checkpoint folder: "
                           f"{'; '.join(tampered[:3])}{' ...' if len(tampered) > 3 else ''}")
    except JobEnded as exc:
        return Outcome(False, error=exc.error, traceback=exc.traceback, seconds=time.perf_counter() - start, timed_out=exc.timed_out)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a bad prediction (or, in process, anything the entry does) ends the job only
        return Outcome(False, error=describe(exc), traceback=traceback.format_exc(), seconds=time.perf_counter() - start)
    return result


def record_result(job: PlannedJob, result: JobResult, record: dict[str, Any]) -> JobSummary:
    out = result.output
    env = job_environment(job.request.device, result.environment)
    throughput = {**out.throughput, "peak_memory_mb": result.peak_memory_mb, "peak_memory_kind": result.peak_memory_kind,
                  "parameters": result.parameters, "device": job.request.device, "device_name": env.get("device_name")}
    record.update(status="ok", environment=env, metrics=out.metrics, throughput=throughput, timings=out.timings,
                  training=_training(job, out.extra.get("fit_log") or {}), extra=out.extra, wall_time_s=result.seconds, finished=now_iso())
    try:
        where, note = ResultStore(job.results_dir).write(job.key, record, out.unit_stats)
    except (BenchmarkError, OSError) as exc:  # e.g. a folder where the record goes: this job only
        return JobSummary(job.key, "failed", ResultStore(job.results_dir).record_path(job.key), f"not recorded: {exc}", result.seconds)
    return JobSummary(job.key, "ok", where, note, result.seconds)


# What only the job's process can know (its accelerator, threads and load); the rest of the
# environment (commit, versions, host, CPU) is the harness's own, so an entry cannot forge it.
_JOB_FACTS = {"device_name": str, "cuda": str, "cudnn": int, "torch_threads": int, "load_avg_1m": float, "gpus": list}


def job_environment(device: str, reported: dict[str, Any]) -> dict[str, Any]:
    """The record's environment: the harness's facts, plus the job process's device facts, type-checked."""
    env = environment(device, probe_device=False)
    for key, kind in _JOB_FACTS.items():
        value = reported.get(key)
        if kind is list:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                env[key] = [v[:200] for v in value[:64]]
        elif kind is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                env[key] = float(value)
        elif isinstance(value, kind) and not isinstance(value, bool):
            env[key] = value[:200] if isinstance(value, str) else value
        elif value is None and key in ("cuda", "cudnn"):
            env[key] = None
    return env


def _training(job: PlannedJob, fit_log: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each training stage's steps, samples, seconds and its curve file, relative to the results folder."""
    out = {}
    for stage, info in fit_log.items():
        curve = info.get("curve")
        if curve:
            path = Path(job.request.checkpoint_dir) / curve
            try:
                curve = path.relative_to(job.results_dir).as_posix()
            except ValueError:
                curve = str(path)
        out[stage] = {**info, "curve": curve}
    return out


def record_failure(job: PlannedJob, outcome: Outcome, record: dict[str, Any] | None = None) -> JobSummary:
    """Record a job that ended without a result (never over an ok record: see ``ResultStore.write``)."""
    record = {**(record or started_record(job, launched_world_size()))}
    record.update(status="failed", error=outcome.error, traceback=outcome.traceback, timed_out=outcome.timed_out,
                  environment=environment(job.request.device, probe_device=False), wall_time_s=outcome.seconds, finished=now_iso())
    try:
        where, note = ResultStore(job.results_dir).write(job.key, record, None)
    except (BenchmarkError, OSError) as exc:
        where, note = ResultStore(job.results_dir).record_path(job.key), f"not recorded: {exc}"
    return JobSummary(job.key, "failed", where, outcome.error + (f" ({note})" if note else ""), outcome.seconds)


def run(task_name: str, entry_names: Sequence[str] | None = None, *, executor: Any = None, **options: Any) -> list[JobSummary]:
    """Run every (cell, entry, seed) job of a task and return one summary per job (plan order).

    ``options`` are :class:`benchmark.plan.RunOptions` fields (profile, seeds, data_root, device,
    resume, results_dir, cells, tables, show_progress, isolation, job_timeout); ``executor`` is a
    :mod:`benchmark.executors` executor (default: one job after another, here).
    ``seeds`` defaults to the task's seeds for the profile (3 at mini and paper, 1 at smoke).
    """
    from .executors import LocalExecutor
    from .ranked import on_ranks, ranks_of  # it builds on this module

    plan, loaded = make_plan(RunOptions(task=task_name, entries=entry_names, **options))
    ranks = ranks_of(plan)
    summaries = {}
    for job in plan.jobs:
        if job.key in plan.done:
            log.info("skip %s (done)", job.describe())
            summaries[job.key] = JobSummary(job.key, "skipped", ResultStore(job.results_dir).record_path(job.key), "already done")
    jobs = on_ranks(plan, loaded, ranks, executor) if ranks is not None else (executor or LocalExecutor()).run(plan, loaded)
    for summary in jobs:
        summaries[summary.key] = summary
    return [summaries[j.key] for j in plan.jobs if j.key in summaries]


def one_job(opts: RunOptions, index: int) -> JobSummary:
    """``run --job-index I``: plan as ``run`` would and run job ``I`` of the plan, done or not."""
    from .ranked import ranks_of, run_on_ranks

    plan, loaded = make_plan(replace(opts, resume=False))
    if not 0 <= index < len(plan.jobs):
        raise BenchmarkError(f"--job-index {index} is out of range: the plan has {len(plan.jobs)} job(s) (0..{len(plan.jobs) - 1}); see --list-jobs")
    ranks = ranks_of(plan)
    if ranks is not None:
        return run_on_ranks(plan.jobs[index], loaded, ranks, f"{ranks.new_run()}job-index-{index}")
    return run_planned(plan.jobs[index], loaded)
