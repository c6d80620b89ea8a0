"""Write the embedded synthetic PASTIS-R dataset in the real on-disk layout.

Same files, names, dtypes and metadata as the Zenodo release (see ``dataset.py``), smaller: by
default 1,000 patches of 16 × 16 px (200 per fold, so 200 test patches), 10–14 S2 dates and
12–16 dates per S1 orbit over September 2018 – November 2019, plus an unlabeled pre-training
pool (``UNLABELED_POOL/``, same layout without annotations) of 1,800 patches from the same
region: three times the labeled training folds, as the S4 paper pre-trained on a separate
unlabeled collection (m2s2-SITS). Scenes come from :mod:`tasks.sits.scene`.

The 19 classes follow PASTIS's nomenclature with calendars of the French crop year (day 0 =
2018-09-01): winter cereals green up in March and are harvested in July, summer crops (corn,
sunflower, soybean, sorghum) grow June–September, meadows and fodder hold green with mowing
cuts, rapeseed and sunflower flower yellow, vines, maize, potatoes and sunflower have rows, and
orchards tree dots. Confusable groups are deliberate, as in the real data: soft wheat / durum /
triticale / mixed cereal / winter barley differ by one or two weeks and a little canopy
structure; corn / sorghum / soybean by timing and structure; meadow / leguminous fodder by their
cuts. Parcel frequencies follow PASTIS's imbalance (meadow and corn common, potatoes and sorghum
rare); parcels touching the patch edge are partly void.

Annotations as in the release: ``ANNOTATIONS/TARGET_{ID}.npy`` (3 × H × W uint8; channel 0 the
semantic map; the release does not document channels 1–2 and no loader reads them: we write the
parcel's class before the edge-void rule, and 1 where that rule voided the pixel) and
``INSTANCE_ANNOTATIONS/`` with ``INSTANCES_{ID}.npy`` (parcel instance ids, 0 = no parcel: the
background class), ``ZONES_{ID}.npy`` (each pixel's object: here the parcel's Voronoi cell, which
is the instance itself) and ``HEATMAP_{ID}.npy`` (centerness: a Gaussian at each instance's
centroid scaled to its extent), which the official loader's instance mode reads.

Deterministic: every patch draws from its own generator seeded by (seed, collection, index), so
the same seed writes byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from tasks.sits.scene import Acquisitions, CropClass, SceneStyle, make_scene, revisit_dates
from tasks.sits.synthetic import note, progress_bar

from .dataset import REFERENCE_DATE, VOID

GENERATOR_VERSION = "pastis-r-synth-2"
POOL_DIR = "UNLABELED_POOL"
EMBEDDED_POOL_FACTOR = 3.0  # the embedded pool: three times the labeled training folds
# Parcel shares of classes 0..18 following PASTIS's imbalance (meadow ≈ 30 %, corn 14 %, grapevine 11 %,
# the rarest ~1 %)
CLASS_SHARES = np.array([0.10, 0.28, 0.09, 0.13, 0.04, 0.03, 0.02, 0.03, 0.10, 0.015, 0.02, 0.02, 0.02, 0.015, 0.025,
                         0.015, 0.015, 0.015, 0.015])
# 1 / sqrt(share), normalised to mean 1: the loss weights of the short ``mini`` budget (``PastisRTask``)
MINI_CLASS_WEIGHTS = tuple(round(float(w), 3) for w in (CLASS_SHARES.sum() / CLASS_SHARES) ** 0.5
                           / ((CLASS_SHARES.sum() / CLASS_SHARES) ** 0.5).mean())
FOLDS = 5
LAST_DAY = 440  # 2019-11-15
STYLE = SceneStyle(void_label=VOID, void_prob=0.25, cloud_prob=0.3, parcel_px=(22, 40))

# Days since 2018-09-01: Jan 1 = 122, Mar 1 = 181, Apr 1 = 212, May 1 = 242, Jun 1 = 273, Jul 1 = 303,
# Aug 1 = 334, Sep 1 = 365, Oct 1 = 395.
PASTIS_CLASSES = (
    CropClass(0, 0, 0.30, structure_db=-1.0, flat=True, texture="patchy", texture_amp=0.5, timing_sd=0),  # background
    CropClass(0, 0, 0.70, structure_db=0.0, flat=True, cuts=(255, 325), texture="patchy", texture_amp=0.15),  # meadow
    CropClass(195, 290, 0.85, structure_db=1.0, harvest=25),  # soft winter wheat
    CropClass(285, 385, 0.90, structure_db=3.0, harvest=20, texture="rows", texture_period=3.0, texture_amp=0.3),  # corn
    CropClass(170, 260, 0.75, structure_db=0.3, harvest=20),  # winter barley
    CropClass(140, 280, 0.80, structure_db=2.0, harvest=20, flower=225, texture="patchy", texture_amp=0.1),  # winter rapeseed
    CropClass(240, 305, 0.65, structure_db=0.5, harvest=20),  # spring barley
    CropClass(275, 355, 0.60, structure_db=2.0, harvest=15, flower=320, texture="rows", texture_period=2.0, texture_amp=0.4),  # sunflower
    CropClass(250, 400, 0.45, structure_db=1.5, harvest=10, texture="rows", texture_period=2.5, texture_amp=0.7),  # grapevine
    CropClass(265, 420, 0.95, structure_db=-0.5, harvest=8),  # beet
    CropClass(210, 305, 0.95, structure_db=1.8, harvest=25),  # winter triticale: wheat + 2 weeks, taller
    CropClass(185, 278, 0.70, structure_db=0.8, harvest=25),  # winter durum wheat: wheat - 10 days, thinner
    CropClass(230, 320, 0.65, structure_db=0.5, harvest=15, texture="patchy", texture_amp=0.45, timing_sd=35),  # fruits, vegetables, flowers
    CropClass(265, 330, 0.90, structure_db=1.2, harvest=10, texture="rows", texture_period=2.0, texture_amp=0.45),  # potatoes
    CropClass(0, 0, 0.80, structure_db=0.6, flat=True, cuts=(230, 275, 320, 365)),  # leguminous fodder
    CropClass(300, 375, 0.85, structure_db=0.8, harvest=15, texture="rows", texture_period=1.5, texture_amp=0.1),  # soybeans
    CropClass(215, 410, 0.60, structure_db=3.5, harvest=5, texture="dots", texture_period=4.0, texture_amp=0.8),  # orchard
    CropClass(200, 295, 0.70, structure_db=1.2, harvest=25, texture="patchy", texture_amp=0.35),  # mixed cereal
    CropClass(305, 405, 0.80, structure_db=2.4, harvest=15, texture="rows", texture_period=3.0, texture_amp=0.3),  # sorghum: corn + 20 days
)


def _yyyymmdd(day: int) -> int:
    d = REFERENCE_DATE + dt.timedelta(days=int(day))
    return d.year * 10000 + d.month * 100 + d.day


def _save_npy(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_json(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc, sort_keys=True))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def instance_annotations(parcels: np.ndarray, parcel_class: np.ndarray) -> dict[str, np.ndarray]:
    """INSTANCES / ZONES / HEATMAP of one patch: every non-background parcel is an instance."""
    ids = np.where(parcel_class[parcels] != 0, parcels + 1, 0).astype(np.int64)
    heat = np.zeros(parcels.shape, dtype=np.float32)
    yy, xx = np.mgrid[0 : parcels.shape[0], 0 : parcels.shape[1]]
    for k in np.unique(ids[ids > 0]):
        inside = ids == k
        cy, cx = yy[inside].mean(), xx[inside].mean()
        sigma = max(1.0, np.sqrt(inside.sum()) / 4)
        heat = np.maximum(heat, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32))
    return {"INSTANCES": ids, "ZONES": ids.copy(), "HEATMAP": heat}


def _collection(out: Path, seed: int, stream: int, ids: list[int], folds: list[int], origin: tuple[int, int], *, size: int,
                s2_dates: tuple[int, int], s1_dates: tuple[int, int], labels: bool, desc: str,
                progress: bool | None) -> dict[str, str]:
    """Write one collection (the labeled dataset or the unlabeled pool) under ``out``."""
    probs = CLASS_SHARES / CLASS_SHARES.sum()
    style = STYLE if labels else SceneStyle(void_label=None, cloud_prob=STYLE.cloud_prob, parcel_px=STYLE.parcel_px)
    files: dict[str, str] = {}
    features = []
    per_fold: dict[str, dict[int, list[tuple[np.ndarray, np.ndarray]]]] = {"S2": {}, "S1A": {}, "S1D": {}}
    for k in progress_bar(len(ids), desc, "patch", progress, range(len(ids))):
        pid, fold = ids[k], folds[k]
        rng = np.random.default_rng([seed, stream, k])
        d2 = revisit_dates(rng, 0, LAST_DAY, *s2_dates)
        da = revisit_dates(rng, 0, LAST_DAY, *s1_dates)
        dd = revisit_dates(rng, 0, LAST_DAY, *s1_dates)
        scene = make_scene(rng, list(PASTIS_CLASSES), probs, Acquisitions(d2, da, (dd,)), size, style)
        arrays = {"S2": scene.optical, "S1A": scene.radar.astype(np.float16), "S1D": scene.extra_radar[0].astype(np.float16)}
        for sat, arr in arrays.items():
            files[f"DATA_{sat}/{sat}_{pid}.npy"] = _save_npy(out / f"DATA_{sat}" / f"{sat}_{pid}.npy", arr)
            a = arr.astype(np.float64)
            per_fold[sat].setdefault(fold, []).append((a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))))
        if labels:
            before = scene.parcel_class[scene.parcels]
            target = np.stack([scene.label, before, (scene.label == VOID) & (before != VOID)]).astype(np.uint8)
            files[f"ANNOTATIONS/TARGET_{pid}.npy"] = _save_npy(out / "ANNOTATIONS" / f"TARGET_{pid}.npy", target)
            for name, arr in instance_annotations(scene.parcels, scene.parcel_class).items():
                rel = f"INSTANCE_ANNOTATIONS/{name}_{pid}.npy"
                files[rel] = _save_npy(out / rel, arr)
        x0, y0 = origin[0] + 10 * size * 4 * (k % 40), origin[1] + 10 * size * 4 * (k // 40)  # Lambert-93-like, 10 m pixels
        ring = [[x0, y0], [x0 + 10 * size, y0], [x0 + 10 * size, y0 + 10 * size], [x0, y0 + 10 * size], [x0, y0]]
        properties = {
            "ID_PATCH": pid, "Fold": fold, "TILE": "T31TFM", "N_Parcel": int(len(np.unique(scene.parcels))),
            "dates-S2": {str(i): _yyyymmdd(d) for i, d in enumerate(d2)},
            "dates-S1A": {str(i): _yyyymmdd(d) for i, d in enumerate(da)},
            "dates-S1D": {str(i): _yyyymmdd(d) for i, d in enumerate(dd)},
        }
        if labels:
            properties["Parcel_Cover"] = float(np.mean(scene.label != 0))
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": properties})
    geo = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}}, "features": features}
    files["metadata.geojson"] = _save_json(out / "metadata.geojson", geo)
    for sat, per in per_fold.items():
        norm = {f"Fold_{f}": {"mean": np.mean([m for m, _ in v], 0).round(6).tolist(), "std": np.mean([s for _, s in v], 0).round(6).tolist()}
                for f, v in sorted(per.items())}
        files[f"NORM_{sat}_patch.json"] = _save_json(out / f"NORM_{sat}_patch.json", norm)
    return files


def generate(out: Path, seed: int = 0, *, n_patches: int = 1000, size: int = 16, s2_dates: tuple[int, int] = (10, 14),
             s1_dates: tuple[int, int] = (12, 16), pool_factor: float = 0.0, progress: bool | None = None) -> dict[str, str]:
    """Write the dataset under ``out`` and return {relative path: sha256} of every file.

    ``pool_factor``: size of the unlabeled pool in units of the labeled training folds (0: none;
    the embedded dataset uses ``EMBEDDED_POOL_FACTOR``).
    ``progress``: a bar per patch on stderr (None: as ``generation_progress`` says, else on a terminal).
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape = {"size": size, "s2_dates": s2_dates, "s1_dates": s1_dates}
    ids = [10_000 + k for k in range(n_patches)]
    files = _collection(out, seed, 1, ids, [k % FOLDS + 1 for k in range(n_patches)], (600_000, 6_500_000), labels=True,
                        desc="generate pastis_r", progress=progress, **shape)
    n_train = sum(1 for k in range(n_patches) if k % FOLDS + 1 <= 3)
    n_pool = int(round(pool_factor * n_train))
    if n_pool:
        pool = _collection(out / POOL_DIR, seed, 2, [100_000 + k for k in range(n_pool)], [k % 3 + 1 for k in range(n_pool)],
                           (600_000, 6_600_000), labels=False, desc="generate pastis_r pool", progress=progress, **shape)
        files.update({f"{POOL_DIR}/{rel}": sha for rel, sha in pool.items()})
    note(f"pastis_r: generated {n_patches} labeled patches and a pool of {n_pool} ({len(files)} files) in "
         f"{time.perf_counter() - start:.1f} s")
    return dict(sorted(files.items()))
