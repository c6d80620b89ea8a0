"""The catalogue steps of ``prepare`` that look across files: thinning, storm split, statistics.

They run in the main process on the per-file records (cheap), so an incremental re-run only reads
the new raw files and redoes these steps on everything.

* Thinning: within each (storm, source), a greedy pass from the earliest observation keeps only
  observations at least 6 h after the last one kept (the authors' ``min_time_between_same_source``).
* Split: storms, not observations, are split 70/15/15. Rule (frozen in ``splits/rule.json``):
  sort the storm ids, permute them with ``numpy.random.default_rng(42).permutation``; the first
  ceil(0.15 n) are test, the next ceil(0.15 n) val, the rest train. Storms already assigned (an
  earlier run's ``splits.json`` or a ``--splits`` file) keep their split; new storms are split
  among themselves by the same rule.
* Statistics: per source and channel, mean and standard deviation over every valid pixel of the
  kept *training* observations, merged from per-file partial moments (Chan et al.), in sorted
  file order so the result does not depend on worker scheduling. A source with no training pixel
  falls back to the pooled training statistics of all sources (reported).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .sensors import CHANNELS

MIN_SAME_SOURCE_S = 6 * 3600
SPLIT_SEED = 42
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_RULE = {
    "task": "tc_primed",
    "unit": "storm (ATCF id)",
    "fractions": FRACTIONS,
    "seed": SPLIT_SEED,
    "rule": "sort storm ids; numpy.random.default_rng(seed).permutation; first ceil(0.15 n) -> test, "
            "next ceil(0.15 n) -> val, rest -> train; storms already assigned keep their split",
    "thinning": "per (storm, source), greedy from the earliest: keep observations >= 6 h after the last kept",
    "normalization": "per source and channel, mean/std over valid pixels of kept training observations",
}


def thin(records: list[dict[str, Any]], min_gap_s: float = MIN_SAME_SOURCE_S) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped) records: same-source observations of a storm at least ``min_gap_s`` apart."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["atcf_id"], r["source"]), []).append(r)
    kept, dropped = [], []
    for key in sorted(groups):
        last = -math.inf
        for r in sorted(groups[key], key=lambda r: (r["time"], r["obs_id"])):
            if r["time"] - last >= min_gap_s:
                kept.append(r)
                last = r["time"]
            else:
                dropped.append(r)
    kept.sort(key=lambda r: (r["atcf_id"], r["time"], r["source"], r["obs_id"]))
    return kept, dropped


def split_storms(storms: Iterable[str], seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """Assign storm ids to train/val/test by the frozen rule (module docstring)."""
    ids = sorted(set(storms))
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_test = math.ceil(FRACTIONS["test"] * len(ids))
    n_val = math.ceil(FRACTIONS["val"] * len(ids))
    return {"train": sorted(perm[n_test + n_val:]), "val": sorted(perm[n_test: n_test + n_val]), "test": sorted(perm[:n_test])}


def assign_splits(storms: Iterable[str], existing: Mapping[str, Iterable[str]] | None = None) -> dict[str, list[str]]:
    """Keep earlier assignments; split the storms not seen before by the rule."""
    storms = set(storms)
    known = {s: split for split, ids in (existing or {}).items() if split in FRACTIONS for s in ids}
    new = split_storms(s for s in storms if s not in known)
    out = {split: sorted({s for s, sp in known.items() if sp == split and s in storms} | set(new[split])) for split in FRACTIONS}
    return out


def moments(values: np.ndarray) -> list[list[float]]:
    """Per channel [count, mean, M2] of the finite values of a [C, H, W] array (float64)."""
    out = []
    for ch in values:
        v = ch[np.isfinite(ch)].astype(np.float64)
        mean = float(v.mean()) if v.size else 0.0
        out.append([float(v.size), mean, float(((v - mean) ** 2).sum()) if v.size else 0.0])
    return out


def merge_moments(parts: Iterable[list[list[float]]], channels: int = len(CHANNELS)) -> np.ndarray:
    """Chan's parallel merge of per-file [count, mean, M2] rows -> [C, 3]."""
    acc = np.zeros((channels, 3))
    for part in parts:
        for c, (n_b, mean_b, m2_b) in enumerate(part):
            n_a, mean_a, m2_a = acc[c]
            n = n_a + n_b
            if n_b == 0:
                continue
            delta = mean_b - mean_a
            acc[c] = (n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n)
    return acc


def normalization_stats(kept: list[dict[str, Any]], train_storms: Iterable[str], sources: Iterable[str]) -> dict[str, Any]:
    """Per source: mean, std, pixel count per channel, from training storms only."""
    train = set(train_storms)
    rows = sorted((r for r in kept if r["atcf_id"] in train), key=lambda r: r["raw"])
    pooled = merge_moments(r["moments"] for r in rows)
    out: dict[str, Any] = {}
    for src in sources:
        acc = merge_moments(r["moments"] for r in rows if r["source"] == src)
        fallback = bool((acc[:, 0] == 0).any())
        use = pooled if fallback else acc
        std = np.sqrt(use[:, 2] / np.maximum(use[:, 0], 1))
        out[src] = {"mean": [round(float(x), 6) for x in use[:, 1]], "std": [round(float(max(x, 1e-3)), 6) for x in std],
                    "pixels": [int(x) for x in acc[:, 0]], "pooled_fallback": fallback}
    return out
