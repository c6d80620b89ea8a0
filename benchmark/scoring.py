"""Metrics from stored per-unit statistics: one definition for scoring a job and for tables.

A job's record and a table that aggregates seeds must compute the same number from the same
``.npz``; both call :func:`metric_input`, which turns the stored columns into per-unit sufficient
statistics and the statistic of their sum. Segmentation stores per-unit confusion matrices;
reconstruction stores per-(sample, channel) rows with their storm in ``cluster``.

Policies made explicit here:

* mIoU runs over a **fixed class set**: the classes present in the test labels (``class_set``),
  identical in every bootstrap replicate and on both sides of a comparison; classes predicted
  but absent from the labels are reported, not averaged.
* The headline interval resamples the task's ``bootstrap.unit``: rows are grouped by their
  ``cluster`` column when the task declares one (TC-PRIMED storms).
* Degenerate predictors are named: a segmentation model predicting (almost) one class, an
  ensemble whose members never differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .contracts import TaskSpec
from .metrics import bootstrap, iou_from_confusion, miou_statistic, truth_classes
from .metrics.bootstrap import Statistic

SEGMENTATION_METRICS: tuple[str, ...] = ("miou", "overall_accuracy")
RECONSTRUCTION_METRICS: tuple[str, ...] = ("crps", "crps_fair", "mae", "rmse", "spread_skill")
ROWS_IID = "crps_rows_iid"  # the TC-PRIMED paper's interval: (sample, channel) rows as independent
CONSTANT_SHARE = 0.99  # a segmentation job predicting one class on >= 99 % of pixels is "constant"

_MEAN_COLUMNS = {"crps": "crps", "crps_fair": "crps_fair", "mae": "abs_error", ROWS_IID: "crps"}


@dataclass(frozen=True)
class MetricInput:
    """Per-unit sufficient statistics of one job, the statistic of their sum, and the clusters."""

    stats: np.ndarray
    statistic: Statistic
    clusters: np.ndarray | None
    interval_unit: str


def metric_names(spec: TaskSpec, members: int | None = None) -> tuple[str, ...]:
    """The metrics a job of ``spec`` reports (fair CRPS and spread-skill need two members)."""
    if spec.family == "segmentation":
        return SEGMENTATION_METRICS
    if (members or spec.metric.ensemble_size or 1) > 1:
        return RECONSTRUCTION_METRICS
    return ("crps", "mae", "rmse")


def class_set(confusions: Sequence[np.ndarray]) -> list[int]:
    """Classes present in the test labels of any of ``confusions`` (each ``[n, K, K]``)."""
    present: set[int] = set()
    for cm in confusions:
        present.update(truth_classes(cm))
    return sorted(present)


def _mean_rows(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.stack([v, np.ones_like(v)], axis=1)


def _ratio(s: np.ndarray) -> np.ndarray:
    return s[..., 0] / s[..., 1]


def _rmse(s: np.ndarray) -> np.ndarray:
    return np.sqrt(s[..., 0] / s[..., 1])


def metric_input(spec: TaskSpec, metric: str, stats: Mapping[str, np.ndarray], *, classes: Sequence[int] | None = None,
                 members: int | None = None) -> MetricInput:
    """What the bootstrap needs for ``metric`` of one job, from its stored statistics.

    ``classes`` fixes the mIoU class set (default: the classes in this job's test labels; pass
    the shared set when several jobs are combined). ``members`` is the ensemble size
    (spread-skill's finite-ensemble factor).
    """
    bs = spec.bootstrap
    if metric in SEGMENTATION_METRICS:
        if "confusion" not in stats:
            raise ValueError(f"metric {metric!r} needs per-unit confusion matrices; the statistics hold {', '.join(stats)}")
        cm = np.asarray(stats["confusion"], dtype=np.float64)
        k = cm.shape[-1]
        if metric == "miou":
            chosen = list(classes) if classes is not None else class_set([cm])
            if not chosen:
                raise ValueError("mIoU is undefined: the test labels hold no counted pixel (every pixel is ignored)")
            statistic = miou_statistic(k, classes=chosen, fixed=True)
        else:
            def statistic(s: np.ndarray) -> np.ndarray:
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.trace(s, axis1=-2, axis2=-1) / s.sum((-2, -1))
        return MetricInput(cm, statistic, None, bs.unit)

    if metric in _MEAN_COLUMNS:
        x, statistic = _mean_rows(_column(stats, _MEAN_COLUMNS[metric])), _ratio
    elif metric == "rmse":
        x, statistic = _mean_rows(_column(stats, "sq_error")), _rmse
    elif metric == "spread_skill":
        m = int(members or spec.metric.ensemble_size or 1)
        if m < 2:
            raise ValueError("spread-skill needs an ensemble of at least two members")
        factor = (m + 1) / m
        x = np.stack([_column(stats, "ens_var"), _column(stats, "sq_error")], axis=1).astype(np.float64)

        def statistic(s: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.sqrt(factor * s[..., 0] / s[..., 1])
    else:
        raise ValueError(f"unknown metric {metric!r} for task {spec.name!r}")
    if metric == ROWS_IID or not bs.cluster:
        return MetricInput(x, statistic, None, bs.row_unit or bs.unit)
    return MetricInput(x, statistic, np.asarray(_column(stats, "cluster")), bs.unit)


def _column(stats: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in stats:
        raise ValueError(f"the stored statistics have no column {name!r} (they hold {', '.join(stats)})")
    return np.asarray(stats[name])


def degenerate(spec: TaskSpec, metric: str, stats: Mapping[str, np.ndarray]) -> str | None:
    """A flag naming a degenerate predictor, or None.

    Segmentation: "constant (class k)" when one class takes >= 99 % of the counted predictions.
    Reconstruction spread-skill: "deterministic" when the members never differ (the ratio is 0
    by construction and says nothing about calibration).
    """
    if spec.family == "segmentation" and "confusion" in stats:
        predicted = np.asarray(stats["confusion"]).sum(axis=(0, 1)).astype(np.float64)  # column sums
        total = predicted.sum()
        if total > 0 and predicted.max() / total >= CONSTANT_SHARE:
            k = int(predicted.argmax())
            names = spec.metric.class_names
            return f"constant (class {names[k] if k < len(names) else k})"
    if metric == "spread_skill" and "ens_var" in stats and not np.any(np.asarray(stats["ens_var"]) > 0):
        return "deterministic"
    return None


def score_job(spec: TaskSpec, stats: Mapping[str, np.ndarray], members: int | None = None) -> dict[str, dict[str, Any]]:
    """Every metric of one job with its headline interval (the record's ``metrics``)."""
    bs = spec.bootstrap
    kw = dict(n_resamples=bs.resamples, level=bs.level, seed=bs.seed)
    out: dict[str, dict[str, Any]] = {}
    names = list(metric_names(spec, members))
    if spec.family == "reconstruction" and bs.cluster:
        names.insert(1, ROWS_IID)
    for name in names:
        mi = metric_input(spec, name, stats, members=members)
        res = bootstrap(mi.stats, mi.statistic, clusters=mi.clusters, method=bs.method, **kw).to_dict()
        res["interval_unit"] = mi.interval_unit
        res["n_units"] = int(res.pop("n_clusters", len(mi.stats)))
        flag = degenerate(spec, name, stats)
        if flag:
            res["flag"] = flag
        out[name] = res
    if spec.family == "segmentation":
        _describe_classes(spec, stats, out["miou"])
    else:
        _describe_rows(spec, stats, out, members)
    return out


def _describe_classes(spec: TaskSpec, stats: Mapping[str, np.ndarray], miou: dict[str, Any]) -> None:
    cm = np.asarray(stats["confusion"])
    k = cm.shape[-1]
    names = spec.metric.class_names or tuple(str(i) for i in range(k))
    chosen = class_set([cm])
    per_class, _, _ = iou_from_confusion(cm.sum(0).astype(np.float64))
    predicted = cm.sum(axis=(0, 1))
    miou["per_class_iou"] = {names[i]: (float(per_class[i]) if i in chosen else None) for i in range(k)}
    miou["class_set"] = [names[i] for i in chosen]
    miou["absent_classes"] = [names[i] for i in range(k) if i not in chosen]
    miou["predicted_absent_classes"] = [names[i] for i in range(k) if i not in chosen and predicted[i] > 0]
    miou["absent_class_policy"] = spec.metric.absent_class_policy


def _describe_rows(spec: TaskSpec, stats: Mapping[str, np.ndarray], out: dict[str, dict[str, Any]], members: int | None) -> None:
    rows = np.asarray(stats["crps"], dtype=np.float64)
    out["crps"]["std"] = float(np.std(rows, ddof=1)) if len(rows) > 1 else 0.0  # the paper's "(std)" over rows
    out["crps"]["estimator"] = "standard"
    out["crps"]["members"] = int(members or spec.metric.ensemble_size or 1)
    out["crps"]["n_rows"] = int(len(rows))
    if ROWS_IID in out:
        out[ROWS_IID]["label"] = f"paper method: {spec.bootstrap.row_unit or 'rows'} as independent"
    if "crps_fair" in out:
        fair = np.asarray(stats["crps_fair"], dtype=np.float64)
        out["crps_fair"]["std"] = float(np.std(fair, ddof=1)) if len(fair) > 1 else 0.0
        out["crps_fair"]["estimator"] = "fair"


def plural(unit: str) -> str:
    """'patch' -> 'patches', 'storm' -> 'storms' (for table text)."""
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def check_defined(spec: TaskSpec, metrics: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise when the task's main metric is undefined: such a job is failed, not an ok NaN."""
    main = metrics.get(spec.metric.name, {})
    est = main.get("estimate")
    if est is None or not np.isfinite(est):
        raise ValueError(f"{spec.metric.name} is undefined ({est}): the test set gives it nothing to average")
