"""Intervals and tests that include training-seed variance and survive multiplicity.

A benchmark number has two sources of chance: which test units were drawn (patches, tiles,
storms) and which training seed produced the model. The **two-level bootstrap** draws both:
each replicate draws the units (or clusters) with replacement *once* — the same weights for
every seed and for both sides of a comparison, because all of them scored the same test units —
and draws the seeds of each side with replacement; a side's replicate is the mean over its drawn
seeds of ``statistic(weights @ stats_seed)``. The point estimate is the mean over seeds of the
full-sample statistic. With one seed this is exactly :func:`bootstrap.bootstrap` (same unit
weights for the same ``seed``), so a single-seed table and a record agree to the last digit.

Paired differences report, besides the interval:

* ``p_value``: two-sided bootstrap p, ``2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (R + 1)`` (capped
  at 1), the p-value whose level-α test rejects when the percentile interval excludes 0; its
  resolution (smallest reachable value) is ``2 / (R + 1)``.
* ``prob_better``: the share of replicates in which ``a`` is better — direction-explicit, so
  "lower is better" metrics such as CRPS read the right way round.

:func:`sign_flip_test` is the exact (≤ 2^16 patterns) or Monte-Carlo permutation test of "a and
b are exchangeable within every unit": it stays valid with few clusters, where percentile
intervals under-cover. It conditions on the trained models (each side's seeds are averaged
first), so it measures test-set chance only. :func:`holm` adjusts a family of p-values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bootstrap import (
    BootstrapResult,
    Statistic,
    _as_stats,
    _count_blocks,
    _evaluate,
    _group_sum,
    _nanpercentile,
    _plan,
)

__all__ = ["holm", "seeded_bootstrap", "seeded_paired_difference", "sign_flip_test"]

_SEED_STREAM = 0x5EED  # seed draws use their own stream, so unit weights match bootstrap()'s


def _sides(sides: Sequence[Sequence[Any]]) -> tuple[list[list[np.ndarray]], int, tuple[int, ...]]:
    """Validate per-side, per-seed stats: float64 arrays, every one with the same unit count and shape."""
    out: list[list[np.ndarray]] = []
    shape: tuple[int, ...] | None = None
    for i, seeds in enumerate(sides):
        if len(seeds) == 0:
            raise ValueError(f"side {i} has no seeds")
        arrays = [_as_stats(s, f"side {i} seed {j}") for j, s in enumerate(seeds)]
        for a in arrays:
            if shape is None:
                shape = a.shape
            if a.shape != shape:
                raise ValueError(f"every seed and side must score the same units with the same statistics: got {a.shape} and {shape}")
        out.append(arrays)
    assert shape is not None
    if shape[0] < 1:
        raise ValueError("the bootstrap needs at least one unit")
    return out, shape[0], shape[1:]


def _seed_means(per_seed: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Mean over seeds drawn with replacement, per replicate: ``[R, ...]`` from S arrays ``[R, ...]``."""
    s = len(per_seed)
    if s == 1:
        return per_seed[0]
    r = per_seed[0].shape[0]
    draws = rng.integers(0, s, size=(r, s))
    counts = np.stack([(draws == j).sum(1) for j in range(s)], 1).astype(np.float64) / s  # [R, S]
    out = np.zeros_like(per_seed[0])
    for j, reps in enumerate(per_seed):
        w = counts[:, j].reshape(r, *([1] * (reps.ndim - 1)))
        out += np.where(w > 0, w * reps, 0.0)  # a NaN replicate of an undrawn seed does not count
    return out


