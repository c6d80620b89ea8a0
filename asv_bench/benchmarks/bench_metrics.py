"""asv benchmarks of the metric kernels (``docs/design.md``, performance).

Timing claims are ratios measured side by side in one process: ``time_crps_*`` and
``time_properscoring_crps`` share their data, and ``track_crps_speedup_vs_properscoring`` times
both in the same process. ``track_*_fixture_*`` values are metric values on fixed seeded inputs:
any change in them is a correctness drift, not a performance change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

try:
    import benchmark.metrics  # noqa: F401
except ImportError:  # ``asv run --python=same`` on a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.metrics import (  # noqa: E402
    bootstrap,
    confusion_matrix,
    crps_ensemble,
    iou_from_confusion,
    mean_statistic,
    miou_statistic,
    seeded_paired_difference,
    sign_flip_test,
)

from ._ratio import paired_speedup  # noqa: E402


class CRPSSuite:
    """CRPS on obs [200, 16384], ens [10, 200, 16384] float32 (131 MB), ours vs properscoring."""

    number = 1
    repeat = (1, 5, 20.0)
    timeout = 300

    def setup(self) -> None:
        import properscoring

        rng = np.random.default_rng(0)
        self.obs = rng.standard_normal((200, 16384), dtype=np.float32)
        self.ens = rng.standard_normal((10, 200, 16384), dtype=np.float32)
        self.obs_t = torch.from_numpy(self.obs)
        self.ens_t = torch.from_numpy(self.ens)
        import properscoring._crps as ps_crps

        # Without numba properscoring silently runs a NumPy kernel ~7x slower, and the ratio
        # below would flatter ours: refuse to time that path.
        if not type(ps_crps._crps_ensemble_core).__module__.startswith("numba"):
            raise RuntimeError("properscoring is not using its numba kernel (pip install numba)")
        self.ps_crps = properscoring.crps_ensemble
        self.ps_crps(self.obs[:2, :8], self.ens[:, :2, :8], axis=0)  # numba compilation
        self.ps_crps(self.obs[:2], self.ens[:, :2], axis=0)  # ... and for contiguous arrays

    def time_crps_standard(self) -> None:
        crps_ensemble(self.obs_t, self.ens_t)

    def time_crps_fair(self) -> None:
        crps_ensemble(self.obs_t, self.ens_t, estimator="fair")

    def time_properscoring_crps(self) -> None:
        self.ps_crps(self.obs, self.ens, axis=0)

    def track_crps_speedup_vs_properscoring(self) -> float:
        """properscoring's numba kernel vs ours on the same arrays, alternating; gated in CI."""
        return paired_speedup(lambda: self.ps_crps(self.obs, self.ens, axis=0), lambda: crps_ensemble(self.obs_t, self.ens_t))

    track_crps_speedup_vs_properscoring.unit = "x"

    def peakmem_crps_standard(self) -> None:
        crps_ensemble(self.obs_t, self.ens_t)


class BootstrapSuite:
    """1000 percentile resamples over 10,000 (sum, count) units, IID and 500 clusters."""

    def setup(self) -> None:
        rng = np.random.default_rng(1)
        x = rng.normal(size=10_000)
        self.stats = np.stack([x, np.ones_like(x)], axis=1)
        self.clusters = rng.integers(0, 500, size=10_000)

    def time_bootstrap_10k(self) -> None:
        bootstrap(self.stats, mean_statistic, n_resamples=1000, seed=0)

    def time_bootstrap_10k_clusters(self) -> None:
        bootstrap(self.stats, mean_statistic, n_resamples=1000, seed=0, clusters=self.clusters)

    def track_bootstrap_speedup_vs_scipy(self) -> float:
        """Our weight-matrix percentile bootstrap vs ``scipy.stats.bootstrap`` (percentile method,
        the same 1000 resamples of the same mean), timed side by side in this process. Gated in CI."""
        from scipy import stats

        x = self.stats[:, 0]
        return paired_speedup(lambda: stats.bootstrap((x,), np.mean, n_resamples=1000, method="percentile", vectorized=True, random_state=0),
                              lambda: bootstrap(self.stats, mean_statistic, n_resamples=1000, seed=0))

    track_bootstrap_speedup_vs_scipy.unit = "x"


