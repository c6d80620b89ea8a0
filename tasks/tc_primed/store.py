"""Read a prepared TC-PRIMED store (written by ``prepare.py``): index, statistics, arrays.

Arrays are memory-mapped ``.npy`` files; when the whole store fits under ``cache_mb`` they are
kept in memory after the first read, so an epoch never re-reads a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import DataError

from .prepare import INDEX_COLUMNS, STORE_FORMAT
from .sensors import CHANNELS

REQUIRED = ("STORE.json", "index.csv", "stats.json", "splits.json", "sources.json")


def check_stats(stats: dict[str, Any], path: Path) -> None:
    """Every source's normalisation statistics: one finite mean and one finite std > 0 per channel
    (a zero or NaN std would surface much later as a NaN loss, without the file)."""
    for source, s in sorted(stats.items()):
        for key in ("mean", "std"):
            try:
                values = np.asarray(s[key], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: source {source} has no numeric {key!r} list; re-run prepare") from None
            if values.shape != (len(CHANNELS),):
                raise DataError(f"{path}: source {source} {key!r} has {values.size} value(s), expected one per channel {list(CHANNELS)}")
            bad = ~np.isfinite(values) | ((values <= 0) if key == "std" else False)
            if bad.any():
                c = int(np.flatnonzero(bad)[0])
                need = "finite and > 0" if key == "std" else "finite"
                raise DataError(f"{path}: source {source} channel {CHANNELS[c]} {key} is {float(values[c])!r}; it must be {need} (re-run prepare)")


def check_splits(index: Any, splits: dict[str, Any], root: Path) -> None:
    """No storm in two splits, in splits.json or in index.csv, and index.csv agrees with splits.json."""
    from tasks.sits.splits import check_disjoint

    try:
        lists = {k: [str(x) for x in splits[k]] for k in ("train", "val", "test")}
    except (KeyError, TypeError):
        raise DataError(f"{root / 'splits.json'}: expected train, val and test lists of storm ids") from None
    check_disjoint(lists, where=str(root / "splits.json"))
    per_storm = index.groupby("atcf_id", sort=True)["split"].unique()
    mixed = [f"{storm} ({'/'.join(sorted(map(str, v)))})" for storm, v in per_storm.items() if len(v) > 1]
    if mixed:
        raise DataError(f"{root / 'index.csv'}: {len(mixed)} storm(s) have rows in more than one split, e.g. {', '.join(mixed[:3])}")
    split_of = {s: k for k, ids in lists.items() for s in ids}
    wrong = [f"{storm} ({v[0]} in index.csv, {split_of.get(storm, 'absent')} in splits.json)"
             for storm, v in per_storm.items() if split_of.get(storm) != v[0]]
    if wrong:
        raise DataError(f"{root / 'index.csv'}: {len(wrong)} storm(s) disagree with {root / 'splits.json'}, e.g. {', '.join(wrong[:3])}")


def is_store(root: Path) -> bool:
    return all((Path(root) / name).is_file() for name in REQUIRED)


@dataclass
class Store:
    root: Path
    index: Any  # pandas.DataFrame, one row per kept observation, sorted by (storm, time, source)
    stats: dict[str, dict[str, Any]]
    splits: dict[str, list[str]]
    characs: dict[str, list[float]]
    characs_names: list[str]
    cache_mb: float = 2048.0
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: Path | str, cache_mb: float = 2048.0) -> Store:
        import pandas as pd

        root = Path(root)
        missing = [n for n in REQUIRED if not (root / n).is_file()]
        if missing:
            raise DataError(f"{root} is not a prepared tc_primed store: missing {', '.join(missing)} (run `python -m benchmark prepare tc_primed`)")
        fmt = json.loads((root / "STORE.json").read_text()).get("format")
        if fmt != STORE_FORMAT:
            raise DataError(f"{root / 'STORE.json'}: format {fmt!r}, this code reads {STORE_FORMAT!r}; re-run prepare")
        index = pd.read_csv(root / "index.csv", dtype={"atcf_id": str, "source": str, "obs_id": str, "split": str, "basin": str})
        absent = [c for c in INDEX_COLUMNS if c not in index.columns]
        if absent:
            raise DataError(f"{root / 'index.csv'}: missing column(s) {absent}")
        stats = json.loads((root / "stats.json").read_text())
        unknown = sorted(set(index["source"]) - set(stats))
        if unknown:
            raise DataError(f"{root / 'stats.json'}: no statistics for source(s) {unknown}")
        check_stats(stats, root / "stats.json")
        sources = json.loads((root / "sources.json").read_text())
        splits = json.loads((root / "splits.json").read_text())
        check_splits(index, splits, root)
        index = index.sort_values(["atcf_id", "time", "source", "obs_id"], kind="stable").reset_index(drop=True)
        return cls(root, index, stats, {k: splits[k] for k in ("train", "val", "test")}, sources["characs"],
                   sources["characs_names"], cache_mb)

    @property
    def nbytes(self) -> float:
        return float((self.index["height"] * self.index["width"]).sum() * 7 * 4)

    def array(self, row: int) -> np.ndarray:
        """[7, H, W] float32 of index row ``row`` (37H, 37V, 89H, 89V in K, lat, lon, land)."""
        hit = self._cache.get(row)
        if hit is not None:
            return hit
        rel = self.index.at[row, "array"]
        path = self.root / rel
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the prepared array ({exc}); re-run prepare") from None
        if arr.ndim != 3 or arr.shape[0] != 7 or arr.dtype != np.float32:
            raise DataError(f"{path}: shape {arr.shape} dtype {arr.dtype}, expected [7, H, W] float32")
        if self.nbytes <= self.cache_mb * 2**20:
            arr = np.array(arr)  # load it: later reads come from memory
            self._cache[row] = arr
        return arr

    def norm(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.stats[source]
        return np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: do not ship the cache
        return {**self.__dict__, "_cache": {}}

