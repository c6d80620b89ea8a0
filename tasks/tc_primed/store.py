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

REQUIRED = ("STORE.json", "index.csv", "stats.json", "splits.json", "sources.json")


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
        sources = json.loads((root / "sources.json").read_text())
        splits = json.loads((root / "splits.json").read_text())
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

