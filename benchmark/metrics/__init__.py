"""Metric kernels working on sufficient statistics (``docs/design.md``; intervals: ``docs/statistics.md``).

CRPS (torch, sort-network based, standard and fair estimators), ensemble scores, confusion
matrices / IoU, a matrix-product bootstrap over per-unit statistics, and its two-level
(seeds × units) form with p-values, a sign-flip test and Holm's adjustment.
"""

from .bootstrap import (
    BootstrapResult,
    bootstrap,
    mean_statistic,
    miou_statistic,
    paired_difference,
    ratio_statistic,
    resample_weights,
    truth_classes,
)
from .crps import ESTIMATORS, crps_ensemble
from .ensemble import ensemble_statistics, mae, rmse, spread_skill_ratio
from .seeded import holm, seeded_bootstrap, seeded_paired_difference, sign_flip_test
from .segmentation import confusion_matrix, iou_from_confusion, overall_accuracy

__all__ = [
    "ESTIMATORS",
    "BootstrapResult",
    "bootstrap",
    "confusion_matrix",
    "crps_ensemble",
    "ensemble_statistics",
    "iou_from_confusion",
    "mae",
    "mean_statistic",
    "miou_statistic",
    "overall_accuracy",
    "paired_difference",
    "ratio_statistic",
    "resample_weights",
    "rmse",
    "holm",
    "seeded_bootstrap",
    "seeded_paired_difference",
    "sign_flip_test",
    "spread_skill_ratio",
    "truth_classes",
]
