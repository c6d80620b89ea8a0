"""Paired comparisons between two stored jobs, recomputed from their per-unit statistics.

Both jobs must have scored the same units (same test patches, or the same (sample, channel)
rows); the units are aligned by id and one set of resample weights is applied to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BenchmarkError
from .metrics import miou_statistic, paired_difference
from .results import ResultStore


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    result: Any  # BootstrapResult of metric(a) - metric(b)
    n_units: int
    n_units_a: int = 0  # units each job scored; the difference uses only the shared ones
    n_units_b: int = 0

    def describe(self) -> str:
        r = self.result
        prob = (getattr(r, "extra", None) or {}).get("prob_positive")
        tail = f"; P(a > b) over resamples = {prob:.3f}" if prob is not None else ""
        if self.n_units_a and (self.n_units_a != self.n_units or self.n_units_b != self.n_units):
            tail += (f"; NOTE: the jobs scored different units ({self.n_units_a} vs {self.n_units_b}); "
                     f"only the {self.n_units} shared ones are compared")
        return (f"{self.metric}({self.a}) - {self.metric}({self.b}) = {r.estimate:.4f} "
                f"[{r.low:.4f}, {r.high:.4f}] ({int(r.level * 100)} % paired {r.method} bootstrap, "
                f"{r.n_resamples} resamples, {self.n_units} shared units){tail}")


def _find(store: ResultStore, task: str, profile: str, job: str, seed: int) -> dict[str, Any]:
    entry, sep, cell = job.partition("/")
    if not sep:
        raise BenchmarkError(f"job {job!r} must be ENTRY/CELL")
    for rec in store.records(task, profile):
        if rec["entry"]["name"] == entry and rec["cell"]["name"] == cell and rec["seed"] == seed:
            if rec.get("status") != "ok":
                raise BenchmarkError(f"job {job} (seed {seed}) failed: {rec.get('error')}")
            return rec
    raise BenchmarkError(f"no record for {job} seed {seed} at profile {profile}")


def _statistics(metric: str, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    if "confusion" in stats:
        cm = stats["confusion"]
        return cm, miou_statistic(cm.shape[-1])
    col = {"crps": "crps", "crps_fair": "crps_fair", "mae": "abs_error"}.get(metric)
    if col is None or col not in stats:
        raise BenchmarkError(f"metric {metric!r} cannot be compared from stored statistics ({', '.join(stats)})")
    values = stats[col].astype(np.float64)
    return np.stack([values, np.ones_like(values)], axis=1), (lambda s: s[..., 0] / s[..., 1])


def compare_jobs(task: Any, results_dir: Path, profile: str, a: str, b: str, *, seed: int = 0, metric: str | None = None, cluster: bool = False) -> Comparison:
    spec = task.spec
    metric = metric or spec.metric.name
    store = ResultStore(results_dir)
    ra, rb = (_find(store, spec.name, profile, j, seed) for j in (a, b))
    sa, sb = store.load_stats(ra), store.load_stats(rb)
    ids_a, ids_b = sa["unit_id"], sb["unit_id"]
    shared = np.intersect1d(ids_a, ids_b)
    if len(shared) == 0:
        raise BenchmarkError(f"{a} and {b} share no scored units; a paired comparison needs the same units")
    ia = np.searchsorted(ids_a, shared, sorter=np.argsort(ids_a))
    ib = np.searchsorted(ids_b, shared, sorter=np.argsort(ids_b))
    ia, ib = np.argsort(ids_a)[ia], np.argsort(ids_b)[ib]
    xa, stat = _statistics(metric, sa)
    xb, _ = _statistics(metric, sb)
    clusters = sa["cluster"][ia] if cluster and "cluster" in sa else None
    if cluster and clusters is None:
        raise BenchmarkError("--cluster: the stored statistics carry no cluster ids")
    bs = spec.bootstrap
    res = paired_difference(xa[ia], xb[ib], stat, n_resamples=bs.resamples, level=bs.level, seed=bs.seed, clusters=clusters, method=bs.method)
    return Comparison(a, b, metric, res, len(shared), len(ids_a), len(ids_b))
