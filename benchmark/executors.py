"""Executors: spread a plan's jobs over this process, worker processes, or a Slurm cluster.

* :class:`LocalExecutor`: one job after another (each in a child process unless ``--in-process``).
* :class:`ProcessesExecutor`: N jobs at once on this machine, one GPU each when there are GPUs
  (``CUDA_VISIBLE_DEVICES`` per worker), the CPU threads split between workers otherwise.
* :class:`SlurmExecutor`: one Slurm job per planned job through submitit (the library FAIR's
  projects use for this); ``cluster="local"`` runs the same code path on this machine.

Jobs that need the same training stage (one pre-training for several cells) never build it twice:
each protocol holds a lock on the stage's checkpoint folder while it trains it, so a second job
waits and then finds the finished checkpoint; the process executor also schedules a stage's other
jobs only after its first one finished, so workers do not idle on the lock. Whatever the executor,
each job is recorded by :func:`benchmark.runner.run_planned` (atomic, never overwriting), so
``--resume`` works across executors and a failed or preempted job is recorded or re-run, never lost.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchmarkError
from .isolation import Outcome
from .plan import Loaded, Plan, PlannedJob
from .runner import JobSummary, record_failure, run_planned
from .tamper import ResultsGuard


class Progress:
    """One line per finished job: done / running / failed counts and an ETA from the mean job time."""

    def __init__(self, total: int, workers: int = 1, show: bool = True):
        self.total, self.workers, self.show = total, max(1, workers), show
        self.done = self.failed = self.running = 0
        self.seconds: list[float] = []
        self.start = time.perf_counter()
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.running += 1

    def finished(self, job: PlannedJob, summary: JobSummary) -> None:
        with self._lock:
            self.running -= 1
            self.done += 1
            self.failed += summary.status == "failed"
            self.seconds.append(summary.seconds)
            left = self.total - self.done
            eta = (sum(self.seconds) / len(self.seconds)) * left / self.workers if left else 0.0
            line = (f"[{self.done}/{self.total}] {summary.status:6s} {job.describe()} ({summary.seconds:.1f} s) | "
                    f"running {self.running}, failed {self.failed}, elapsed {_clock(time.perf_counter() - self.start)}, ETA {_clock(eta)}")
        if self.show:
            print(line, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def results_guard(plan: Plan) -> ResultsGuard | None:
    """The tamper guard of a plan's results folder (every job of the plan may write its own files)."""
    jobs = plan.todo
    if not jobs:
        return None
    return ResultsGuard(plan.options.results_dir, jobs[0].key.task, plan.options.profile, [j.key for j in jobs])


class LocalExecutor:
    """Today's behaviour: the plan's jobs in order, one at a time."""

    def run(self, plan: Plan, loaded: Loaded | None = None) -> Iterator[JobSummary]:
        todo = plan.todo
        progress = Progress(len(todo), 1, plan.options.show_progress)
        guard = results_guard(plan)
        for job in todo:
            progress.started()
            summary = run_planned(job, loaded, guard=guard)
            progress.finished(job, summary)
            yield summary


