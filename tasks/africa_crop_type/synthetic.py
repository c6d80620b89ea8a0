"""The embedded synthetic South Sudan dataset, written in the SustainBench layout.

Scenes come from :mod:`tasks.sits.scene` (parcels, phenology, sub-field texture, soil moisture,
clouds and shadows, radar with speckle, all from the same ground). What is specific to South Sudan:

* 16 × 16 px tiles (``size``; the real ones are 64 × 64), ``n_tiles`` of them (600 by default:
  65 / 15 / 20 % train, val, test in ``list_eval_partition.csv``) plus ``extra_test`` test tiles
  (the embedded set adds ``EMBEDDED_EXTRA_TEST`` = 360, so 390 / 90 / 480), six-digit ids drawn from 1..7999 like the real ones. The
  extra tiles come from streams of their own, so the first 600 tiles (v3's) keep their bytes: v4
  only quadrupled the test partition, whose tile-to-tile spread dominated the radar intervals;
* an unlabeled pre-training pool in the same layout, ``unlabeled_pool/`` (its own csv, ``npy/``
  and dates, no ``truth/``), three times the training partition (ids from 10000 up), as the S4
  paper pre-trained on a separate unlabeled collection;
* four crops (raw labels 1 sorghum, 2 maize, 3 rice, 4 groundnut) with the real imbalance, and
  the raw 0 "unlabelled" covering most of every tile: background parcels (bare/mixed land),
  crop parcels nobody surveyed (their imagery is a crop, their label is 0), and half of the
  parcels cut by the tile edge;
* Sentinel-2 is sparse and cloudy (8–14 dates of a jittered revisit over 2017, 20 % of them
  clouded), Sentinel-1 denser (14–20 dates) and speckled (dates are days since 2017-01-01 in the
  reader); crops differ by season timing, peak greenness, canopy structure in radar (tall
  sorghum and maize rows, flooded rice) and texture, and rice is hard to tell from sorghum in RGB;
* file formats as in the release: ``s2`` 10 × H × W × T **uint16** reflectance × 10 000 (B2, B3,
  B4, B5, B6, B7, B8, B8A, B11, B12), ``s1`` 3 × H × W × T **float32** (VV dB, VH dB and their
  quotient VH/VV — the real ratio channel's huge spread, std 21.75, suggests a quotient of dB
  values), ``planet`` a small 4 × H/2 × W/2 × 3 uint16 stand-in (B, G, R, NIR; the reader ignores
  it), ``truth`` H × W uint8; time is the last axis and is written in **reverse chronological
  order**, with the dates JSONs in the same (file) order, so the reader's date sort is exercised.

Determinism: every tile draws from its own generator seeded by (seed, tile index), ids and
partitions from a separate stream, and the ``.npz`` files are written with fixed zip timestamps
(``np.savez``/``np.savez_compressed`` stamp the current time into each member), so the same seed
gives byte-identical files. Image archives are stored uncompressed like ``np.savez`` (noisy
imagery deflates by only ~15 % at 5x the generation time); labels are deflated. The default set
(with the pool) is ~250 MB.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from tasks.sits.scene import Acquisitions, CropClass, SceneStyle, make_scene, revisit_dates
from tasks.sits.synthetic import note, progress_bar

from .dataset import COUNTRY, PARTITION_CSV, POOL_DIR, dates_path, image_path, truth_path

YEAR = 2017
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
EMBEDDED_POOL_FACTOR = 3.0  # the embedded pool: three times the training partition
EMBEDDED_EXTRA_TEST = 360  # v4: 480 test tiles (v3 had 120; the tile-to-tile spread dominated the radar intervals)
CROP_SHARES = (0.68, 0.11, 0.12, 0.09)  # sorghum, maize, rice, groundnut (share of crop parcels)
# Raw label order: 0 non-crop land, then the crops. Days of year 2017 (rainy season ~May-October).
# Sorghum: long season, tall stalks; maize: earlier and shorter, denser canopy; rice: flooded
# (specular water lowers backscatter), late; groundnut: short, low canopy. Pairs overlap in time,
# so single dates do not separate them, and clouds and speckle blur the rest.
SOUTH_SUDAN_CROPS = (
    CropClass(0, 0, 0.20, structure_db=-1.0, flat=True, texture="patchy", texture_amp=0.5, timing_sd=0),
    CropClass(green_up=165, senescence=300, peak=0.75, structure_db=2.5, harvest=20, texture="rows", texture_period=3.0, texture_amp=0.3),
    CropClass(green_up=150, senescence=245, peak=0.85, structure_db=1.5, harvest=20, texture="rows", texture_period=2.5, texture_amp=0.25),
    CropClass(green_up=190, senescence=290, peak=0.90, structure_db=-1.0, harvest=10, texture="patchy", texture_amp=0.2),
    CropClass(green_up=170, senescence=255, peak=0.55, structure_db=0.0, harvest=10, texture="patchy", texture_amp=0.1),
)


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """An ``.npz`` (stored like ``np.savez``, or deflated) with fixed member timestamps, so identical
    arrays give identical bytes. Noisy float imagery barely deflates (~15 %) at a high time cost."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