def _replicates(sides: list[list[np.ndarray]], statistic: Statistic, shape: tuple[int, ...], *, n_resamples: int, seed: int,
                clusters: Any, paired_seeds: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Per side: seed-mean replicates ``[R, ...]`` and per-seed full-sample estimates ``[S, ...]``."""
    n = sides[0][0].shape[0]
    r = int(n_resamples)
    rng, g, codes = _plan(n, r, seed, clusters)
    flats = [[a.reshape(n, -1) for a in side] for side in sides]
    if codes is not None:  # units of a cluster share a weight: sum them first
        flats = [[_group_sum(f, codes, g) for f in side] for side in flats]
    per_seed: list[list[np.ndarray]] = [[np.empty(0)] * len(side) for side in flats]
    for start, stop, counts in _count_blocks(rng, g, r):
        weights = counts.astype(np.float64)
        for i, side in enumerate(flats):
            for j, f in enumerate(side):
                block = _evaluate(statistic, [(weights @ f).reshape(stop - start, *shape)])
                if start == 0:
                    per_seed[i][j] = np.empty((r, *block.shape[1:]), dtype=np.float64)
                per_seed[i][j][start:stop] = block
    if paired_seeds:  # seed k is the same trained model on both sides: one draw of seeds for both
        reps = [_seed_means(side, np.random.default_rng([seed, _SEED_STREAM])) for side in per_seed]
    else:
        seed_rng = np.random.default_rng([seed, _SEED_STREAM])
        reps = [_seed_means(side, seed_rng) for side in per_seed]
    estimates = [np.stack([_evaluate(statistic, [f.sum(0).reshape(1, *shape)])[0] for f in side]) for side in flats]
    return reps, estimates, g


def _percentile_interval(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = _nanpercentile(reps, [100 * (1 - level) / 2, 100 * (1 + level) / 2], axis=0)
    return low, high


def _scalar(x: np.ndarray) -> Any:
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _seed_sd(estimates: np.ndarray) -> Any:
    if estimates.shape[0] < 2:
        return None
    return _scalar(np.std(estimates, axis=0, ddof=1))


def _check(level: float, n_resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def seeded_bootstrap(stats_by_seed: Sequence[Any], statistic: Statistic, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
                     clusters: Any = None) -> BootstrapResult:
    """Two-level percentile bootstrap of the seed-mean of ``statistic(sum of stats)``.

    Args:
        stats_by_seed: one ``[n, ...]`` array per training seed, rows aligned on the same units.
        statistic: as for :func:`bootstrap.bootstrap` (vectorised over a leading resample dim).
        clusters: optional per-unit labels; whole clusters are drawn.

    ``extra`` holds ``n_seeds``, ``seed_sd`` (between-seed standard deviation of the estimate,
    None for one seed), ``seed_estimates``, ``n_units`` (draw units: units or clusters) and
    ``nan_replicates`` when some replicates were undefined.
    """
    _check(level, n_resamples)
    sides, _, shape = _sides([stats_by_seed])
    reps, estimates, g = _replicates(sides, statistic, shape, n_resamples=n_resamples, seed=seed, clusters=clusters)
    rep, est = reps[0], estimates[0]
    low, high = _percentile_interval(rep, level)
    extra: dict[str, Any] = {"n_seeds": len(sides[0]), "seed_sd": _seed_sd(est), "seed_estimates": est.tolist(), "n_units": g}
    if clusters is not None:
        extra["n_clusters"] = g
    nan_rows = np.isnan(rep).reshape(rep.shape[0], -1).any(1)
    if nan_rows.any():
        extra["nan_replicates"] = int(nan_rows.sum())
    return BootstrapResult(estimate=_scalar(est.mean(0)), low=_scalar(low), high=_scalar(high), level=float(level),
                           n_resamples=int(n_resamples), method="percentile", seed=seed, replicates=rep, extra=extra)


def bootstrap_p_value(differences: np.ndarray) -> tuple[float, float]:
    """Two-sided bootstrap p of "difference = 0" and its resolution, from replicates ``[R]``."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    r = len(d)
    if r == 0:
        return float("nan"), float("nan")
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return min(1.0, 2.0 * (1 + tail) / (r + 1)), 2.0 / (r + 1)


def seeded_paired_difference(a_by_seed: Sequence[Any], b_by_seed: Sequence[Any], statistic: Statistic, *, n_resamples: int = 10_000,
                             level: float = 0.95, seed: int = 0, clusters: Any = None, higher_is_better: bool | None = True,
                             paired_seeds: bool = False) -> BootstrapResult:
    """Two-level paired bootstrap of ``mean_seeds stat(a) − mean_seeds stat(b)`` (scalar statistic).

    Unit weights are shared by both sides and every seed. Each side's seeds are drawn on their
    own (seed k of one entry has nothing to do with seed k of another) unless ``paired_seeds``:
    then seed k is the same trained model on both sides (two cells sharing one training stage)
    and one seed draw serves both, so the common seed variance cancels. ``extra``: ``p_value``,
    ``p_resolution``, ``prob_better`` (share of replicates where a is better, ties counted ½;
    None when ``higher_is_better`` is None, e.g. spread-skill, whose ideal is 1), ``n_seeds_a/b``,
    ``seed_sd_a/b``, ``n_units``.
    """
    _check(level, n_resamples)
    sides, _, shape = _sides([a_by_seed, b_by_seed])
    if paired_seeds and len(sides[0]) != len(sides[1]):
        raise ValueError(f"paired seeds need as many seeds on both sides, got {len(sides[0])} and {len(sides[1])}")
    reps, estimates, g = _replicates(sides, statistic, shape, n_resamples=n_resamples, seed=seed, clusters=clusters, paired_seeds=paired_seeds)
    if reps[0].ndim != 1:
        raise ValueError(f"paired differences need a scalar statistic, got replicates of shape {reps[0].shape[1:]}")
    diff = reps[0] - reps[1]
    low, high = _percentile_interval(diff, level)
    p, resolution = bootstrap_p_value(diff)
    valid = ~np.isnan(diff)
    prob_better: float | None = None
    if higher_is_better is not None and valid.any():
        d = diff[valid] if higher_is_better else -diff[valid]
        prob_better = float(((d > 0).sum() + 0.5 * (d == 0).sum()) / len(d))
    extra: dict[str, Any] = {
        "p_value": p, "p_resolution": resolution, "prob_better": prob_better, "higher_is_better": higher_is_better,
        "paired_seeds": bool(paired_seeds),
        "n_seeds_a": len(sides[0]), "n_seeds_b": len(sides[1]), "seed_sd_a": _seed_sd(estimates[0]), "seed_sd_b": _seed_sd(estimates[1]),
        "n_units": g,
    }
    if not valid.all():
        extra["nan_replicates"] = int((~valid).sum())
    return BootstrapResult(estimate=float(estimates[0].mean() - estimates[1].mean()), low=float(low), high=float(high), level=float(level),
                           n_resamples=int(n_resamples), method="percentile", seed=seed, replicates=diff, extra=extra)


def sign_flip_test(a_by_seed: Sequence[Any], b_by_seed: Sequence[Any], statistic: Statistic, *, clusters: Any = None, n_flips: int = 10_000,
                   seed: int = 0, exact_max_units: int = 16) -> dict[str, Any]:
    """Permutation p of ``stat(a) − stat(b) = 0`` by swapping a and b within whole units (clusters).

    Each side's seeds are averaged per unit first (the test is conditional on the trained
    models). With G units, all 2^G swap patterns are enumerated when G <= ``exact_max_units``
    (p is exact, resolution 2 / 2^G, since a pattern and its complement give the same |d|);
    otherwise ``n_flips`` random patterns plus the observed one (resolution 1 / (n_flips + 1)).
    Returns ``{"p_value", "p_resolution", "exact", "n_units"}``.
    """
    sides, n, shape = _sides([a_by_seed, b_by_seed])
    a = np.mean([s.reshape(n, -1) for s in sides[0]], axis=0)
    b = np.mean([s.reshape(n, -1) for s in sides[1]], axis=0)
    if clusters is not None:
        _, g, codes = _plan(n, 1, seed, clusters)
        assert codes is not None
        a, b = _group_sum(a, codes, g), _group_sum(b, codes, g)
    g = a.shape[0]
    delta = a - b
    total = a.sum(0) + b.sum(0)

    def diffs(patterns: np.ndarray) -> np.ndarray:
        """patterns [P, G] in {0, 1}: 1 keeps a unit's sides, 0 swaps them."""
        a_star = b.sum(0) + patterns @ delta
        b_star = total - a_star
        da = _evaluate(statistic, [a_star.reshape(-1, *shape)])
        db = _evaluate(statistic, [b_star.reshape(-1, *shape)])
        return np.abs(da - db).reshape(-1)

    observed = diffs(np.ones((1, g)))[0]
    if not np.isfinite(observed):
        return {"p_value": float("nan"), "p_resolution": float("nan"), "exact": g <= exact_max_units, "n_units": g}
    tol = 1e-9 * max(1.0, abs(observed))

    def extreme_count(values: np.ndarray) -> int:
        return int(((values >= observed - tol) | np.isnan(values)).sum())  # undefined patterns count as extreme
    if g <= exact_max_units:
        codes_all = np.arange(2**g, dtype=np.int64)
        extreme = 0
        for start in range(0, 2**g, 8192):  # blocks keep the [P, G] @ [G, d] products small
            block = codes_all[start:start + 8192]
            patterns = ((block[:, None] >> np.arange(g)) & 1).astype(np.float64)
            extreme += extreme_count(diffs(patterns))
        return {"p_value": extreme / 2**g, "p_resolution": 2.0 / 2**g, "exact": True, "n_units": g}
    rng = np.random.default_rng([seed, 0xF11B])
    extreme = 0
    for start in range(0, n_flips, 4096):
        size = min(4096, n_flips - start)
        patterns = rng.integers(0, 2, size=(size, g)).astype(np.float64)
        extreme += extreme_count(diffs(patterns))
    return {"p_value": (1 + extreme) / (n_flips + 1), "p_resolution": 1.0 / (n_flips + 1), "exact": False, "n_units": g}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of one family of p-values (NaN entries stay NaN, not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out
