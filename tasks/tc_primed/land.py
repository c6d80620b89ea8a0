"""Land mask lookups that give exactly ``global_land_mask.globe.is_land`` without its import cost.

Importing ``global_land_mask`` decompresses a 1 km global mask into ~930 MB of RAM (≈ 6 s), once
in every process; ``prepare`` runs in several worker processes. The first call here saves the
package's mask bit-packed (117 MB) under the benchmark cache and every later lookup, in any
process, memory-maps it. Index arithmetic is the package's (nearest-lower cell of its lat/lon
axes, clipped), so results are identical (a test compares them on random points).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np


def _cache_dir() -> Path:
    from benchmark.data import default_data_root

    return default_data_root() / "cache" / "global_land_mask"


@cache
def _table() -> tuple[np.ndarray, float, float, float, float, float, float, float, float]:
    """(bit-packed ocean mask, lat0, dlat, lat_min, lat_max, lon0, dlon, lon_min, lon_max)."""
    from importlib.metadata import version

    folder = _cache_dir()
    tag = version("global-land-mask")
    bits_path, axes_path = folder / f"ocean-bits-{tag}.npy", folder / f"axes-{tag}.json"
    if not (bits_path.is_file() and axes_path.is_file()):
        from global_land_mask import globe

        ocean = np.asarray(globe._mask, dtype=bool)
        lat, lon = np.asarray(globe._lat, dtype=np.float64), np.asarray(globe._lon, dtype=np.float64)
        axes = [float(lat[0]), float(lat[1] - lat[0]), float(lat.min()), float(lat.max()),
                float(lon[0]), float(lon[1] - lon[0]), float(lon.min()), float(lon.max())]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = bits_path.with_name(f"{bits_path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as fh:
                np.save(fh, np.packbits(ocean, axis=1))
            tmp.replace(bits_path)
            axes_path.write_text(json.dumps(axes))
        except OSError:  # read-only cache: keep the packed table in memory
            return (np.packbits(ocean, axis=1), *axes)  # type: ignore[return-value]
    axes = json.loads(axes_path.read_text())
    return (np.load(bits_path, mmap_mode="r"), *axes)  # type: ignore[return-value]


def is_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Boolean land mask for latitudes in [-90, 90] and longitudes in [-180, 180] (any shape)."""
    bits, lat0, dlat, lat_min, lat_max, lon0, dlon, lon_min, lon_max = _table()
    lat = np.clip(np.asarray(lat, dtype=np.float64), lat_min, lat_max)
    lon = np.clip(np.asarray(lon, dtype=np.float64), lon_min, lon_max)
    i = ((lat - lat0) / dlat).astype(int)
    j = ((lon - lon0) / dlon).astype(int)
    byte = np.asarray(bits[i, j >> 3])
    ocean = (byte >> (7 - (j & 7))) & 1
    return ocean == 0
