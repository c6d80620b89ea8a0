"""Real-size stand-ins of a SITS task's views for ``benchmark estimate`` (no data is read).

A task states its real dataset's sizes as a ``RealSizes`` (class attribute ``real_sizes``); the
views here then hold that many samples of that shape, cut as the profile's recipe cuts them
(``temporal_length`` dates, ``train_crop`` side). Dates are the batch maximum (the collate pads
every series of a batch to the longest), so the estimate is the worst batch, not the average one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmark.estimate_data import EstimateData, ShapeDataset, zeros


@dataclass(frozen=True)
class RealSizes:
    """One real SITS dataset's sizes, with where they come from."""

    side: int  # patch / tile side in pixels
    radar_dates: int  # longest radar series
    optical_dates: int  # longest optical series
    n_train: int
    n_val: int
    n_test: int
    source: str
    coords: bool = False  # samples carry a centroid (PASTIS-R)


def _sample(sizes: RealSizes, channels: dict[str, int], dates: dict[str, int], side: int, label: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"id": "estimate"}
    for modality, t in dates.items():
        item[modality] = zeros(t, channels[modality], side, side)
        item[f"{modality}_dates"] = torch.arange(t, dtype=torch.float32) * 5.0
    if label:
        item["label"] = zeros(side, side, dtype=torch.int64)
    if sizes.coords:
        item["coords"] = zeros(2)
    return item


def sits_estimate_data(task: Any, profile: str) -> EstimateData:
    """The unlabeled, labelled-train and test views of ``task`` at its real sizes under ``profile``."""
    sizes: RealSizes | None = getattr(task, "real_sizes", None)
    if sizes is None:
        raise ValueError(f"task {task.spec.name!r} states no real_sizes: estimate cannot size it")
    length = task.temporal_length.get(profile)
    dates = {"radar": sizes.radar_dates, "optical": sizes.optical_dates}
    if length is not None:
        dates = {m: min(t, int(length)) for m, t in dates.items()}
    crop = task.train_crop.get(profile) or sizes.side
    channels = dict(task.channels)

    def view(n: int, side: int, label: bool) -> ShapeDataset:
        return ShapeDataset(n, lambda i: _sample(sizes, channels, dates, side, label))

    splits = {"unlabeled": view(sizes.n_train, crop, False), "train": view(sizes.n_train, crop, True),
              "test": view(sizes.n_test, sizes.side, True)}
    m = task.spec.metric
    info = {"num_classes": m.num_classes, "ignore_index": m.ignore_index, "class_names": list(m.class_names),
            "channels": channels, "dataset": task.spec.name, "recipe": task.recipe(profile),
            "class_weights": task.loss_weights(profile)}
    cells = tuple(c for c in task.spec.cells if c.params.get("label_fraction") == 1.0 and "pretrain_source" not in c.params)
    return EstimateData(splits=splits, task_info=info, collate=task.collate, cells=cells, source=sizes.source,
                        sizes={**asdict(sizes), "dates": dates, "train_side": crop})