class _Writer:
    def __init__(self, out: Path):
        self.out = out
        self.manifest: dict[str, str] = {}

    def write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.manifest[path.relative_to(self.out).as_posix()] = hashlib.sha256(data).hexdigest()

    def json(self, path: Path, doc: dict) -> None:
        self.write(path, (json.dumps(doc, sort_keys=True) + "\n").encode())


def _iso(doy: np.ndarray) -> list[str]:
    start = dt.date(YEAR, 1, 1)
    return [(start + dt.timedelta(days=int(d))).isoformat() for d in doy]


def _time_last_reversed(series: np.ndarray) -> np.ndarray:
    """[T, C, H, W] chronological → C × H × W × T, newest date first."""
    return np.ascontiguousarray(series.transpose(1, 2, 3, 0)[..., ::-1])


def _tile(rng: np.random.Generator, classes: list[CropClass], probs: np.ndarray, *, size: int, s2_dates: tuple[int, int],
          s1_dates: tuple[int, int], season: tuple[int, int], style: SceneStyle, unsurveyed: float) -> dict:
    """One tile's arrays (file layout), raw truth and dates."""
    doy_o = revisit_dates(rng, season[0], season[1], *s2_dates)
    doy_r = revisit_dates(rng, season[0], season[1], *s1_dates)
    scene = make_scene(rng, classes, probs, Acquisitions(doy_o, doy_r), size, style)
    label = scene.label.copy()
    crop_parcels = np.unique(scene.parcels[label > 0])
    hidden = crop_parcels[rng.random(len(crop_parcels)) < unsurveyed]
    label[np.isin(scene.parcels, hidden)] = 0

    s2 = np.clip(scene.optical.astype(np.int32), 0, 65535).astype(np.uint16)  # [T, 10, H, W]
    vv, vh = scene.radar[:, 0], scene.radar[:, 1]
    denom = np.where(np.abs(vv) < 0.1, np.where(vv < 0, -0.1, 0.1), vv)  # keep the quotient finite
    s1 = np.stack([vv, vh, vh / denom], axis=1).astype(np.float32)  # [T, 3, H, W]
    pick = np.unique(np.linspace(0, len(doy_o) - 1, 3).round().astype(int))
    h2 = size // 2
    planet = s2[pick][:, [0, 1, 2, 6]].astype(np.float32)
    planet = planet[:, :, : 2 * h2, : 2 * h2].reshape(len(pick), 4, h2, 2, h2, 2).mean((3, 5))
    planet = planet.round().astype(np.uint16)
    arrays = {"s1": _time_last_reversed(s1), "s2": _time_last_reversed(s2), "planet": _time_last_reversed(planet)}
    return {"arrays": arrays, "truth": label.astype(np.uint8), "doy_o": doy_o, "doy_r": doy_r, "pick": pick}