class ComparisonSuite:
    """What a table's comparisons cost: 10,000-resample two-level paired bootstraps (3 seeds per
    side) at PASTIS-R size (30 patches, 19 classes, fixed class set) and at TC-PRIMED size
    (3,000 rows in 9 storms, + the exact 2^9 sign-flip test)."""

    def setup(self) -> None:
        rng = np.random.default_rng(5)
        self.cms = [rng.integers(0, 50, size=(30, 19, 19)).astype(np.float64) for _ in range(6)]
        self.miou = miou_statistic(19, classes=list(range(19)), fixed=True)
        self.rows = [np.stack([rng.normal(7, 2, 3000), np.ones(3000)], 1) for _ in range(6)]
        self.storms = np.repeat(np.arange(9), 334)[:3000]

    def time_paired_miou_10k(self) -> None:
        seeded_paired_difference(self.cms[:3], self.cms[3:], self.miou, n_resamples=10_000, seed=0)

    def time_paired_crps_storms_10k(self) -> None:
        seeded_paired_difference(self.rows[:3], self.rows[3:], mean_statistic, n_resamples=10_000, seed=0, clusters=self.storms,
                                 higher_is_better=False)

    def time_sign_flip_9_storms_exact(self) -> None:
        sign_flip_test(self.rows[:3], self.rows[3:], mean_statistic, clusters=self.storms)


class SegmentationSuite:
    """Confusion matrices of [16, 128, 128] predictions, K = 20, and a 500-patch mIoU bootstrap."""

    def setup(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.target = torch.randint(0, 20, (16, 128, 128), generator=g)
        noise = torch.randint(0, 20, self.target.shape, generator=g)
        self.pred = torch.where(torch.rand(self.target.shape, generator=g) < 0.7, self.target, noise)
        self.target[:, :8] = 255
        rng = np.random.default_rng(4)
        self.cms = rng.integers(0, 50, size=(500, 20, 20)).astype(np.int64)

    def time_confusion_matrix(self) -> None:
        confusion_matrix(self.pred, self.target, 20, ignore_index=255, per_unit=True)

    def time_miou_bootstrap_500_patches(self) -> None:
        bootstrap(self.cms, miou_statistic(20), n_resamples=1000, seed=0)


class FixtureValues:
    """Metric values on small fixed inputs: they must only change when a metric's definition does."""

    def setup(self) -> None:
        rng = np.random.default_rng(1234)
        self.obs = torch.from_numpy(rng.normal(size=(8, 64)))
        self.ens = torch.from_numpy(rng.normal(size=(10, 8, 64)) * 1.3 + 0.2)
        target = torch.from_numpy(rng.integers(0, 5, size=(6, 16, 16)))
        pred = torch.where(torch.from_numpy(rng.random((6, 16, 16))) < 0.6, target, torch.from_numpy(rng.integers(0, 5, size=(6, 16, 16))))
        self.cms = confusion_matrix(pred, target, 5, per_unit=True).numpy()

    def track_crps_standard_fixture_mean(self) -> float:
        return float(crps_ensemble(self.obs, self.ens).mean())

    track_crps_standard_fixture_mean.unit = "crps"

    def track_crps_fair_fixture_mean(self) -> float:
        return float(crps_ensemble(self.obs, self.ens, estimator="fair").mean())

    track_crps_fair_fixture_mean.unit = "crps"

    def track_miou_fixture(self) -> float:
        return float(iou_from_confusion(self.cms.sum(0))[1])

    track_miou_fixture.unit = "iou"

    def track_miou_fixture_ci_low(self) -> float:
        return bootstrap(self.cms, miou_statistic(5), n_resamples=1000, seed=0).low

    track_miou_fixture_ci_low.unit = "iou"
