"""The embedded SITS datasets: deterministic, learnable but not trivial, with the structure of real
imagery (one ground seen by both sensors, multiplicative speckle, clouds), and the PASTIS-R
instance annotations and unlabeled pool in the layouts other tools read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from tasks.africa_crop_type.dataset import SouthSudanDataset
from tasks.africa_crop_type.synthetic import write_south_sudan
from tasks.pastis_r.dataset import VOID, PastisRDataset
from tasks.pastis_r.synthetic import POOL_DIR, generate
from tasks.sits.scene import Acquisitions, CropClass, SceneStyle, make_scene
from tasks.sits.subsample import subsample_sample

PASTIS_SMALL = {"n_patches": 250, "size": 16, "pool_factor": 0.0}
SUDAN_SMALL = {"n_tiles": 300, "size": 16, "pool_factor": 0.0}


@pytest.fixture(scope="module")
def pastis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pastis")
    generate(root, 0, **PASTIS_SMALL, progress=False)
    return root


@pytest.fixture(scope="module")
def sudan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sudan")
    write_south_sudan(root, 0, **SUDAN_SMALL, progress=False)
    return root


# ---------------------------------------------------------------- determinism
def test_same_seed_same_bytes_including_pool_and_instances(tmp_path: Path) -> None:
    small = {"n_patches": 10, "size": 16, "s2_dates": (3, 5), "s1_dates": (3, 5), "pool_factor": 1.0, "progress": False}
    a, b, c = (generate(tmp_path / k, s, **small) for k, s in (("a", 4), ("b", 4), ("c", 5)))
    assert a == b and a != c
    assert any(k.startswith(f"{POOL_DIR}/DATA_S2/") for k in a) and any(k.startswith("INSTANCE_ANNOTATIONS/HEATMAP_") for k in a)
    tiny = {"n_tiles": 6, "size": 8, "s2_dates": (3, 4), "s1_dates": (3, 4), "pool_factor": 1.0, "progress": False}
    x, y, z = (write_south_sudan(tmp_path / k, s, **tiny) for k, s in (("x", 1), ("y", 1), ("z", 2)))
    assert x == y and x != z and any(k.startswith("unlabeled_pool/npy/") for k in x)


# ---------------------------------------------------------------- layouts
def test_instance_annotations_as_the_official_instance_mode_reads_them(pastis: Path) -> None:
    """What the official loader's instance mode computes: per instance its extent (rows and columns
    it touches) and the semantic class of its first pixel, spread over its zone."""
    ids = sorted(int(p.stem.split("_")[1]) for p in (pastis / "INSTANCE_ANNOTATIONS").glob("INSTANCES_*.npy"))
    assert len(ids) == PASTIS_SMALL["n_patches"]
    for pid in ids[:25]:
        instances = np.load(pastis / "INSTANCE_ANNOTATIONS" / f"INSTANCES_{pid}.npy")
        zones = np.load(pastis / "INSTANCE_ANNOTATIONS" / f"ZONES_{pid}.npy")
        heat = np.load(pastis / "INSTANCE_ANNOTATIONS" / f"HEATMAP_{pid}.npy")
        target = np.load(pastis / "ANNOTATIONS" / f"TARGET_{pid}.npy")
        assert target.shape == (3, 16, 16) and target.dtype == np.uint8 and instances.shape == zones.shape == heat.shape == (16, 16)
        assert heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
        semantic, before, voided = target
        assert ((instances == 0) == (before == 0)).all()  # background is no instance
        assert (semantic[voided == 1] == VOID).all() and (semantic[voided == 0] == before[voided == 0]).all()
        for k in np.unique(instances[instances > 0]):
            inside = instances == k
            h, w = inside.any(axis=-1).sum(), inside.any(axis=-2).sum()
            assert 1 <= h <= 16 and 1 <= w <= 16
            assert (before[inside] == before[inside][0]).all()  # one class per parcel
            assert (instances[zones == k] == k).all()
            assert heat[inside].max() > 0.5  # a peak near the instance's centre


def test_pool_has_the_layout_without_annotations_and_reads_unlabeled(tmp_path: Path) -> None:
    generate(tmp_path, 0, n_patches=10, size=16, s2_dates=(3, 5), s1_dates=(3, 5), pool_factor=3.0, progress=False)
    pool = tmp_path / POOL_DIR
    assert (pool / "metadata.geojson").is_file() and not (pool / "ANNOTATIONS").exists()
    reader = PastisRDataset(pool, (1, 2, 3), labels=False, norm_root=tmp_path)
    assert len(reader) == 3 * 6  # three times the 6 patches of folds 1-3
    sample = reader[0]
    assert "label" not in sample and sample["radar"].shape[1:] == (3, 16, 16)
    write_south_sudan(tmp_path / "ss", 0, n_tiles=10, size=8, s2_dates=(3, 4), s1_dates=(3, 4), pool_factor=3.0, progress=False)
    ss = SouthSudanDataset(tmp_path / "ss" / "unlabeled_pool", ["train", "val", "test"], labels=False)
    assert len(ss) == 3 * 6 and "label" not in ss[0] and not (tmp_path / "ss" / "unlabeled_pool" / "truth").exists()


# ---------------------------------------------------------------- structure of the imagery
def _scene(seed: int = 0, **style: object):
    classes = [CropClass(0, 0, 0.3, flat=True), CropClass(150, 250, 0.9, structure_db=2.0, texture="rows", texture_amp=0.4)]
    days = np.arange(0, 360, 12)
    rng = np.random.default_rng(seed)
    return make_scene(rng, classes, np.array([0.5, 0.5]), Acquisitions(days, days + 3), 32, SceneStyle(**style))


def test_both_sensors_see_the_same_ground() -> None:
    """Per pixel and date, optical greenness and radar VH rise together (same canopy, same texture)."""
    scene = _scene(cloud_prob=0.0)
    red, nir = scene.optical[:, 2].astype(float), scene.optical[:, 6].astype(float)
    ndvi = (nir - red) / (nir + red)
    vh_power = 10 ** (scene.radar[:, 1].astype(float) / 10)
    # average over a few neighbouring dates' speckle: one date's speckle hides the canopy at pixel level
    smooth = (vh_power[:-2] + vh_power[1:-1] + vh_power[2:]) / 3
    r = np.corrcoef(ndvi[1:-1].ravel(), 10 * np.log10(smooth).ravel())[0, 1]
    assert r > 0.5


def test_radar_speckle_is_multiplicative_with_few_looks() -> None:
    """In a flat, cloud-free parcel with no texture, the ratio of a pixel's power to its parcel's
    mean has the spread of a gamma variable with ~4.4 looks (coefficient of variation ~0.48), whatever the level."""
    classes = [CropClass(0, 0, 0.5, flat=True)]
    days = np.arange(0, 100, 10)
    scene = make_scene(np.random.default_rng(1), classes, np.array([1.0]), Acquisitions(days, days), 32,
                       SceneStyle(cloud_prob=0.0, moisture_events=0.0))
    power = 10 ** (scene.radar[:, 0].astype(float) / 10)
    cvs = []
    for p in np.unique(scene.parcels):
        inside = scene.parcels == p
        if inside.sum() < 50:
            continue
        x = power[:, inside]
        cvs.append((x / x.mean(axis=1, keepdims=True)).std())
    assert cvs and 0.35 < np.median(cvs) < 0.6


def test_clouds_brighten_and_their_shadows_darken() -> None:
    scene = _scene(cloud_prob=1.0)
    clear = _scene(cloud_prob=0.0)
    blue, blue_clear = scene.optical[:, 0].astype(float), clear.optical[:, 0].astype(float)
    assert (scene.cloud_cover > 0).mean() > 0.5
    assert (blue - blue_clear).max() > 2000 and (blue - blue_clear).min() < -100


# ---------------------------------------------------------------- learnable, not trivial
def _features(reader, with_parcels: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: radar values of 8 evenly spaced dates and their days; and the same averaged over
    the pixels of the pixel's label value in its patch (an oracle of spatial context: a network
    must find the field itself)."""
    pix, par, lab = [], [], []
    for i in range(len(reader)):
        s = subsample_sample(dict(reader[i]), 8)
        x = s["radar"].numpy()
        v = x.reshape(x.shape[0] * x.shape[1], -1).T
        days = np.repeat(s["radar_dates"].numpy()[None], v.shape[0], 0)
        y = s["label"].numpy().ravel()
        groups = np.unique(y, return_inverse=True)[1] if with_parcels else np.zeros_like(y)
        means = np.stack([v[groups == g].mean(0) for g in range(groups.max() + 1)])[groups]
        pix.append(np.hstack([v, days])), par.append(np.hstack([means, days])), lab.append(y)
    return np.vstack(pix), np.vstack(par), np.concatenate(lab)


