"""The numbers tables and ``compare`` show: every seed of a job, recomputed from stored statistics.

A table row is one (entry, cell) with all its seeds; its value is the mean over seeds and its
interval the two-level bootstrap (seeds × the task's resampling unit, see
``benchmark.metrics.seeded``), computed from the ``.npz`` beside each record with the same
definitions a job is scored with (``benchmark.scoring``). A comparison pairs two such rows on the
units both scored, with one set of unit weights for every seed and both sides, and carries a
p-value; with few units the sign-flip p over units is computed too and the larger p is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .contracts import TaskSpec
from .errors import BenchmarkError
from .metrics import seeded_bootstrap, seeded_paired_difference, sign_flip_test
from .protocols import stage_keys
from .results import ResultStore
from .scoring import class_set, degenerate, metric_input, plural


@dataclass
class JobGroup:
    """The ok records of one (entry, cell), one per seed, sorted by seed."""

    entry: str
    cell: str
    records: list[dict[str, Any]]

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.records]

    @property
    def members(self) -> int | None:
        m = (self.records[0].get("extra") or {}).get("members")
        return int(m) if m else None


@dataclass
class Summary:
    """One metric of one (entry, cell) over its seeds."""

    metric: str
    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    interval_unit: str
    n_units: int
    seeds: list[int]
    seed_sd: float | None
    flag: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


@dataclass
class PairedSummary:
    """``metric(a) − metric(b)`` over the units both scored, every seed of both."""

    a: JobGroup
    b: JobGroup
    metric: str
    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    interval_unit: str
    n_units: int  # resampling units (patches, tiles, storms) of the shared rows
    n_rows: int  # scored rows both jobs share (rows = units unless the task clusters rows)
    n_rows_a: int  # rows each job scored
    n_rows_b: int
    p_bootstrap: float
    p_resolution: float
    prob_better: float | None  # None where "better" has no direction (spread-skill)
    paired_seeds: bool = False  # seed k is the same trained model on both sides
    p_sign_flip: float | None = None
    p_sign_flip_resolution: float | None = None
    p_sign_flip_exact: bool | None = None

    @property
    def p_value(self) -> float:
        """The p a reader should use: the larger of the bootstrap and (when computed) sign-flip p."""
        return self.p_bootstrap if self.p_sign_flip is None else max(self.p_bootstrap, self.p_sign_flip)

    @property
    def p_method(self) -> str:
        if self.p_sign_flip is None:
            return f"bootstrap (resolution {self.p_resolution:.2g})"
        kind = "exact" if self.p_sign_flip_exact else "Monte-Carlo"
        return f"max(bootstrap, {kind} sign-flip over {self.n_units} {plural(self.interval_unit)}; resolution {self.p_sign_flip_resolution:.2g})"


def group_jobs(records: Iterable[Mapping[str, Any]], seed: int | None = None) -> dict[tuple[str, str], JobGroup]:
    """(entry, cell) -> its ok records (optionally one seed). Two records of one job is an error."""
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for rec in records:
        if rec.get("status") != "ok" or (seed is not None and int(rec["seed"]) != seed):
            continue
        key = (rec["entry"]["name"], rec["cell"]["name"])
        seeds = groups.setdefault(key, {})
        s = int(rec["seed"])
        if s in seeds:
            raise BenchmarkError(f"two records for {key[0]}/{key[1]} seed {s}: {seeds[s].get('_path')} and {rec.get('_path')}")
        seeds[s] = dict(rec)
    out = {k: JobGroup(k[0], k[1], [v[s] for s in sorted(v)]) for k, v in sorted(groups.items())}
    for g in out.values():
        checksums = {r["data"].get("checksum") for r in g.records}
        if len(checksums) > 1:  # seeds of one row must have seen the same data
            raise BenchmarkError(f"the seeds of {g.entry}/{g.cell} were run on different data (checksums {', '.join(sorted(map(str, checksums)))}): "
                                 f"{', '.join(str(r.get('_path')) for r in g.records)}")
    return out


class StatsCache:
    """Loads each record's ``.npz`` once."""

    def __init__(self, store: ResultStore):
        self.store = store
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def get(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        path = str(record["_path"])
        if path not in self._cache:
            self._cache[path] = self.store.load_stats(record)
        return self._cache[path]


def _aligned(stats_list: Sequence[Mapping[str, np.ndarray]], what: str) -> tuple[list[dict[str, np.ndarray]], int]:
    """Rows of every stats dict restricted to the shared ``unit_id``s, in the first one's order
    (so a one-seed table draws exactly the weights its record did)."""
    ids = [np.asarray(s["unit_id"]).astype(str) for s in stats_list]
    for x in ids:
        if len(np.unique(x)) != len(x):
            raise BenchmarkError(f"{what}: a job's statistics repeat unit ids; they cannot be aligned")
    common = ids[0]
    for x in ids[1:]:
        common = np.intersect1d(common, x)
    shared = ids[0][np.isin(ids[0], common)]
    if len(shared) == 0:
        raise BenchmarkError(f"{what}: the jobs share no scored units")
    out = []
    for s, x in zip(stats_list, ids, strict=True):
        order = np.argsort(x, kind="stable")
        pos = order[np.searchsorted(x, shared, sorter=order)]
        out.append({k: np.asarray(v)[pos] if np.ndim(v) and len(v) == len(x) else v for k, v in s.items()})
    return out, len(shared)


def _same_truth(stats: Sequence[Mapping[str, np.ndarray]], what: str) -> None:
    """Aligned units must hold the same truth on both sides (same labels / observed pixels)."""
    key = "confusion" if "confusion" in stats[0] else "pixels"
    if key not in stats[0]:
        return
    first = np.asarray(stats[0][key])
    ref = first.sum(-1) if key == "confusion" else first
    for s in stats[1:]:
        other = np.asarray(s[key])
        if not np.array_equal(ref, other.sum(-1) if key == "confusion" else other):
            raise BenchmarkError(f"{what}: the jobs' units hold different truths (labels or observed pixels); they cannot be paired")


def _inputs(spec: TaskSpec, metric: str, stats: list[dict[str, np.ndarray]], members: int | None) -> tuple[list[np.ndarray], Any, Any, str]:
    classes = class_set([s["confusion"] for s in stats]) if metric == "miou" else None
    if metric == "miou" and not classes:
        raise BenchmarkError("mIoU is undefined: the test labels hold no counted pixel")
    made = [metric_input(spec, metric, s, classes=classes, members=members) for s in stats]
    return [m.stats for m in made], made[0].statistic, made[0].clusters, made[0].interval_unit


def summarize(spec: TaskSpec, cache: StatsCache, group: JobGroup, metric: str) -> Summary:
    """Mean over seeds, two-level interval, between-seed SD and any degeneracy flag."""
    stats, n = _aligned([cache.get(r) for r in group.records], f"{group.entry}/{group.cell}")
    xs, statistic, clusters, unit = _inputs(spec, metric, stats, group.members)
    bs = spec.bootstrap
    res = seeded_bootstrap(xs, statistic, n_resamples=bs.resamples, level=bs.level, seed=bs.seed, clusters=clusters)
    flags = [degenerate(spec, metric, s) for s in stats]
    flagged = [f for f in flags if f]
    flag = None
    if flagged:
        flag = flagged[0] if len(flagged) == len(flags) else f"{flagged[0]} in {len(flagged)} of {len(flags)} seeds"
    extra = {"n_rows": n, "seed_estimates": res.extra["seed_estimates"]}
    return Summary(metric, float(res.estimate), float(res.low), float(res.high), res.level, res.n_resamples, unit,
                   int(res.extra["n_units"]), group.seeds, res.extra["seed_sd"], flag, extra)


def compare_groups(spec: TaskSpec, cache: StatsCache, a: JobGroup, b: JobGroup, metric: str | None = None) -> PairedSummary:
    """Paired two-level difference of ``a`` and ``b``; the sign-flip p when units are few."""
    metric = metric or spec.metric.name
    what = f"{a.entry}/{a.cell} vs {b.entry}/{b.cell}"
    checksums = {r["data"].get("checksum") for r in a.records + b.records}
    if len(checksums) > 1:
        raise BenchmarkError(f"{what}: the jobs were run on different data (checksums {', '.join(sorted(map(str, checksums)))})")
    raw_a = [cache.get(r) for r in a.records]
    raw_b = [cache.get(r) for r in b.records]
    stats, n = _aligned(raw_a + raw_b, what)
    _same_truth(stats, what)
    xs, statistic, clusters, unit = _inputs(spec, metric, stats, a.members or b.members)
    xa, xb = xs[: len(raw_a)], xs[len(raw_a):]
    bs = spec.bootstrap
    res = seeded_paired_difference(xa, xb, statistic, n_resamples=bs.comparison_resamples, level=bs.level, seed=bs.seed,
                                   clusters=clusters, higher_is_better=higher_is_better(spec, metric),
                                   paired_seeds=shares_training(spec, a, b))
    n_units = int(res.extra["n_units"])
    out = PairedSummary(a, b, metric, float(res.estimate), float(res.low), float(res.high), res.level, res.n_resamples, unit, n_units,
                        n, _n_rows(raw_a), _n_rows(raw_b), float(res.extra["p_value"]), float(res.extra["p_resolution"]),
                        res.extra["prob_better"], bool(res.extra["paired_seeds"]))
    if n_units < bs.min_units:
        flip = sign_flip_test(xa, xb, statistic, clusters=clusters, n_flips=bs.comparison_resamples, seed=bs.seed)
        out.p_sign_flip, out.p_sign_flip_resolution, out.p_sign_flip_exact = flip["p_value"], flip["p_resolution"], flip["exact"]
    return out


def higher_is_better(spec: TaskSpec, metric: str) -> bool | None:
    """Direction of ``metric``: the task's for its main metric; None for spread-skill (ideal 1)."""
    if metric == spec.metric.name:
        return spec.metric.higher_is_better
    return {"miou": True, "overall_accuracy": True, "crps": False, "crps_rows_iid": False, "crps_fair": False, "mae": False,
            "rmse": False}.get(metric)


def shares_training(spec: TaskSpec, a: JobGroup, b: JobGroup) -> bool:
    """Whether a and b are the same trained models seed for seed: one entry, the same seeds, and
    cells whose every training stage has the same key (e.g. TC-PRIMED's 6 h fit scored on two
    evaluation configs)."""
    if a.entry != b.entry or a.seeds != b.seeds:
        return False
    try:
        ca, cb = spec.cell(a.cell), spec.cell(b.cell)
    except KeyError:
        return False
    return stage_keys(spec.family, ca) == stage_keys(spec.family, cb)


def _n_rows(stats: Sequence[Mapping[str, np.ndarray]]) -> int:
    return len(np.unique(np.concatenate([np.asarray(s["unit_id"]).astype(str) for s in stats])))
