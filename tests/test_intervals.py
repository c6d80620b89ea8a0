"""Intervals that cover: simulations with known truths, two-level seeds, p-values, Holm, flags.

Each coverage test draws a few hundred synthetic data sets with a known true value and counts
how often the 95 % interval holds it. With 300 simulations the Monte-Carlo standard error of a
coverage near 0.95 is ~0.013, so the bands below (stated before looking at the result, from that
error and the known small-sample behaviour of percentile intervals) are ±~3 standard errors.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from benchmark.metrics import (
    bootstrap,
    holm,
    mean_statistic,
    miou_statistic,
    seeded_bootstrap,
    seeded_paired_difference,
    sign_flip_test,
)

SIMS = 300


def _mean_stats(x: np.ndarray) -> np.ndarray:
    return np.stack([x, np.ones_like(x)], axis=1)


def _covers(res, truth: float) -> bool:
    return res.low <= truth <= res.high


# --------------------------------------------------------------------------- coverage
def _scenarios():
    """The scenarios of examples/coverage_simulation.py (the figures docs/statistics.md quotes)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "coverage_simulation.py"
    spec = importlib.util.spec_from_file_location("coverage_simulation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cluster_interval_covers_and_row_interval_does_not() -> None:
    """Rows grouped in 30 clusters with ICC 0.1 (TC-PRIMED storms measured 0.02-0.16): the cluster
    bootstrap covers near 95 %, the IID-row bootstrap (the paper's) far less."""
    cluster, rows = _scenarios().clustered(np.random.default_rng(0), SIMS, 30, 0.1, resamples=500)
    assert 0.88 <= cluster <= 0.99
    assert rows < 0.80


def test_iid_interval_covers() -> None:
    rng = np.random.default_rng(1)
    hits = sum(_covers(bootstrap(_mean_stats(rng.exponential(2.0, 60)), mean_statistic, n_resamples=500, seed=i), 2.0) for i in range(SIMS))
    assert 0.89 <= hits / SIMS <= 0.99  # skewed data, n = 60: percentile intervals run slightly short


def test_two_level_interval_includes_seed_variance() -> None:
    """Each seed shifts every unit by b_s ~ N(0, 0.3²); 40 units with unit SD ~1. The estimand is
    the method's mean over seeds and test population (0). Resampling units only, with the seeds
    averaged, ignores the seed term and under-covers; the two-level bootstrap does not."""
    two, one = _scenarios().seeds(np.random.default_rng(2), SIMS, 3, 0.3, resamples=500)
    assert 0.87 <= two <= 0.99
    assert two >= one + 0.05


def test_miou_interval_covers_with_the_fixed_class_set() -> None:
    """Patches with a dominant class and 30 % of the others, 60 patches: the fixed-class-set mIoU
    interval covers the population mIoU (of the expected confusion) near nominal."""
    assert 0.87 <= _scenarios().miou(np.random.default_rng(3), SIMS, 60, 0.3, resamples=500) <= 0.99


# --------------------------------------------------------------------------- definitions
def test_fixed_class_set_is_the_same_in_every_replicate() -> None:
    cm = np.zeros((3, 3, 3))
    cm[0, 0, 0], cm[0, 0, 1] = 5, 1  # class 0 only in patch 0 (one pixel predicted as class 1)
    cm[1, 1, 1], cm[2, 1, 1] = 4, 4  # class 1 in patches 1 and 2; class 2 never true nor predicted
    stat = miou_statistic(3, classes=[0, 1], fixed=True)
    # a resample without patch 0: class 0 has an empty union -> IoU 0, still averaged
    assert stat(cm[[1, 2]].sum(0)[None])[0] == pytest.approx((0 + 1) / 2)
    assert stat(cm.sum(0)[None])[0] == pytest.approx((5 / 6 + 8 / 9) / 2)
    res = bootstrap(cm, stat, n_resamples=200, seed=0)
    assert set(np.round(res.replicates, 6)) <= {round(v, 6) for v in _all_patch_multisets(cm, stat)}
    with pytest.raises(ValueError, match="at least one class"):
        miou_statistic(3, classes=[], fixed=True)


def _all_patch_multisets(cm: np.ndarray, stat) -> list[float]:
    out = []
    for counts in itertools.product(range(4), repeat=3):
        if sum(counts) == 3:
            out.append(float(stat((np.asarray(counts)[:, None, None] * cm).sum(0)[None])[0]))
    return out


def test_one_seed_two_level_equals_the_plain_bootstrap() -> None:
    x = _mean_stats(np.random.default_rng(4).normal(size=50))
    clusters = np.repeat(np.arange(10), 5)
    for cl in (None, clusters):
        plain = bootstrap(x, mean_statistic, n_resamples=300, seed=7, clusters=cl)
        two = seeded_bootstrap([x], mean_statistic, n_resamples=300, seed=7, clusters=cl)
        np.testing.assert_array_equal(plain.replicates, two.replicates)
        assert (plain.estimate, plain.low, plain.high) == (two.estimate, two.low, two.high)
        assert two.extra["n_seeds"] == 1 and two.extra["seed_sd"] is None


def test_two_level_estimate_is_the_seed_mean_and_reports_the_seed_sd() -> None:
    rng = np.random.default_rng(5)
    xs = [_mean_stats(rng.normal(loc, 1.0, 30)) for loc in (0.0, 1.0, 2.0)]
    res = seeded_bootstrap(xs, mean_statistic, n_resamples=400, seed=0)
    per_seed = [float(x[:, 0].mean()) for x in xs]
    assert res.estimate == pytest.approx(np.mean(per_seed))
    assert res.extra["seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert res.high - res.low > 1.0  # the seed spread (sd ~1) is in the interval


def test_paired_p_value_direction_and_resolution() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(10, 2, 40)
    worse = [_mean_stats(base + 1.0 + 0.1 * rng.standard_normal(40)) for _ in range(2)]
    better = [_mean_stats(base + 0.1 * rng.standard_normal(40)) for _ in range(3)]
    # lower is better (CRPS): a = worse has a positive difference and P(a better) ~ 0
    res = seeded_paired_difference(worse, better, mean_statistic, n_resamples=2000, seed=0, higher_is_better=False)
    assert res.estimate == pytest.approx(1.0, abs=0.1) and res.low > 0
    assert res.extra["prob_better"] == 0.0
    assert res.extra["p_value"] == pytest.approx(2 / 2001) and res.extra["p_resolution"] == pytest.approx(2 / 2001)
    same = seeded_paired_difference(better, better, mean_statistic, n_resamples=500, seed=0)
    assert same.extra["p_value"] == 1.0


def test_paired_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(7)
    ps = []
    for i in range(200):
        base = rng.normal(0, 1, 40)
        a, b = (_mean_stats(base + rng.standard_normal(40)) for _ in range(2))
        ps.append(seeded_paired_difference([a], [b], mean_statistic, n_resamples=400, seed=i).extra["p_value"])
    assert 0.02 <= np.mean(np.asarray(ps) < 0.05) <= 0.10


def test_sign_flip_exact_matches_brute_force() -> None:
    rng = np.random.default_rng(8)
    a = _mean_stats(rng.normal(0.4, 1, 7))
    b = _mean_stats(rng.normal(0.0, 1, 7))
    got = sign_flip_test([a], [b], mean_statistic)
    d = a[:, 0] - b[:, 0]
    flips = np.array(list(itertools.product([1, -1], repeat=7)))
    brute = np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12)
    assert got["exact"] and got["p_value"] == pytest.approx(brute) and got["p_resolution"] == pytest.approx(2 / 2**7)
    # clusters: the rows of one cluster swap together
    rows_a, rows_b = np.repeat(a, 3, axis=0), np.repeat(b, 3, axis=0)
    clustered = sign_flip_test([rows_a], [rows_b], mean_statistic, clusters=np.repeat(np.arange(7), 3))
    assert clustered["p_value"] == pytest.approx(brute) and clustered["n_units"] == 7
    mc = sign_flip_test([a], [b], mean_statistic, exact_max_units=3, n_flips=4000)
    assert not mc["exact"] and mc["p_value"] == pytest.approx(brute, abs=0.03)


def test_holm_matches_the_textbook_example() -> None:
    # Holm (1979) step-down on p = (0.01, 0.04, 0.03, 0.005): adjusted 0.03, 0.06, 0.06, 0.02
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, np.nan, 0.01])
    assert np.isnan(out[1]) and out[2] == pytest.approx(0.02) and out[0] == pytest.approx(0.5)
    assert (holm([0.9, 0.8, 0.7]) <= 1.0).all()


