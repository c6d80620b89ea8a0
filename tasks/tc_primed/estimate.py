"""Real-size stand-ins of TC-PRIMED's windows for ``benchmark estimate`` (no data is read).

Each window holds the most memory-hungry observations a real one can hold: AMSR2's 89 GHz swath
(214 x 486 pixels), GMI's (171 x 221) and an SSM/I(S) swath (180 x 180), about 11,000 tokens at
patch 4, whole swaths as at ``paper`` (the profile's ``crop`` applies otherwise). The third source
differs from window to window, so a batch of m windows holds 2 + m source slots, each padded to
the batch: the worst case of the collate. Window counts are stated assumptions (``SIZES``).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmark.estimate_data import EstimateData, ShapeDataset, zeros

from .sensors import CHANNELS, CHARAC_NAMES, SOURCE_NAMES
from .windows import MAX_TRAIN_SOURCES

SWATHS: dict[str, tuple[int, int]] = {"AMSR2": (214, 486), "GMI": (171, 221), "other": (180, 180)}
SIZES: dict[str, Any] = {
    "n_train": 140_000,  # ~70 % of the >197,000 TC-PRIMED overpasses, each a window's t0
    "n_val": 20_000,  # ~15 % of the storms, one window per 6 h bin or more
    "n_test": 15_000,  # one window per test storm and 6 h bin
    "swaths": SWATHS,
    "sources_per_window": MAX_TRAIN_SOURCES,
}
SOURCE = ("TC-PRIMED v01r01: AMSR2 89 GHz swaths 201-214 x 486, GMI 171 x 221, SSM/I(S) ~180 x 180 "
          "(whole swaths); window counts assumed from >197,000 overpasses (70/15/15 % storm split)")


def _window(index: int, crop: int | None, target: bool) -> dict[str, Any]:
    big = [n for n in SOURCE_NAMES if n.startswith(("AMSR2", "GMI"))]
    small = [n for n in SOURCE_NAMES if n not in big]
    names = [*big, small[index % len(small)]][:MAX_TRAIN_SOURCES]
    sources = {}
    for k, name in enumerate(names):
        h, w = SWATHS.get(name.split("_")[0], SWATHS["other"])
        if crop is not None:
            h, w = min(h, crop), min(w, crop)
        sources[name] = {"values": zeros(len(CHANNELS), h, w), "coords": zeros(2, h, w), "dt": torch.tensor(0.5 * k),
                         "landmask": zeros(h, w), "characs": zeros(len(CHARAC_NAMES)), "avail": torch.tensor(True)}
    item: dict[str, Any] = {"sources": sources, "target": names[0] if target else None, "id": f"estimate@{index}",
                            "storm": f"estimate{index}", "t0": 1.5e9 + 3600.0 * index, "window_h": 6.0, "n_available": len(names)}
    if target:
        item["target_mean"], item["target_std"] = zeros(len(CHANNELS)), torch.ones(len(CHANNELS))
    return item


def tc_estimate_data(task: Any, profile: str) -> EstimateData:
    """Train, val and test windows of TC-PRIMED at real swath sizes under ``profile``."""
    crop = task.recipe(profile).get("crop")
    splits = {split: ShapeDataset(SIZES[f"n_{split}"], lambda i, t=split == "test": _window(i, crop, t))
              for split in ("train", "val", "test")}
    cell = task.spec.cells[-1]  # 6 h windows, all inputs: the largest
    info = {"sources": list(SOURCE_NAMES), "channels": len(CHANNELS), "channel_names": list(CHANNELS),
            "characs_dim": len(CHARAC_NAMES), "characs_names": list(CHARAC_NAMES), "max_train_sources": MAX_TRAIN_SOURCES,
            "dt_units": "hours before t0", **dict(cell.params), "data_kind": "estimate"}
    return EstimateData(splits=splits, task_info=info, collate=task.collate, cells=(cell,), source=SOURCE,
                        sizes={**SIZES, "crop": crop}, inputs=task.inputs)
