"""``compare``: the paired difference of two stored jobs, every seed, in the table's units.

Both jobs must have scored the same units (same test patches, or the same (sample, channel)
rows); units are aligned by id, one set of unit weights is applied to every seed of both, and
intervals resample the task's unit (storms for TC-PRIMED; ``rows_iid`` gives the paper's
interval over rows as if independent). See ``benchmark.aggregate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .aggregate import JobGroup, PairedSummary, StatsCache, compare_groups, group_jobs
from .errors import BenchmarkError
from .results import ResultStore
from .scoring import plural

_SCALE = {"miou": (100.0, "points"), "overall_accuracy": (100.0, "points")}


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    result: PairedSummary
    scale: float
    unit: str

    @property
    def n_units(self) -> int:
        return self.result.n_units

    def describe(self) -> str:
        r = self.result
        s, digits = self.scale, (1 if self.scale != 1 else 3)
        text = (f"{self.metric}({self.a}) − {self.metric}({self.b}) = {s * r.estimate:+.{digits}f} {self.unit} "
                f"[{s * r.low:+.{digits}f}, {s * r.high:+.{digits}f}] ({int(round(100 * r.level))} % two-level paired bootstrap, "
                f"{r.n_resamples} resamples over {r.n_units} {plural(r.interval_unit)}; seeds {len(r.a.seeds)} / {len(r.b.seeds)}); "
                f"P(a better) = {'–' if r.prob_better is None else f'{r.prob_better:.3f}'}; p = {r.p_value:.4f} [{r.p_method}]")
        if r.n_rows_a != r.n_rows or r.n_rows_b != r.n_rows:
            text += (f"; NOTE: the jobs scored different rows ({r.n_rows_a} vs {r.n_rows_b}); "
                     f"only the {r.n_rows} shared ones are compared")
        return text


def _group(groups: dict[tuple[str, str], JobGroup], job: str, seed: int | None) -> JobGroup:
    entry, sep, cell = job.partition("/")
    if not sep:
        raise BenchmarkError(f"job {job!r} must be ENTRY/CELL")
    if (entry, cell) not in groups:
        which = "" if seed is None else f" seed {seed}"
        raise BenchmarkError(f"no ok record for {job}{which}")
    return groups[(entry, cell)]


def compare_jobs(task: Any, results_dir: Path, profile: str, a: str, b: str, *, seed: int | None = None, metric: str | None = None,
                 rows_iid: bool = False) -> Comparison:
    """Paired difference ``metric(a) − metric(b)`` of two ``ENTRY/CELL`` jobs (all seeds, or one)."""
    spec = task.spec
    metric = metric or spec.metric.name
    store = ResultStore(results_dir)
    records = list(store.records(spec.name, profile))
    failed = {(r["entry"]["name"], r["cell"]["name"]): r.get("error") for r in records if r.get("status") != "ok"}
    groups = group_jobs(records, seed)
    for job in (a, b):
        key = tuple(job.partition("/")[::2])
        if key not in groups and key in failed:
            raise BenchmarkError(f"job {job} failed: {failed[key]}")
    ga, gb = _group(groups, a, seed), _group(groups, b, seed)
    if rows_iid:
        spec = dataclasses.replace(spec, bootstrap=dataclasses.replace(spec.bootstrap, cluster=None, unit=spec.bootstrap.row_unit or "row"))
    result = compare_groups(spec, StatsCache(store), ga, gb, metric)
    scale, unit = _SCALE.get(metric, (1.0, "" if metric == "spread_skill" else spec.metric.units))
    return Comparison(a, b, metric, result, scale, unit)
