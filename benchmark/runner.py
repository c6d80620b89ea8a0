"""Run jobs = (task, cell, entry, profile, seed); write one record per job; never lose others.

A job that fails (an entry raising, returning a bad shape, ...) is recorded with its error and
the run goes on. ``resume=True`` skips jobs whose record exists with the same configuration hash.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import registry
from .contracts import Cell, RunContext, TaskSpec, profile_hparams
from .errors import BenchmarkError
from .protocols import get_protocol
from .results import JobKey, ResultStore, config_hash, environment, now_iso
from .throughput import parameter_count, peak_memory_mb, reset_peak_memory

log = logging.getLogger("benchmark")


@dataclass
class JobSummary:
    key: JobKey
    status: str  # ok | failed | skipped
    path: Path
    message: str = ""


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BenchmarkError(f"invalid --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda requested but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
) -> list[JobSummary]:
    """Run every (cell, entry, seed) job of a task and return one summary per job.

    ``seeds`` defaults to the task's seeds for ``profile`` (``TaskSpec.seeds``: 3 at mini and
    paper, 1 at smoke): tables average them and put their spread into the intervals.
    """
    task = registry.load_task(task_name)
    spec: TaskSpec = task.spec
    seeds = list(seeds) if seeds is not None else spec.default_seeds(profile)
    bad = [s for s in seeds if not 0 <= int(s) < 2**31]
    if bad:
        raise BenchmarkError(f"seeds must be integers in [0, 2^31), got {bad}")
    names = list(entry_names) if entry_names else registry.entries_of_family(spec.family)
    if not names:
        raise BenchmarkError(f"no entries of family {spec.family!r} are registered; give --entry module:Class or file.py:Class")
    entries = {}
    for name in names:
        cls = registry.load_entry(name)
        if cls.metadata.family != spec.family:
            raise BenchmarkError(f"entry {name!r} is a {cls.metadata.family} entry; task {spec.name!r} needs {spec.family}")
        profile_hparams(cls, profile)  # fails early, naming the profiles the entry has
        entries[cls.metadata.name] = cls
    dev = resolve_device(device)
    data, identity = task.resolve_data(data_root, profile)
    identity_dict = dataclasses.asdict(identity)
    log.info("task %s: %s data at %s", spec.name, identity.kind, identity.root)
    store = ResultStore(results_dir)
    protocol = get_protocol(spec.family)
    summaries: list[JobSummary] = []
    jobs = plan_jobs(spec, list(entries), cells, tables)
    if not jobs:
        raise BenchmarkError("nothing to run: no (entry, cell) pair matches the chosen tables, cells and entries")
    for seed in seeds:
        for entry_name, cell in jobs:
            summaries.append(_run_job(task, data, identity_dict, cell, entry_name, entries[entry_name], profile, seed, dev, store, resume, protocol, show_progress))
    return summaries


def _run_job(task, data, identity, cell, entry_name, cls, profile, seed, device, store, resume, protocol, show_progress) -> JobSummary:
    spec: TaskSpec = task.spec
    key = JobKey(spec.name, profile, entry_name, cell.name, seed)
    hparams = {**profile_hparams(cls, profile), **dict(cell.params.get("hparams", {}))}
    recipe = task_recipe(task, profile)
    cfg = job_config(spec, cell, cls, profile, seed, hparams, identity, recipe)
    cfg_hash = config_hash(cfg)
    path = store.record_path(key)
    if resume and store.is_done(key, cfg_hash):
        log.info("skip %s/%s/%s seed %d (done)", spec.name, entry_name, cell.name, seed)
        return JobSummary(key, "skipped", path, "already done")
    info = dict(task.info(data, cell)) if hasattr(task, "info") else {}
    info.setdefault("recipe", recipe)  # entries may adapt to the views (e.g. cropped training samples)
    # Shared stages (one pre-training for several cells) live under a hash of what determines them,
    # so a changed profile or dataset never resumes from a stale checkpoint.
    work_key = config_hash({"entry": cls.metadata.to_dict(), "hparams": hparams, "data": identity, "task": [spec.name, spec.version], "recipe": recipe})
    ctx = RunContext(device=device, seed=seed, profile=profile, hparams=hparams, checkpoint_dir=store.work_dir(key) / work_key,
                     cell=dict(cell.params), task_info=info, collate=getattr(task, "collate", None), show_progress=show_progress)
    record: dict[str, Any] = {
        "schema": 1,
        "task": {"name": spec.name, "version": spec.version, "family": spec.family, "recipe": recipe},
        "cell": cell.to_dict(),
        "entry": cls.metadata.to_dict(),
        "profile": profile,
        "seed": seed,
        "hparams": hparams,
        "config_hash": cfg_hash,
        "data": identity,
        "environment": environment(str(device)),
        "started": now_iso(),
    }
    seed_everything(seed)
    reset_peak_memory(device)
    start = time.perf_counter()
    try:
        entry = cls()
        out = protocol(task, data, cell, entry, ctx)
    except Exception as exc:  # noqa: BLE001 - one failing job must not stop the others
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                      wall_time_s=time.perf_counter() - start, finished=now_iso())
        store.write(key, record, None)
        log.error("job %s/%s/%s seed %d failed: %s: %s", spec.name, entry_name, cell.name, seed, type(exc).__name__, exc)
        return JobSummary(key, "failed", path, f"{type(exc).__name__}: {exc}")
    peak, peak_kind = peak_memory_mb(device)
    throughput = {**out.throughput, "peak_memory_mb": peak, "peak_memory_kind": peak_kind, "parameters": parameter_count(entry),
                  "device": str(device), "device_name": record["environment"]["device_name"]}
    record.update(status="ok", metrics=out.metrics, throughput=throughput, timings=out.timings, extra=out.extra,
                  wall_time_s=time.perf_counter() - start, finished=now_iso())
    store.write(key, record, out.unit_stats)
    return JobSummary(key, "ok", path)