def _miou(y: np.ndarray, p: np.ndarray, n: int, ignore: int) -> float:
    keep = y != ignore
    cm = np.bincount(y[keep] * n + p[keep], minlength=n * n).reshape(n, n)
    tp = np.diag(cm)
    iou = tp / np.maximum(cm.sum(0) + cm.sum(1) - tp, 1)
    return float(iou[cm.sum(1) > 0].mean())


def _scores(train, test, n: int, ignore: int, class_weight: str | None = None) -> tuple[float, float]:
    xs, xps, ys = _features(train, True)
    xt, xpt, yt = _features(test, True)
    keep = np.flatnonzero(ys != ignore)
    keep = np.random.default_rng(0).choice(keep, min(len(keep), 20_000), replace=False)
    out = []
    for a, b in ((xs, xt), (xps, xpt)):
        rf = RandomForestClassifier(60, max_depth=16, n_jobs=1, random_state=0, class_weight=class_weight).fit(a[keep], ys[keep])
        out.append(_miou(yt, rf.predict(b), n, ignore))
    return out[0], out[1]


def test_pastis_r_pixels_are_learnable_but_not_trivially(pastis: Path) -> None:
    """A per-pixel forest on radar lands well above chance (1/19) and well below perfect; the same
    forest on label-region means (what spatial context can give) does much better: the data reward
    a model that uses the field, not the pixel alone."""
    pixel, region = _scores(PastisRDataset(pastis, (1, 2, 3)), PastisRDataset(pastis, (5,)), 19, VOID)
    assert 3 / 19 < pixel < 0.6
    assert region > pixel + 0.1


def test_south_sudan_pixels_are_learnable_but_not_trivially(sudan: Path) -> None:
    """As for PASTIS-R, with the classes balanced as the task's recipe weights its loss (chance: 1/4)."""
    pixel, region = _scores(SouthSudanDataset(sudan, ["train"]), SouthSudanDataset(sudan, ["test"]), 4, 4, "balanced")
    assert 0.3 < pixel < 0.75
    assert region > pixel + 0.1


def test_pool_ids_that_collide_with_training_ids_are_refused() -> None:
    from benchmark.errors import DataError
    from tasks.sits.pool import PoolReader

    class Ids:
        def __init__(self, ids: list[str]):
            self.ids = ids

        def __len__(self) -> int:
            return len(self.ids)

    with pytest.raises(DataError, match=r"both in the training split and the unlabeled pool.*\['2'\]"):
        PoolReader([Ids(["1", "2"]), Ids(["2", "3"])], where="root")
    assert PoolReader([Ids(["1"]), Ids(["2", "3"])], where="root").ids == ["1", "2", "3"]
