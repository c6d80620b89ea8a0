"""Matrix-product bootstrap: weights, agreement with scipy, coverage, clusters, paired tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from benchmark.metrics import (
    bootstrap,
    confusion_matrix,
    iou_from_confusion,
    mean_statistic,
    miou_statistic,
    paired_difference,
    ratio_statistic,
    resample_weights,
)


def _mean_stats(x: np.ndarray) -> np.ndarray:
    return np.stack([x, np.ones_like(x)], axis=1)


# --------------------------------------------------------------------------- weights
def test_iid_weights_are_multinomial_counts_and_seeded() -> None:
    w = resample_weights(50, 200, seed=3)
    assert w.shape == (200, 50) and np.issubdtype(w.dtype, np.integer)
    assert (w.sum(1) == 50).all() and (w >= 0).all()
    np.testing.assert_array_equal(w, resample_weights(50, 200, seed=3))
    assert not np.array_equal(w, resample_weights(50, 200, seed=4))
    # each unit is drawn Binomial(n, 1/n) times: mean 1
    assert resample_weights(50, 4000, seed=0).mean() == pytest.approx(1.0)


def test_cluster_weights() -> None:
    rng = np.random.default_rng(0)
    clusters = rng.choice(["storm_a", "storm_b", "storm_c", "storm_d", "storm_e"], size=40)
    w = resample_weights(40, 300, seed=1, clusters=clusters)
    labels, sizes = np.unique(clusters, return_counts=True)
    for c in labels:
        block = w[:, clusters == c]  # [R, units of c]
        assert (block == block[:, :1]).all(), f"units of {c} got different weights"
    cluster_counts = np.stack([w[:, np.argmax(clusters == c)] for c in labels], 1)  # [R, G]
    assert (cluster_counts.sum(1) == len(labels)).all()  # G clusters drawn per resample
    np.testing.assert_array_equal(w.sum(1), cluster_counts @ sizes)  # size-weighted cluster draws
    # any hashable labels; tuples are fine
    tuples = [(int(i) % 3, "x") for i in range(40)]
    wt = resample_weights(40, 10, seed=0, clusters=tuples)
    assert (wt[:, 0] == wt[:, 3]).all()
    with pytest.raises(ValueError, match="39 labels for 40 units"):
        resample_weights(40, 10, seed=0, clusters=clusters[:39])


# --------------------------------------------------------------------------- core
def test_replicates_are_weights_times_stats() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=(30, 3))
    res = bootstrap(s, lambda t: t[..., 0] + 2 * t[..., 2], n_resamples=50, seed=9)
    w = resample_weights(30, 50, seed=9)
    np.testing.assert_allclose(res.replicates, (w @ s)[:, 0] + 2 * (w @ s)[:, 2], rtol=1e-12)
    assert res.estimate == pytest.approx(s[:, 0].sum() + 2 * s[:, 2].sum())
    clusters = rng.integers(0, 6, size=30)
    resc = bootstrap(s, lambda t: t[..., 1], n_resamples=50, seed=9, clusters=clusters)
    wc = resample_weights(30, 50, seed=9, clusters=clusters)
    np.testing.assert_allclose(resc.replicates, (wc @ s)[:, 1], rtol=1e-12)
    assert resc.extra["n_clusters"] == len(np.unique(clusters))


@pytest.mark.parametrize(("method", "scipy_method"), [("percentile", "percentile"), ("bca", "BCa")])
def test_matches_scipy_bootstrap(method: str, scipy_method: str) -> None:
    # Same generator, same draws: our intervals equal scipy's to rounding.
    x = np.random.default_rng(2).exponential(size=300)
    ours = bootstrap(_mean_stats(x), mean_statistic, n_resamples=2000, seed=5, method=method)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, rng=5, method=scipy_method)
    assert ours.low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert ours.high == pytest.approx(ref.confidence_interval.high, rel=1e-9)
    np.testing.assert_allclose(np.sort(ours.replicates), np.sort(ref.bootstrap_distribution), rtol=1e-9)


def test_percentile_coverage_is_nominal() -> None:
    """95 % percentile intervals for a normal mean (n = 200) cover the truth ~95 % of the time.

    2000 independent datasets: the hit count is Binomial(2000, p) with sd ~ 0.5 % at p ~ 0.95, so
    [0.93, 0.965] is a +-3.5 sd window around 0.947 (percentile intervals under-cover slightly
    at n = 200; the t-based exact coverage would be 0.95).
    """
    rng = np.random.default_rng(2024)
    reps, n, mu = 2000, 200, 1.5
    hits = 0
    for i in range(reps):
        x = rng.normal(mu, 2.0, size=n)
        r = bootstrap(_mean_stats(x), mean_statistic, n_resamples=1000, seed=i)
        hits += r.low <= mu <= r.high
    assert 0.93 <= hits / reps <= 0.965, hits / reps


def test_seed_determinism_and_result_fields() -> None:
    x = np.random.default_rng(3).normal(size=100)
    a = bootstrap(_mean_stats(x), mean_statistic, seed=11)
    b = bootstrap(torch.from_numpy(_mean_stats(x)), mean_statistic, seed=11)  # tensors accepted
    c = bootstrap(_mean_stats(x), mean_statistic, seed=12)
    np.testing.assert_array_equal(a.replicates, b.replicates)
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)
    assert isinstance(a.estimate, float) and a.estimate == pytest.approx(x.mean())
    assert a.low < a.estimate < a.high
    d = a.to_dict()
    assert "replicates" not in d and d["n_resamples"] == 1000 and d["method"] == "percentile" and d["seed"] == 11
    json.dumps(d)
    with pytest.raises(AttributeError):
        a.low = 0.0  # type: ignore[misc]


def test_vector_statistic_and_nan_replicates() -> None:
    # Two means at once; the second is 0/0 whenever no unit of group 2 is drawn.
    n = 40
    s = np.zeros((n, 4))
    s[:, 0], s[:, 1] = np.arange(n), 1.0
    s[0, 2], s[0, 3] = 7.0, 1.0  # only unit 0 carries group 2
    res = bootstrap(s, lambda t: np.stack([t[..., 0] / t[..., 1], t[..., 2] / t[..., 3]], -1), n_resamples=500, seed=0)
    assert res.estimate.shape == (2,) and res.low.shape == (2,)
    n_nan = int(np.isnan(res.replicates[:, 1]).sum())
    assert res.extra["nan_replicates"] == n_nan and 0.25 * 500 < n_nan < 0.5 * 500  # (1-1/n)^n ~ 0.36
    assert res.low[1] == res.high[1] == 7.0  # NaN replicates dropped, the rest are exactly 7
    json.dumps(res.to_dict())


def test_bca_cluster_and_errors() -> None:
    rng = np.random.default_rng(4)
    x = rng.gamma(2.0, size=300)
    clusters = np.repeat(np.arange(30), 10)
    pct = bootstrap(_mean_stats(x), mean_statistic, clusters=clusters, seed=1)
    bca = bootstrap(_mean_stats(x), mean_statistic, clusters=clusters, seed=1, method="bca")
    np.testing.assert_array_equal(pct.replicates, bca.replicates)
    assert bca.low < bca.estimate < bca.high
    assert abs(bca.low - pct.low) < 0.2 * (pct.high - pct.low)
    with pytest.raises(ValueError, match="method"):
        bootstrap(_mean_stats(x), mean_statistic, method="basic")
    with pytest.raises(ValueError, match="level"):
        bootstrap(_mean_stats(x), mean_statistic, level=95)
    with pytest.raises(ValueError, match="at least one unit"):
        bootstrap(np.zeros((0, 2)), mean_statistic)


def test_miou_bootstrap_over_patch_confusions() -> None:
    rng = np.random.default_rng(5)
    k = 5
    target = rng.integers(0, k, size=(60, 16, 16))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, k, size=target.shape))
    cms = confusion_matrix(pred, target, k, per_unit=True).numpy()
    res = bootstrap(cms, miou_statistic(k), n_resamples=200, seed=2)
    assert res.estimate == pytest.approx(iou_from_confusion(cms.sum(0))[1])
    w = resample_weights(60, 200, seed=2)
    loop = [iou_from_confusion(np.tensordot(w[r], cms, axes=1))[1] for r in range(200)]
    np.testing.assert_allclose(res.replicates, loop, rtol=1e-12)
    flat = bootstrap(cms.reshape(60, -1), miou_statistic(k), n_resamples=200, seed=2)
    np.testing.assert_allclose(flat.replicates, res.replicates, rtol=1e-12)


# --------------------------------------------------------------------------- paired
def test_paired_identical_inputs_give_exact_zero() -> None:
    x = np.random.default_rng(6).normal(size=500)
    res = paired_difference(_mean_stats(x), _mean_stats(x), mean_statistic, seed=3)
    assert res.estimate == res.low == res.high == 0.0
    assert (res.replicates == 0).all() and res.extra["prob_positive"] == 0.0
    bca = paired_difference(_mean_stats(x), _mean_stats(x), mean_statistic, seed=3, method="bca")
    assert bca.low == bca.high == 0.0


def test_paired_shift_is_recovered_and_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(7)
    n, shift = 400, 0.3
    common = rng.normal(0, 5.0, size=n)  # large shared per-unit difficulty
    a = common + shift + rng.normal(0, 0.5, size=n)
    b = common + rng.normal(0, 0.5, size=n)
    res = paired_difference(_mean_stats(a), _mean_stats(b), mean_statistic, seed=0)
    assert res.low < shift < res.high
    assert res.low > 0 and res.extra["prob_positive"] == 1.0
    assert res.estimate == pytest.approx(a.mean() - b.mean())
    # unpaired intervals of each mean are ~10x wider than the paired difference's
    single = bootstrap(_mean_stats(a), mean_statistic, seed=0)
    assert (single.high - single.low) > 5 * (res.high - res.low)
    # constant shift: every replicate difference equals the shift
    exact = paired_difference(_mean_stats(b + shift), _mean_stats(b), mean_statistic, seed=0)
    assert exact.low == pytest.approx(shift) and exact.high == pytest.approx(shift)
    json.dumps(res.to_dict())


def test_paired_with_clusters_and_mismatch() -> None:
    rng = np.random.default_rng(8)
    s = rng.normal(size=(50, 2))
    clusters = rng.integers(0, 7, size=50)
    res = paired_difference(s, s * 2, ratio_statistic(0, 1), clusters=clusters, seed=1, n_resamples=100)
    w = resample_weights(50, 100, seed=1, clusters=clusters)
    ra, rb = w @ s, w @ (s * 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = ra[:, 0] / ra[:, 1] - rb[:, 0] / rb[:, 1]
    np.testing.assert_allclose(res.replicates, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="50.*49"):
        paired_difference(s, s[:49], mean_statistic)


def test_speed_budget_is_plausible() -> None:
    """Smoke check (not a benchmark): 1000 x 10,000 stays far below a second even on a busy CI."""
    import time

    x = np.random.default_rng(9).normal(size=10_000)
    t = time.perf_counter()
    res = bootstrap(_mean_stats(x), mean_statistic, n_resamples=1000, seed=0)
    assert time.perf_counter() - t < 2.0
    assert math.isfinite(res.low)
