"""Plan a run: which jobs, with which resolved configuration, sharing which training stages.

A plan is data. Each :class:`PlannedJob` holds everything needed to run and record it anywhere
(this process, a worker process, a Slurm node): its key, the picklable :class:`JobRequest`, the
record skeleton with its configuration hash, and its *stage*, the first training stage it needs
(one pre-training reused by the 10 % and 100 % cells is one stage several jobs share).
``run --list-jobs`` prints a plan as JSON; ``run --job-index I`` runs one of its jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import overrides as ovr
from . import registry
from .contracts import JOB_TIMEOUT_S, Cell, TaskSpec, profile_hparams
from .errors import BenchmarkError
from .execution import JobRequest, resolve_data
from .protocols import stage_keys
from .results import SCHEMA_VERSION, JobKey, ResultStore, config_hash

log = logging.getLogger("benchmark")
SUPPORTED_DEVICES = ("cpu", "cuda")
ISOLATION = ("process", "none")


@dataclass
class RunOptions:
    """What the user asked for (the CLI's ``run`` arguments)."""

    task: str
    entries: Sequence[str] | None = None
    profile: str = "mini"
    seeds: Sequence[int] | None = None
    data_root: Path | None = None
    device: str | None = None
    resume: bool = False
    results_dir: Path = Path("results")
    cells: Sequence[str] | None = None
    tables: Sequence[str] | None = None
    show_progress: bool = True
    isolation: str | None = None
    job_timeout: float | None = None
    overrides: ovr.Overrides = field(default_factory=ovr.Overrides)  # --config / --set
    tensorboard: bool = False  # training curves as TensorBoard events too
    all_entries: bool = False  # with no entries given: third-party registered entries too
    command: str | None = None  # the command line, stored in every record
    threads_source: str | None = None  # why the job runs with its thread count ("--threads", "auto: ...")


@dataclass(frozen=True)
class PlannedJob:
    """One job, ready to run and record anywhere."""

    key: JobKey
    request: JobRequest
    record: dict[str, Any]  # the record skeleton: everything known before the job runs
    stage: str  # the first training stage it needs; jobs with one stage train the same model
    results_dir: Path
    isolation: str
    timeout: float | None

    @property
    def config_hash(self) -> str:
        return str(self.record["config_hash"])

    def describe(self) -> str:
        return f"{self.key.entry} / {self.key.cell} seed {self.key.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.key.task, "profile": self.key.profile, "entry": self.key.entry, "entry_spec": self.request.entry,
                "cell": self.key.cell, "seed": self.key.seed, "config_hash": self.config_hash, "stage": self.stage,
                "record": str(ResultStore(self.results_dir).record_path(self.key))}


@dataclass
class Plan:
    """Every job of a run in order (seed, then entry, then cell), and the keys ``--resume`` found
    done. Job indices are stable whatever is done, so ``--job-index`` can drive a Slurm array."""

    options: RunOptions
    jobs: list[PlannedJob]
    done: set[JobKey] = field(default_factory=set)

    @property
    def todo(self) -> list[PlannedJob]:
        return [j for j in self.jobs if j.key not in self.done]

    def stages(self) -> dict[str, list[int]]:
        """Stage -> indices of the jobs that need it, in plan order."""
        out: dict[str, list[int]] = {}
        for i, job in enumerate(self.jobs):
            out.setdefault(job.stage, []).append(i)
        return out

    def to_dict(self) -> dict[str, Any]:
        opts = self.options
        return {"task": opts.task, "profile": opts.profile, "results": str(opts.results_dir),
                "jobs": [dict(j.to_dict(), index=i, done=j.key in self.done) for i, j in enumerate(self.jobs)],
                "stages": self.stages()}


@dataclass
class Loaded:
    """What planning loaded in this process, reused by jobs run in it (``isolation="none"``)."""

    task: Any
    data: Any
    entries: dict[str, registry.ResolvedEntry]


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