def test_shared_models_pair_their_seeds() -> None:
    """Two evaluation configs of the same trained models: a seed's shift is common to both sides
    and cancels when the seeds are drawn together; drawn apart it would widen the interval."""
    rng = np.random.default_rng(9)
    base = rng.normal(0, 1, 40)
    shifts = [-1.0, 0.0, 1.0]
    a = [_mean_stats(base + s + 0.2) for s in shifts]
    b = [_mean_stats(base + s) for s in shifts]
    paired = seeded_paired_difference(a, b, mean_statistic, n_resamples=500, seed=0, paired_seeds=True)
    apart = seeded_paired_difference(a, b, mean_statistic, n_resamples=500, seed=0)
    assert paired.low == pytest.approx(0.2) and paired.high == pytest.approx(0.2) and paired.extra["paired_seeds"]
    assert apart.high - apart.low > 1.0
    with pytest.raises(ValueError, match="as many seeds"):
        seeded_paired_difference(a[:2], b, mean_statistic, n_resamples=10, paired_seeds=True)


def test_ties_count_half_and_undefined_sign_flip_is_nan() -> None:
    x = [_mean_stats(np.arange(10.0))]
    same = seeded_paired_difference(x, x, mean_statistic, n_resamples=100, seed=0)
    assert same.extra["prob_better"] == 0.5  # identical models: neither is better
    assert seeded_paired_difference(x, x, mean_statistic, n_resamples=100, higher_is_better=None).extra["prob_better"] is None
    empty = [np.zeros((4, 2))]  # 0 / 0: the statistic is undefined
    flip = sign_flip_test(empty, empty, mean_statistic)
    assert np.isnan(flip["p_value"])
