"""Write the embedded synthetic PASTIS-R dataset in the real on-disk layout.

Same files, names, dtypes and metadata as the Zenodo release (see ``dataset.py``), smaller: by
default 150 patches of 32 × 32 px (30 per fold), 20–30 S2 dates and 24–36 dates per S1 orbit
over September 2018 – November 2019. Class frequencies follow PASTIS's imbalance (meadow and
corn common, sorghum and potatoes rare); parcels touching the patch edge are partly void.
Deterministic: the same seed writes byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from tasks.sits.synthetic import crop_catalog, irregular_dates, make_scene, note, progress_bar

from .dataset import REFERENCE_DATE, VOID

GENERATOR_VERSION = "pastis-r-synth-1"
# Pixel shares of classes 0..18 loosely following PASTIS (meadow ≈ 26 %, corn 11 %, grapevine 8.7 %, ...)
CLASS_SHARES = np.array([0.10, 0.30, 0.09, 0.14, 0.04, 0.03, 0.015, 0.03, 0.11, 0.012, 0.02, 0.02, 0.02, 0.008, 0.025, 0.015, 0.015, 0.008, 0.006])
FOLDS = 5
LAST_DAY = 440  # 2019-11-15


def _yyyymmdd(day: int) -> int:
    d = REFERENCE_DATE + dt.timedelta(days=int(day))
    return d.year * 10000 + d.month * 100 + d.day


def _save_npy(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(out: Path, seed: int = 0, *, n_patches: int = 150, size: int = 32, s2_dates: tuple[int, int] = (20, 30),
             s1_dates: tuple[int, int] = (24, 36), cloud_prob: float = 0.35, s1_dtype: str = "float16",
             progress: bool | None = None) -> dict[str, str]:
    """Write the dataset under ``out`` and return {relative path: sha256} of every file.
    ``progress``: a bar per patch on stderr (None: as ``generation_progress`` says, else on a terminal)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = crop_catalog(len(CLASS_SHARES), np.random.default_rng(seed + 10_000), background=True)
    probs = CLASS_SHARES / CLASS_SHARES.sum()
    files: dict[str, str] = {}
    features = []
    per_fold: dict[str, dict[int, list[tuple[np.ndarray, np.ndarray]]]] = {"S2": {}, "S1A": {}, "S1D": {}}
    for k in progress_bar(n_patches, "generate pastis_r", "patch", progress, range(n_patches)):
        pid = 10_000 + k
        fold = k % FOLDS + 1
        d2 = irregular_dates(rng, 0, LAST_DAY, *s2_dates)
        da = irregular_dates(rng, 0, LAST_DAY, *s1_dates)
        dd = irregular_dates(rng, 0, LAST_DAY, *s1_dates)
        scene = make_scene(rng, classes, probs, d2.astype(float), da.astype(float), size, void_label=VOID,
                           cloud_prob=cloud_prob, extra_radar_doy=(dd.astype(float),), void_prob=0.3)
        arrays = {"S2": scene.optical, "S1A": scene.radar.astype(s1_dtype), "S1D": scene.extra_radar[0].astype(s1_dtype)}
        for sat, arr in arrays.items():
            files[f"DATA_{sat}/{sat}_{pid}.npy"] = _save_npy(out / f"DATA_{sat}" / f"{sat}_{pid}.npy", arr)
            a = arr.astype(np.float64)
            per_fold[sat].setdefault(fold, []).append((a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))))
        target = np.stack([scene.label, scene.parcels % 256, np.zeros_like(scene.label)]).astype(np.uint8)
        files[f"ANNOTATIONS/TARGET_{pid}.npy"] = _save_npy(out / "ANNOTATIONS" / f"TARGET_{pid}.npy", target)
        x0, y0 = 600_000 + 1280 * (k % 20), 6_500_000 + 1280 * (k // 20)  # Lambert-93-like footprint, 10 m pixels
        ring = [[x0, y0], [x0 + 10 * size, y0], [x0 + 10 * size, y0 + 10 * size], [x0, y0 + 10 * size], [x0, y0]]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "ID_PATCH": pid, "Fold": fold, "TILE": "T31TFM", "N_Parcel": int(len(np.unique(scene.parcels))),
                "Parcel_Cover": float(np.mean(scene.label != 0)),
                "dates-S2": {str(i): _yyyymmdd(d) for i, d in enumerate(d2)},
                "dates-S1A": {str(i): _yyyymmdd(d) for i, d in enumerate(da)},
                "dates-S1D": {str(i): _yyyymmdd(d) for i, d in enumerate(dd)},
            },
        })
    geo = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}}, "features": features}
    (out / "metadata.geojson").write_text(json.dumps(geo, sort_keys=True))
    files["metadata.geojson"] = hashlib.sha256((out / "metadata.geojson").read_bytes()).hexdigest()
    for sat, folds in per_fold.items():
        norm = {f"Fold_{f}": {"mean": np.mean([m for m, _ in v], 0).round(6).tolist(), "std": np.mean([s for _, s in v], 0).round(6).tolist()}
                for f, v in sorted(folds.items())}
        path = out / f"NORM_{sat}_patch.json"
        path.write_text(json.dumps(norm, sort_keys=True))
        files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    note(f"pastis_r: generated {n_patches} patches ({len(files)} files) in {time.perf_counter() - start:.1f} s")
    return dict(sorted(files.items()))