def visible_gpus() -> list[str]:
    """GPU ids the workers may use: ``$CUDA_VISIBLE_DEVICES``, else every device (no CUDA init)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


MAX_AUTO_CPU_WORKERS = 8  # beyond this, a machine's extra cores go to threads inside each job


@dataclass(frozen=True)
class AutoChoice:
    """What ``--executor auto`` runs: the executor's name, its workers and the threads per job
    (None: :func:`benchmark.environment.auto_threads` decides), and why."""

    executor: str
    workers: int
    threads: int | None
    why: str


def auto_choice(device: str | None, threads: int | None, profile: str, in_process: bool) -> AutoChoice:
    """``--executor auto``: spread the jobs over the machine when that is faster, else one at a time.

    * GPUs: one job per visible GPU (``processes``) when there are several, else ``local``.
    * CPU, ``smoke`` / ``mini``: as many jobs at once as there are free cores, one torch thread
      each (``threads`` per job if given). The small models of these profiles use a second thread
      poorly: on a 2-core machine two one-thread jobs finish a set of jobs 1.5× sooner than one
      two-thread job after another (``docs/cluster.md``), and one thread per job also makes a job's
      numbers independent of the load the run started under (float reductions split over threads
      round differently).
    * CPU, ``paper``: ``local`` (one job needs the whole machine's memory).
    * ``--in-process`` and ``torchrun``: ``local``.
    """
    from .environment import free_cores
    from .ranks import launched_world_size

    if in_process or launched_world_size() > 1:
        return AutoChoice("local", 1, threads, "--in-process or torchrun: one job at a time")
    unnamed = device in (None, "auto")  # the CLI's default: CUDA when torch sees a GPU
    if device and device.startswith("cuda") or unnamed and _cuda_available():
        gpus = visible_gpus() if device in (None, "auto", "cuda") else []
        if len(gpus) > 1:
            return AutoChoice("processes", len(gpus), threads, f"{len(gpus)} GPUs: one job on each")
        return AutoChoice("local", 1, threads, "one GPU: one job at a time")
    if profile == "paper":
        return AutoChoice("local", 1, threads, "paper profile on CPU: one job at a time")
    free, where = free_cores()
    per_job = threads or max(1, free // MAX_AUTO_CPU_WORKERS)
    workers = min(MAX_AUTO_CPU_WORKERS, max(1, free // per_job))
    if workers == 1:
        return AutoChoice("local", 1, threads or free, f"auto: {where}, one job at a time")
    return AutoChoice("processes", workers, per_job, f"auto: {where}, {workers} jobs at once, {per_job} thread(s) each")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class ProcessesExecutor:
    """``workers`` jobs at once, each in its own child process. ``threads``: torch threads per job
    (default: the CPU count split between workers)."""

    workers: int = 2
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BenchmarkError(f"--workers must be at least 1, got {self.workers}")

    def _slot(self, job: PlannedJob, slot: int, gpus: list[str]) -> tuple[PlannedJob, dict[str, str]]:
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.workers)
        device, env = job.request.device, {"OMP_NUM_THREADS": str(threads)}
        if device.startswith("cuda") and gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            device = "cuda"  # the worker's one visible device
        request = dataclasses.replace(job.request, threads=threads, device=device)
        return dataclasses.replace(job, request=request), env

    def run(self, plan: Plan, loaded: Loaded | None = None) -> Iterator[JobSummary]:
        if any(j.isolation != "process" for j in plan.todo):
            raise BenchmarkError("--executor processes runs every job in its own process; drop --in-process")
        pending = list(plan.todo)
        progress = Progress(len(pending), self.workers, plan.options.show_progress)
        gpus = visible_gpus()
        guard = results_guard(plan)
        running: dict[Future, tuple[PlannedJob, int]] = {}
        built: set[str] = set()  # stages whose first job finished
        free = list(range(self.workers))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="job") as pool:
            while pending or running:
                # a stage's other jobs wait until its first job finished (they reuse its checkpoint)
                busy = {job.stage for job, _ in running.values()}
                while free:
                    job = next((j for j in pending if j.stage in built or j.stage not in busy), None)
                    if job is None:
                        break
                    pending.remove(job)
                    slot = free.pop(0)
                    planned, env = self._slot(job, slot, gpus)
                    progress.started()
                    running[pool.submit(run_planned, planned, None, env, guard)] = (job, slot)
                    busy.add(job.stage)
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    job, slot = running.pop(fut)
                    free.append(slot)
                    built.add(job.stage)
                    summary = fut.result()
                    progress.finished(job, summary)
                    yield summary


@dataclass
class SlurmConfig:
    """Cluster settings (a TOML file's ``[slurm]`` table, then command-line overrides)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: float | None = None
    array_parallelism: int = 64
    folder: Path = Path("results/_slurm")
    cluster: str | None = None  # None: Slurm when available; "local": submitit's local executor
    wait: bool = True
    additional: dict[str, Any] = field(default_factory=dict)  # extra sbatch options, e.g. {"account": "x"}

    @classmethod
    def from_file(cls, path: Path | None, **overrides: Any) -> SlurmConfig:
        values: dict[str, Any] = {}
        if path is not None:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            try:
                doc = tomllib.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise BenchmarkError(f"--slurm-config {path}: {exc}") from None
            values = dict(doc.get("slurm", doc))
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(values) - names)
            if unknown:
                raise BenchmarkError(f"--slurm-config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "folder" in values:
            values["folder"] = Path(values["folder"])
        return cls(**values)


try:  # a preempted or timed-out Slurm job is requeued with the same call (its stages resume)
    from submitit.helpers import Checkpointable as _Requeueable
except ModuleNotFoundError:  # submitit is optional: only --executor slurm needs it
    _Requeueable = object  # type: ignore[assignment,misc]


class RemoteJob(_Requeueable):  # type: ignore[misc,valid-type]
    """The callable submitted to Slurm; submitit requeues it on preemption or timeout."""

    def __call__(self, payload: tuple[PlannedJob, str, int]) -> JobSummary:
        return _remote(payload)


def _remote(payload: tuple[PlannedJob, str, int]) -> JobSummary:
    """What a Slurm task runs: the planned job, recorded from there (the submitting process may be
    gone by then). With several GPUs per job, every task is one DDP rank and rank 0 records."""
    job, cwd, gpus = payload
    os.chdir(cwd)
    if gpus > 1:
        import submitit.helpers

        from .execution import run_job

        dist = submitit.helpers.TorchDistributedEnvironment().export()
        job = dataclasses.replace(job, isolation="none", request=dataclasses.replace(job.request, device=f"cuda:{dist.local_rank}"))
        if dist.rank != 0:  # every rank trains (DDP) and predicts; rank 0 alone records
            run_job(job.request, False)
            return JobSummary(job.key, "ok", Path(job.results_dir), f"rank {dist.rank}: not recorded (rank 0 records)")
    return run_planned(job)


@dataclass
class SlurmExecutor:
    config: SlurmConfig = field(default_factory=SlurmConfig)
    submitted: list[Any] = field(default_factory=list)  # the submitit jobs of the last run

    def _executor(self, name: str) -> Any:
        try:
            import submitit
        except ModuleNotFoundError:
            raise BenchmarkError("--executor slurm needs submitit: pip install 'satbench[slurm]' (or pip install submitit)") from None
        c = self.config
        ex = submitit.AutoExecutor(folder=str(c.folder / "%j"), cluster=c.cluster)
        params: dict[str, Any] = {"timeout_min": int(c.time_min), "name": name, "cpus_per_task": int(c.cpus_per_job),
                                  "slurm_array_parallelism": int(c.array_parallelism)}
        if c.gpus_per_job:
            params.update(gpus_per_node=int(c.gpus_per_job), tasks_per_node=int(c.gpus_per_job))
        if c.mem_gb:
            params["mem_gb"] = float(c.mem_gb)
        if c.partition:
            params["slurm_partition"] = c.partition
        if c.additional:
            params["slurm_additional_parameters"] = dict(c.additional)
        ex.update_parameters(**params)
        return ex

    def run(self, plan: Plan, loaded: Loaded | None = None) -> Iterator[JobSummary]:
        todo = plan.todo
        if not todo:
            return
        ex = self._executor(f"benchmark-{plan.options.task}")
        first: dict[str, PlannedJob] = {}
        for job in todo:  # the first job of every stage builds it; the others depend on it
            first.setdefault(job.stage, job)
        builders = list(first.values())
        followers = [j for j in todo if first[j.stage] is not j]
        payload = lambda j: (j, os.getcwd(), int(self.config.gpus_per_job))  # noqa: E731
        with ex.batch():
            built = [ex.submit(RemoteJob(), payload(j)) for j in builders]
        submitted = list(zip(builders, built, strict=True))
        if followers:
            if ex.cluster == "slurm":
                ids = ":".join(str(s.job_id) for s in built)
                ex.update_parameters(slurm_additional_parameters={**self.config.additional, "dependency": f"afterany:{ids}"})
            with ex.batch():
                after = [ex.submit(RemoteJob(), payload(j)) for j in followers]
            submitted += list(zip(followers, after, strict=True))
        self.submitted = [s for _, s in submitted]
        show = plan.options.show_progress
        if show:
            print(f"submitted {len(submitted)} job(s) to {ex.cluster} ({len(builders)} stage builder(s) first); logs under {self.config.folder}",
                  file=sys.stderr)
        if not self.config.wait:
            return
        progress = Progress(len(submitted), len(submitted), show)
        progress.running = len(submitted)
        for job, sj in submitted:
            try:
                summary = sj.result()
            except Exception as exc:  # noqa: BLE001 - the Slurm job died (out of requeues, killed, ...): record it
                text = str(exc).strip().splitlines()
                error = f"the Slurm job {sj.job_id} ended without a result: {text[-1] if text else type(exc).__name__}"
                summary = record_failure(job, Outcome(False, error=error, traceback=str(exc)))
            progress.finished(job, summary)
            yield summary