def write_south_sudan(
    out: Path,
    seed: int = 0,
    *,
    n_tiles: int = 600,
    extra_test: int = 0,
    size: int = 16,
    fractions: tuple[float, float, float] = (0.65, 0.15, 0.20),
    background: float = 0.45,
    unsurveyed: float = 0.3,
    crop_shares: tuple[float, ...] = CROP_SHARES,
    s2_dates: tuple[int, int] = (8, 14),
    s1_dates: tuple[int, int] = (14, 20),
    cloud_prob: float = 0.2,  # v3; at v2's 0.35 the from-scratch U-Net stayed constant on optical at mini (docs/embedded_data.md)
    season: tuple[int, int] = (0, 364),
    catalog: tuple[CropClass, ...] = SOUTH_SUDAN_CROPS,
    pool_factor: float = 0.0,
    progress: bool | None = None,
) -> dict[str, str]:
    """Write the synthetic ``southsudan`` folder into ``out``; returns {relative path: sha256}.

    ``background`` is the share of parcels that are non-crop land (raw label 0), ``unsurveyed``
    the share of crop parcels left unlabelled, ``crop_shares`` the class shares among crop parcels,
    ``pool_factor`` the size of the unlabeled pool in training partitions (0: none; the embedded
    dataset uses ``EMBEDDED_POOL_FACTOR``), ``extra_test`` the test tiles added to the ``n_tiles``
    split by ``fractions`` (ids from the unused ones, scenes from their own stream).
    ``progress``: a bar per tile on stderr (None: as ``generation_progress`` says, else on a terminal).
    """
    start = time.perf_counter()
    out = Path(out)
    if n_tiles < 3:
        raise ValueError("need at least 3 tiles (one per partition)")
    if not 0 <= extra_test <= 7999 - n_tiles:
        raise ValueError(f"extra_test must be in 0..{7999 - n_tiles} (ids are 1..7999), got {extra_test}")
    writer = _Writer(out)
    classes = list(catalog)
    if len(classes) != 1 + len(crop_shares):
        raise ValueError(f"catalog has {len(classes)} classes, expected non-crop + {len(crop_shares)} crops")
    probs = np.array([background, *((1 - background) * np.asarray(crop_shares) / np.sum(crop_shares))])
    style = SceneStyle(void_label=0, void_prob=0.5, cloud_prob=cloud_prob, parcel_px=(25, 45))
    shape = {"size": size, "s2_dates": s2_dates, "s1_dates": s1_dates, "season": season}
    master = np.random.default_rng([seed, 2])  # ids and partitions: their own stream, independent of the scenes
    ids = np.sort(master.choice(np.arange(1, 8000), size=n_tiles, replace=False))
    n_train = int(round(fractions[0] * n_tiles))
    n_val = max(1, int(round(fractions[1] * n_tiles)))
    n_train = min(n_train, n_tiles - n_val - 1)
    part = np.full(n_tiles, 2)
    order = master.permutation(n_tiles)
    part[order[:n_train]] = 0
    part[order[n_train : n_train + n_val]] = 1
    # the extra test tiles: ids and scenes from streams of their own, so the n_tiles above keep their bytes
    extra_ids = np.sort(np.random.default_rng([seed, 4]).choice(np.setdiff1d(np.arange(1, 8000), ids), size=extra_test, replace=False))
    scenes = [(tile, [seed, 1, k]) for k, tile in enumerate(ids.tolist())] + [(tile, [seed, 5, k]) for k, tile in enumerate(extra_ids.tolist())]
    partition = dict(zip(ids.tolist(), part.tolist(), strict=True)) | dict.fromkeys(extra_ids.tolist(), 2)

    rows = ["id,partition"] + [f"{i},{partition[i]}" for i in sorted(partition)]
    writer.write(out / PARTITION_CSV, ("\n".join(rows) + "\n").encode())

    def write_tile(root: Path, tile: int, t: dict, labels: bool) -> None:
        writer.write(image_path(root, tile), npz_bytes(t["arrays"]))
        if labels:
            writer.write(truth_path(root, tile), npz_bytes({"truth": t["truth"]}, compress=True))
        writer.json(dates_path(root, "s1", tile), {"dates": _iso(t["doy_r"][::-1])})
        writer.json(dates_path(root, "s2", tile), {"dates": _iso(t["doy_o"][::-1])})
        writer.json(dates_path(root, "planet", tile), {"dates": _iso(t["doy_o"][t["pick"]][::-1])})

    for tile, stream in progress_bar(len(scenes), "generate south sudan", "tile", progress, scenes):
        t = _tile(np.random.default_rng(stream), classes, probs, style=style, unsurveyed=unsurveyed, **shape)
        write_tile(out, tile, t, labels=True)

    n_pool = int(round(pool_factor * n_train))
    if n_pool:
        pool = out / POOL_DIR
        pool_ids = list(range(10_000, 10_000 + n_pool))
        writer.write(pool / PARTITION_CSV, ("\n".join(["id,partition"] + [f"{i},0" for i in pool_ids]) + "\n").encode())
        for k, tile in progress_bar(n_pool, "generate south sudan pool", "tile", progress, enumerate(pool_ids)):
            t = _tile(np.random.default_rng([seed, 3, k]), classes, probs, style=style, unsurveyed=unsurveyed, **shape)
            write_tile(pool, tile, t, labels=False)
    note(f"africa_crop_type: generated {len(scenes)} South Sudan tiles and a pool of {n_pool} ({len(writer.manifest)} files) "
         f"in {time.perf_counter() - start:.1f} s")
    return dict(sorted(writer.manifest.items()))


__all__ = ["COUNTRY", "write_south_sudan", "npz_bytes"]