def portable_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The data identity without where the data lies: the same bytes at another path (a copy, another
    machine, a cluster's scratch) are the same data, so records and checkpoints carry over."""
    return {k: v for k, v in identity.items() if k != "root"}


def work_key(spec: TaskSpec, entry_cls: type, hparams: dict[str, Any], identity: dict[str, Any], recipe: dict[str, Any]) -> str:
    """The folder key of a job's shared training stages (one pre-training for several cells): a hash
    of what determines them, so a changed profile, recipe or dataset never resumes a stale
    checkpoint. ``plot`` and other tools that reuse a run's weights call this too."""
    return config_hash({"entry": entry_cls.metadata.to_dict(), "hparams": hparams, "data": portable_identity(identity),
                        "task": [spec.name, spec.version], "recipe": recipe})


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
        "data": portable_identity(data_identity),
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


def resolve_entries(names: Sequence[str], family: str, profile: str) -> dict[str, registry.ResolvedEntry]:
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


def _timeout(opts: RunOptions) -> float | None:
    timeout = JOB_TIMEOUT_S.get(opts.profile) if opts.job_timeout is None else (opts.job_timeout or None)
    if timeout is not None and timeout <= 0:
        raise BenchmarkError(f"the job timeout must be positive (0 = none), got {opts.job_timeout}")
    return timeout


def make_plan(opts: RunOptions) -> tuple[Plan, Loaded]:
    """Resolve the task, entries, device and data; plan every (seed, entry, cell) job."""
    task = registry.load_task(opts.task)
    spec: TaskSpec = task.spec
    seeds = list(opts.seeds) if opts.seeds is not None else spec.default_seeds(opts.profile)
    bad = [s for s in seeds if not 0 <= int(s) < 2**31]
    if bad:
        raise BenchmarkError(f"seeds must be integers in [0, 2^31), got {bad}")
    isolation = opts.isolation or default_isolation()
    if isolation not in ISOLATION:
        raise BenchmarkError(f"isolation must be one of {', '.join(ISOLATION)}, got {isolation!r}")
    timeout = _timeout(opts)
    names = list(opts.entries) if opts.entries else registry.entries_of_family(spec.family, third_party=opts.all_entries)
    if not names:
        raise BenchmarkError(f"no entries of family {spec.family!r} are registered; give --entry module:Class or file.py:Class")
    entries = resolve_entries(names, spec.family, opts.profile)
    ovr.check_entries(opts.overrides, list(entries))
    declared = {name: profile_hparams(resolved.cls, opts.profile) for name, resolved in entries.items()}
    for line in ovr.check_keys(opts.overrides, declared):  # every bad key fails here, before any data is touched
        log.warning("overrides: %s", line)
    for name, hp in declared.items():
        ovr.apply(hp, opts.overrides.for_entry(name, hp), name)
    device = resolve_device(opts.device)
    data, identity = resolve_data(task, opts.data_root, opts.profile, None if opts.show_progress else False)
    log.info("task %s: %s data at %s", spec.name, identity.kind, identity.root)
    pairs = plan_jobs(spec, list(entries), opts.cells, opts.tables)
    if not pairs:
        raise BenchmarkError("nothing to run: no (entry, cell) pair matches the chosen tables, cells and entries")
    plan = Plan(opts, [])
    store = ResultStore(opts.results_dir)
    depends = dependency_identities(task, [cell for _, cell in pairs], opts.data_root, opts.profile,
                                    None if opts.show_progress else False)
    context = _JobContext(task, dataclasses.asdict(identity), opts, device, isolation, timeout, depends)
    for seed in seeds:
        for entry_name, cell in pairs:
            job = context.job(entries[entry_name], cell, seed)
            plan.jobs.append(job)
            if opts.resume and store.is_done(job.key, job.config_hash):
                plan.done.add(job.key)
    return plan, Loaded(task, data, entries)


def cell_dependencies(task: Any, cell: Cell) -> tuple[str, ...]:
    """Other tasks whose data the jobs of ``cell`` read (a pre-training pool from another location,
    say): the task's optional ``data_dependencies(cell)``, none by default."""
    hook = getattr(task, "data_dependencies", None)
    return tuple(hook(cell)) if callable(hook) else ()


def dependency_identities(task: Any, cells: Sequence[Cell], data_root: Path | None, profile: str,
                          show_progress: bool | None = False) -> dict[str, dict[str, Any]]:
    """The data identity of every other task the ``cells`` read, resolved (and generated on first
    use) from the run's data root, with that task's version and the part of its recipe its readers
    of the pool use (its optional ``dependency_recipe(profile)``). It joins those jobs' hashes, work
    folders and records, so a changed pool never lets ``--resume`` or a shared checkpoint reuse
    results trained on the old one."""
    names = sorted({name for cell in cells for name in cell_dependencies(task, cell)})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        other = registry.load_task(name)
        _, identity = resolve_data(other, data_root, profile, show_progress)
        hook = getattr(other, "dependency_recipe", None)
        out[name] = {**portable_identity(dataclasses.asdict(identity)), "task_version": other.spec.version,
                     **({"recipe": dict(hook(profile))} if callable(hook) else {})}
    return out


def cell_identity(task: Any, cell: Cell, identity: dict[str, Any], depends: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A job's data identity: the task's, plus (``depends_on``) that of every other task's data the
    cell reads (``depends``: from :func:`dependency_identities`). Planning and rescoring both use it."""
    names = cell_dependencies(task, cell)
    if not names:
        return identity
    return {**identity, "depends_on": {name: depends[name] for name in names}}


@dataclass
class _JobContext:
    """What every job of one plan shares."""

    task: Any
    identity: dict[str, Any]
    opts: RunOptions
    device: torch.device
    isolation: str
    timeout: float | None
    depends: dict[str, dict[str, Any]] = field(default_factory=dict)

    def job(self, entry: registry.ResolvedEntry, cell: Cell, seed: int) -> PlannedJob:
        spec: TaskSpec = self.task.spec
        profile, cls = self.opts.profile, entry.cls
        key = JobKey(spec.name, profile, entry.name, cell.name, seed)
        hparams = {**profile_hparams(cls, profile), **dict(cell.params.get("hparams", {}))}
        changes = self.opts.overrides.for_entry(entry.name, hparams)
        hparams = ovr.apply(hparams, changes, entry.name)
        recipe = task_recipe(self.task, profile)
        identity = cell_identity(self.task, cell, self.identity, self.depends)
        cfg_hash = config_hash(job_config(spec, cell, cls, profile, seed, hparams, identity, recipe))
        work_dir = ResultStore(self.opts.results_dir).work_dir(key) / work_key(spec, cls, hparams, identity, recipe)
        first_stage = next(iter(stage_keys(spec.family, cell).values()))
        request = JobRequest(task=self.opts.task, entry=entry.spec, profile=profile, cell=cell.name, seed=seed, device=str(self.device),
                             data_root=self.opts.data_root, hparams=hparams, recipe=recipe, checkpoint_dir=work_dir,
                             show_progress=self.opts.show_progress, threads=torch.get_num_threads(), tensorboard=self.opts.tensorboard,
                             log_level=logging.getLogger().getEffectiveLevel())
        record: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "task": {"name": spec.name, "version": spec.version, "family": spec.family, "recipe": recipe,
                     "num_classes": spec.metric.num_classes},
            "cell": cell.to_dict(),
            "entry": cls.metadata.to_dict(),
            "entry_source": entry.provenance(),
            "profile": profile,
            "seed": seed,
            "hparams": hparams,
            "overrides": {"values": changes, "sources": list(self.opts.overrides.sources)} if changes else None,
            "config_hash": cfg_hash,
            "data": identity,
            "execution": {"isolation": self.isolation, "timeout_s": self.timeout, "threads_source": self.opts.threads_source},
            "command": self.opts.command,
        }
        return PlannedJob(key, request, record, str(work_dir / first_stage), Path(self.opts.results_dir), self.isolation, self.timeout)
