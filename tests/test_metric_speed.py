"""Micro-benchmarks of the metric kernels (pytest-benchmark).

Skipped by the default run (``--benchmark-skip`` in pyproject). Run them with::

    python -m pytest tests/test_metric_speed.py --benchmark-only

The CRPS group puts our kernel and properscoring's (numba) kernel side by side on the same
array; the properscoring test also stores the in-process speedup in ``extra_info``.
Note: pytest-benchmark's fixture is called ``benchmark``; the harness package is only imported
through ``from benchmark.metrics import ...`` so the names never collide.
"""

from __future__ import annotations

import time

import numpy as np
import properscoring as ps
import pytest
import torch

from benchmark.metrics import bootstrap, confusion_matrix, crps_ensemble, mean_statistic

CRPS_GROUP = "crps obs[200,16384] ens[10,200,16384] float32"


def properscoring_uses_numba() -> bool:
    """properscoring falls back to a NumPy kernel without numba, ~7x slower: a ratio against
    it would flatter ours, so the speed comparisons require the numba gufunc."""
    import properscoring._crps as ps_crps

    return type(ps_crps._crps_ensemble_core).__module__.startswith("numba")


@pytest.fixture(scope="module")
def crps_data() -> dict[str, object]:
    assert properscoring_uses_numba(), "properscoring is not using its numba kernel (pip install numba): the CRPS ratio would be meaningless"
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((200, 16384), dtype=np.float32)
    ens = rng.standard_normal((10, 200, 16384), dtype=np.float32)
    ps.crps_ensemble(obs[:2, :8], ens[:, :2, :8], axis=0)  # numba compilation outside the timings
    return {"obs": obs, "ens": ens, "obs_t": torch.from_numpy(obs), "ens_t": torch.from_numpy(ens)}


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.benchmark(group=CRPS_GROUP)
def test_crps_standard(benchmark, crps_data) -> None:
    out = benchmark.pedantic(crps_ensemble, args=(crps_data["obs_t"], crps_data["ens_t"]), rounds=5, iterations=1, warmup_rounds=1)
    assert out.dtype == torch.float32 and out.shape == (200, 16384)
    ref = ps.crps_ensemble(crps_data["obs"][:4], crps_data["ens"][:, :4], axis=0)
    np.testing.assert_allclose(out[:4].numpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.benchmark(group=CRPS_GROUP)
def test_crps_fair(benchmark, crps_data) -> None:
    out = benchmark.pedantic(
        crps_ensemble, args=(crps_data["obs_t"], crps_data["ens_t"]), kwargs={"estimator": "fair"},
        rounds=5, iterations=1, warmup_rounds=1,
    )
    assert out.shape == (200, 16384)


@pytest.mark.benchmark(group=CRPS_GROUP)
def test_properscoring_crps(benchmark, crps_data) -> None:
    out = benchmark.pedantic(ps.crps_ensemble, args=(crps_data["obs"], crps_data["ens"]), kwargs={"axis": 0}, rounds=3, iterations=1)
    ours = _best_of(lambda: crps_ensemble(crps_data["obs_t"], crps_data["ens_t"]), 5)
    benchmark.extra_info["crps_ensemble_best_s"] = ours
    benchmark.extra_info["speedup_vs_properscoring"] = benchmark.stats.stats.min / ours
    assert out.shape == (200, 16384)


@pytest.mark.benchmark(group="bootstrap 1000 resamples x 10,000 units")
def test_bootstrap_iid(benchmark) -> None:
    x = np.random.default_rng(1).normal(size=10_000)
    stats = np.stack([x, np.ones_like(x)], axis=1)
    res = benchmark(bootstrap, stats, mean_statistic, n_resamples=1000, seed=0)
    assert res.low < res.estimate < res.high


@pytest.mark.benchmark(group="bootstrap 1000 resamples x 10,000 units")
def test_bootstrap_cluster(benchmark) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=10_000)
    stats = np.stack([x, np.ones_like(x)], axis=1)
    clusters = rng.integers(0, 500, size=10_000)
    res = benchmark(bootstrap, stats, mean_statistic, n_resamples=1000, seed=0, clusters=clusters)
    assert res.extra["n_clusters"] == 500


@pytest.fixture(scope="module")
def seg_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 20, (16, 128, 128), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target, torch.randint(0, 20, target.shape, generator=g))
    target[:, :8] = 255  # some ignored pixels
    return pred, target


@pytest.mark.benchmark(group="confusion_matrix [16,128,128] K=20")
def test_confusion_matrix_per_unit(benchmark, seg_data) -> None:
    cm = benchmark(confusion_matrix, *seg_data, 20, ignore_index=255, per_unit=True)
    assert cm.shape == (16, 20, 20) and int(cm.sum()) == 16 * 120 * 128


@pytest.mark.benchmark(group="confusion_matrix [16,128,128] K=20")
def test_confusion_matrix_total(benchmark, seg_data) -> None:
    cm = benchmark(confusion_matrix, *seg_data, 20, ignore_index=255)
    assert cm.shape == (20, 20)
