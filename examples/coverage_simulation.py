"""Coverage of the benchmark's 95 % intervals on data with a known truth.

    python examples/coverage_simulation.py [--sims 300]

Prints, per scenario, the share of simulated data sets whose interval holds the true value
(docs/statistics.md quotes a run of this script). Scenarios mirror the tasks: rows grouped in
storms (TC-PRIMED), training-seed variance on top of test-set variance, and mIoU over patches
whose classes are either spread over many patches or concentrated in few. The tests
(``tests/test_intervals.py``) run the same scenarios and assert bands around nominal.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmark.metrics import (
    bootstrap,
    mean_statistic,
    miou_statistic,
    seeded_bootstrap,
    truth_classes,
)


def _rows(x: np.ndarray) -> np.ndarray:
    return np.stack([x, np.ones_like(x)], axis=1)


def _covers(res, truth: float) -> int:
    return int(res.low <= truth <= res.high)


def clustered(rng: np.random.Generator, sims: int, clusters: int, icc: float, resamples: int = 1000) -> tuple[float, float]:
    """Mean of rows in ``clusters`` storms of 10-39 rows with intra-cluster correlation ``icc``:
    (cluster bootstrap, rows-as-independent bootstrap) coverage."""
    hits = np.zeros(2)
    for i in range(sims):
        labels = np.repeat(np.arange(clusters), rng.integers(10, 40, clusters))
        x = np.sqrt(icc) * rng.standard_normal(clusters)[labels] + np.sqrt(1 - icc) * rng.standard_normal(len(labels))
        hits[0] += _covers(bootstrap(_rows(x), mean_statistic, n_resamples=resamples, seed=i, clusters=labels), 0.0)
        hits[1] += _covers(bootstrap(_rows(x), mean_statistic, n_resamples=resamples, seed=i), 0.0)
    return tuple(hits / sims)


def seeds(rng: np.random.Generator, sims: int, n_seeds: int, seed_sd: float, units: int = 40, resamples: int = 1000) -> tuple[float, float]:
    """Each seed shifts every unit by N(0, seed_sd²): (two-level, units-only on the seed mean) coverage."""
    hits = np.zeros(2)
    for i in range(sims):
        e = rng.standard_normal(units)
        xs = [_rows(e + b + 0.3 * rng.standard_normal(units)) for b in seed_sd * rng.standard_normal(n_seeds)]
        hits[0] += _covers(seeded_bootstrap(xs, mean_statistic, n_resamples=resamples, seed=i), 0.0)
        pooled = np.mean([x[:, 0] for x in xs], axis=0)
        hits[1] += _covers(bootstrap(_rows(pooled), mean_statistic, n_resamples=resamples, seed=i), 0.0)
    return tuple(hits / sims)


def miou(rng: np.random.Generator, sims: int, patches: int, background: float, pixels: int = 64, resamples: int = 1000) -> float:
    """4 classes; each patch has a dominant class and ``background`` of the others (0 = one class per patch)."""
    k = 4
    p = np.array([0.45, 0.25, 0.18, 0.12])
    acc = np.array([0.8, 0.6, 0.5, 0.45])
    share = np.full((k, k), background / (k - 1))
    np.fill_diagonal(share, 1 - background)
    model = np.tile(((1 - acc) / (k - 1))[:, None], (1, k))
    np.fill_diagonal(model, acc)
    expected = (pixels * (p @ share))[:, None] * model
    tp = np.diag(expected)
    truth = float((tp / (expected.sum(0) + expected.sum(1) - tp)).mean())
    hits = 0
    for i in range(sims):
        cms = np.zeros((patches, k, k))
        for j, c in enumerate(rng.choice(k, patches, p=p)):
            counts = rng.multinomial(pixels, share[c])
            for t in range(k):
                cms[j, t] = rng.multinomial(counts[t], model[t])
        stat = miou_statistic(k, classes=truth_classes(cms), fixed=True)
        hits += _covers(bootstrap(cms, stat, n_resamples=resamples, seed=i), truth)
    return hits / sims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    print(f"95 % intervals, {args.sims} simulations each (Monte-Carlo SE ~{100 * np.sqrt(0.95 * 0.05 / args.sims):.1f} points)")
    for g, icc in ((9, 0.02), (9, 0.1), (30, 0.1)):
        c, r = clustered(rng, args.sims, g, icc)
        print(f"  rows in {g} storms, ICC {icc}: storm-cluster bootstrap {100 * c:.0f} %, rows as independent {100 * r:.0f} %")
    for s, sd in ((3, 0.15), (3, 0.3), (5, 0.3)):
        two, one = seeds(rng, args.sims, s, sd)
        print(f"  {s} seeds, seed SD {sd} (unit SE ~0.17): two-level {100 * two:.0f} %, test units only {100 * one:.0f} %")
    for bg, label in ((0.3, "classes spread over patches"), (0.0, "one class per patch")):
        for n in (18, 30, 60):
            print(f"  mIoU, {label}, {n} patches: {100 * miou(rng, args.sims, n, bg):.0f} %")
    print(f"({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
