"""One run's jobs under ``torchrun``: every rank trains each job, rank 0 alone scores and records.

Every rank plans the same jobs (rank 0's list of what is left to do is the one all ranks run, so
a record rank 0 wrote meanwhile cannot make the ranks' plans differ) and runs them one after
another in its own process (isolation ``none``: the ranks are the training processes, and the
process group that ``fit`` joins lives as long as they do). After a job's training, ranks other
than 0 post whether their part worked and wait for rank 0's summary; rank 0 predicts, is scored,
writes the record with the world size and each stage's batching, and posts the summary, so every
rank returns the same one. No rank but 0 writes a record, a table or a checkpoint.

A failed job stops the run on every rank: a rank that failed alone may have left the others in a
collective it never joined, and the next job's collectives would pair with the wrong ones. Its
record says which rank failed and why; ``--resume`` runs what was left. Rank 0 does not wait for
the others after its own part failed (they may be held in a collective waiting for it); they are
released when it exits, by their process group's timeout, or by torchrun, which stops the other
ranks when one exits non-zero.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import BenchmarkError
from .execution import train_only
from .isolation import Outcome, describe
from .plan import Loaded, Plan, PlannedJob
from .ranks import RankEnded, Ranks, join
from .runner import JobSummary, attempt_job, record_failure, record_result, started_record

log = logging.getLogger("benchmark")
NO_TIMEOUT_WAIT_S = 7 * 24 * 3600.0  # how long a rank waits for another when jobs have no timeout
MARGIN_S = 600.0  # beyond the job's own timeout: scoring and writing the record


def ranks_of(plan: Plan) -> Ranks | None:
    """This process's ranks when the plan runs under torchrun (None in one process); checks that
    the plan can run there."""
    ranks = join(_wait_s(plan.jobs[0]) if plan.jobs else NO_TIMEOUT_WAIT_S)
    if ranks is not None:
        inside = [j.describe() for j in plan.jobs if j.isolation != "none"]
        if inside:
            raise BenchmarkError(f"under torchrun the ranks run the jobs in their own processes (isolation 'none'); "
                                 f"{len(inside)} job(s) ask for job processes, e.g. {inside[0]}")
    return ranks


def _wait_s(job: PlannedJob) -> float:
    return (job.timeout or NO_TIMEOUT_WAIT_S) + MARGIN_S


def _key_list(jobs: list[PlannedJob]) -> list[list[Any]]:
    return [[*dataclasses.astuple(j.key), j.config_hash] for j in jobs]


def agreed_todo(plan: Plan, ranks: Ranks, tag: str) -> list[PlannedJob]:
    """Rank 0's jobs left to do, on every rank; an error naming the first difference when another
    rank planned other jobs (other arguments, entries or data)."""
    mine = _key_list(plan.jobs)
    theirs = ranks.from_main(f"{tag}plan", {"jobs": mine, "todo": [i for i, j in enumerate(plan.jobs) if j.key not in plan.done]},
                             _wait_s(plan.jobs[0]) if plan.jobs else NO_TIMEOUT_WAIT_S)
    if theirs["jobs"] != mine:
        first = next((i for i, (a, b) in enumerate(zip(theirs["jobs"], mine, strict=False)) if a != b), min(len(mine), len(theirs["jobs"])))
        raise BenchmarkError(f"rank {ranks.rank} planned other jobs than rank 0 (first difference at job {first}; "
                             f"{len(mine)} against {len(theirs['jobs'])} jobs): every rank must run the same command on the same data")
    return [plan.jobs[i] for i in theirs["todo"]]


def on_ranks(plan: Plan, loaded: Loaded, ranks: Ranks, executor: Any = None) -> Iterator[JobSummary]:
    """The plan's jobs on every rank, in order, until one fails (module docstring)."""
    from .executors import LocalExecutor, Progress, results_guard

    if executor is not None and not isinstance(executor, LocalExecutor):
        raise BenchmarkError(f"under torchrun every rank runs the jobs one after another: drop --executor "
                             f"({type(executor).__name__} spreads jobs over processes of its own)")
    tag = ranks.new_run()
    todo = agreed_todo(plan, ranks, tag)
    progress = Progress(len(todo), 1, plan.options.show_progress and ranks.main)
    guard = results_guard(plan) if ranks.main else None  # another rank's guard would "restore" rank 0's records
    for index, job in enumerate(todo):
        progress.started()
        summary = run_on_ranks(job, loaded, ranks, f"{tag}job{index}", guard)
        progress.finished(job, summary)
        yield summary
        if summary.status == "failed":
            if ranks.main and index + 1 < len(todo):
                log.warning("under torchrun a failed job stops the run: %d job(s) not run; re-run with --resume", len(todo) - index - 1)
            return


def run_on_ranks(job: PlannedJob, loaded: Loaded | None, ranks: Ranks, name: str, guard: Any = None) -> JobSummary:
    """One job on every rank; each returns rank 0's summary of it."""
    start, wait_s = time.perf_counter(), _wait_s(job)
    if not ranks.main:
        ranks.post(name, _train_here(job, loaded))
        return _summary(job, ranks.wait(f"{name}-summary", 0, wait_s))
    record = started_record(job, ranks.world)
    done = attempt_job(job, loaded, None, guard, start)
    if isinstance(done, Outcome):  # do not wait for the others: they may be held in a collective waiting for rank 0
        others = _failures(ranks, name, None)
        summary = record_failure(job, dataclasses.replace(done, error=_joined([f"rank 0: {done.error}", *others])), record)
    else:
        others = _failures(ranks, name, wait_s)
        failed = Outcome(False, error=_joined(others), seconds=time.perf_counter() - start)
        summary = record_failure(job, failed, record) if others else record_result(job, done, record)
    ranks.post(f"{name}-summary", {"status": summary.status, "path": str(summary.path), "message": summary.message,
                                   "seconds": summary.seconds})
    return summary


def _train_here(job: PlannedJob, loaded: Loaded | None) -> dict[str, str]:
    """A non-zero rank's part: train; what went wrong (``{}`` when nothing did)."""
    objects = None if loaded is None else (loaded.task, loaded.data, loaded.entries[job.key.entry].cls)
    try:
        train_only(dataclasses.replace(job.request, show_progress=False), objects)  # rank 0's bars are the run's
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the entry's failure is this job's, reported to rank 0
        return {"error": describe(exc), "traceback": traceback.format_exc()[-20_000:]}
    return {}


def _failures(ranks: Ranks, name: str, wait_s: float | None) -> list[str]:
    """``rank r: error`` for every other rank whose part failed; ``wait_s`` None: only what they
    have posted already."""
    lines = []
    for rank in range(1, ranks.world):
        try:
            posted = ranks.wait(name, rank, wait_s) if wait_s is not None else ranks.posted(name, rank)
        except RankEnded as exc:
            posted = {"error": str(exc)}
        except BenchmarkError as exc:  # silent past the deadline
            posted = {"error": str(exc)}
        if posted and posted.get("error"):
            lines.append(f"rank {rank}: {posted['error']}")
    return lines


def _joined(lines: list[str]) -> str:
    return "; ".join(lines)


def _summary(job: PlannedJob, posted: dict[str, Any]) -> JobSummary:
    return JobSummary(job.key, str(posted.get("status", "failed")), Path(str(posted.get("path", ""))), str(posted.get("message", "")),
                      float(posted.get("seconds", 0.0)))
