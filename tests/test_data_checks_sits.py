"""Data checks of the SITS tasks (PASTIS-R, South Sudan) that catch silent corruption
(docs/data_checks.md): ids in two splits, integer labels, non-finite pixels (masked and reported),
normalisation statistics. Small copies of the generators' output in tmp_path."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.errors import DataError
from tasks.africa_crop_type import AfricaCropTypeTask
from tasks.africa_crop_type.dataset import (
    SouthSudanDataset,
    image_path,
    read_partitions,
    truth_path,
)
from tasks.africa_crop_type.synthetic import npz_bytes, write_south_sudan
from tasks.pastis_r import PastisRTask
from tasks.pastis_r.dataset import PastisRDataset
from tasks.pastis_r.synthetic import generate
from tasks.sits.splits import check_disjoint


@pytest.fixture(scope="module")
def pastis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pastis_checks") / "PASTIS-R"
    generate(root, seed=3, n_patches=10, size=16, s2_dates=(5, 8), s1_dates=(6, 9))
    return root


@pytest.fixture(scope="module")
def sudan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ss_checks") / "southsudan"
    write_south_sudan(root, 0, n_tiles=8, size=16, s1_dates=(4, 7), s2_dates=(3, 5))
    return root


@pytest.fixture()
def pcopy(pastis: Path, tmp_path: Path) -> Path:
    shutil.copytree(pastis, tmp_path / "PASTIS-R")
    return tmp_path / "PASTIS-R"


@pytest.fixture()
def scopy(sudan: Path, tmp_path: Path) -> Path:
    shutil.copytree(sudan, tmp_path / "southsudan")
    return tmp_path / "southsudan"


def _one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


# ------------------------------------------------------------------ 5. an id in two splits
def test_pastis_patch_in_a_training_fold_and_the_test_fold_is_refused(pcopy: Path) -> None:
    path = pcopy / "metadata.geojson"
    doc = json.loads(path.read_text())
    extra = json.loads(json.dumps(doc["features"][0]))  # patch 10000, Fold 1 (train)
    extra["properties"]["Fold"] = 5  # ... listed again in the test fold
    doc["features"].append(extra)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as err:
        PastisRTask().split_ids(pcopy)
    _one_line(err, str(path), "1 ID_PATCH value(s) listed in more than one feature, e.g. 10000 (Fold 1/5)")
    with pytest.raises(DataError, match="10000 \\(Fold 1/5\\)"):
        PastisRDataset(pcopy, [5])


def test_south_sudan_tile_in_train_and_test_is_refused(scopy: Path) -> None:
    path = scopy / "list_eval_partition.csv"
    tile = next(t for t, p in read_partitions(scopy) if p == 0)
    path.write_text(path.read_text() + f"{int(tile)},2\n")  # the training tile listed again as test
    with pytest.raises(DataError) as err:
        AfricaCropTypeTask().split_ids(scopy)
    _one_line(err, str(path), f"1 tile id(s) listed more than once, e.g. {tile} (lines ", ": train/test)")


def test_split_overlap_names_ids_and_file() -> None:
    with pytest.raises(DataError) as err:
        check_disjoint({"train": ["1", "2", "3"], "val": [], "test": ["3", "2"]}, where="/data/splits.csv")
    assert str(err.value) == "/data/splits.csv: splits 'train' and 'test' overlap on 2 id(s), e.g. ['2', '3']; an id must be in one split only"


def test_every_sits_task_checks_its_splits_at_resolve(pcopy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = PastisRTask()
    real = task.split_ids(pcopy)
    monkeypatch.setattr(PastisRTask, "split_ids", lambda self, root: {**real, "val": real["val"] + real["test"][:1]})
    with pytest.raises(DataError, match=rf"{pcopy / 'metadata.geojson'}: splits 'val' and 'test' overlap on 1 id"):
        task.resolve_data(pcopy.parent, "smoke")


# ------------------------------------------------------------------ 6. integer labels
def test_pastis_float_labels_with_fractions_are_refused(pcopy: Path) -> None:
    path = pcopy / "ANNOTATIONS/TARGET_10003.npy"
    target = np.load(path).astype(np.float32)
    target[0, 2, 2] = 3.6  # would be truncated to 3
    np.save(path, target)
    with pytest.raises(DataError) as err:
        PastisRDataset(pcopy, [4], cache=False)[0]
    _one_line(err, str(path), "has dtype float32 with non-integer values (e.g. 3.6", "labels must be integers")


def test_pastis_integral_float_labels_are_accepted(pcopy: Path) -> None:
    path = pcopy / "ANNOTATIONS/TARGET_10003.npy"
    ref = PastisRDataset(pcopy, [4], cache=False)[0]["label"]
    np.save(path, np.load(path).astype(np.float64))
    assert torch.equal(PastisRDataset(pcopy, [4], cache=False)[0]["label"], ref)
    np.save(path, np.load(path).astype(np.complex64))
    with pytest.raises(DataError, match="has dtype complex64, expected an integer label array"):
        PastisRDataset(pcopy, [4], cache=False)[0]


def test_south_sudan_float_labels(scopy: Path) -> None:
    tile = next(t for t, p in read_partitions(scopy) if p == 0)
    path = truth_path(scopy, tile)
    with np.load(path) as z:
        truth = z["truth"]
    ref = SouthSudanDataset(scopy, "train", ids=[tile])[0]["label"]
    path.write_bytes(npz_bytes({"truth": truth.astype(np.float32)}))
    assert torch.equal(SouthSudanDataset(scopy, "train", ids=[tile])[0]["label"], ref)  # integral floats: same labels
    bad = truth.astype(np.float64)
    bad[1, 1] = 2.5
    path.write_bytes(npz_bytes({"truth": bad}))
    with pytest.raises(DataError) as err:
        SouthSudanDataset(scopy, "train", ids=[tile])[0]
    _one_line(err, str(path), "'truth' has dtype float64 with non-integer values (e.g. 2.5")


# ------------------------------------------------------------------ 9. non-finite pixels: masked, counted, reported
def test_pastis_nonfinite_pixels_are_zeroed_and_empty_dates_dropped(pcopy: Path) -> None:
    path = pcopy / "DATA_S2/S2_10003.npy"
    clean = PastisRDataset(pcopy, [4], cache=False)[0]
    arr = np.load(path).astype(np.float32)  # int16 cannot hold NaN: a float copy, as a damaged real file might be
    arr[1, 2, 3, 4] = np.nan  # B4 (RGB channel 0) at one pixel of date 1
    arr[2, 0, 5, 6] = np.inf  # B2 (RGB channel 2)
    arr[3] = np.nan  # the whole of date 3
    np.save(path, arr)
    ds = PastisRDataset(pcopy, [4], cache=False)
    with pytest.warns(UserWarning) as rec:
        s = ds[0]
    msgs = [str(w.message) for w in rec if "NaN or inf" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith(f"{path}: ") and "1 date(s) with no finite value dropped" in msgs[0]
    t = clean["optical"].shape[0]
    keep = [i for i in range(t) if i != 3]
    assert s["optical"].shape[0] == t - 1 and torch.equal(s["optical_dates"], clean["optical_dates"][keep])
    expect = clean["optical"][keep].clone()
    expect[1, 0, 3, 4] = 0  # 0 after normalisation
    expect[2, 2, 5, 6] = 0
    assert torch.equal(s["optical"], expect) and torch.isfinite(s["optical"]).all()
    assert ds.nonfinite_counts == {str(path): 2 + 3 * 16 * 16}  # the RGB bands read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[0]  # once per file
    np.save(path, np.full_like(arr, np.nan))
    with pytest.raises(DataError, match="S2_10003.npy: contains NaN or inf only"):
        PastisRDataset(pcopy, [4], cache=False)[0]


def test_south_sudan_nonfinite_pixels_are_zeroed_and_empty_dates_dropped(scopy: Path) -> None:
    tile = next(t for t, p in read_partitions(scopy) if p == 0)
    npz = image_path(scopy, tile)
    clean = SouthSudanDataset(scopy, "train", ids=[tile])[0]
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    s1 = arrays["s1"].copy()  # C × H × W × T, newest date first
    t = s1.shape[3]
    s1[0, 1, 2, t - 1] = np.nan  # oldest date (sorted index 0), VV
    s1[:, :, :, 0] = np.inf  # newest date (sorted index t-1): nothing finite
    npz.write_bytes(npz_bytes({**arrays, "s1": s1}))
    ds = SouthSudanDataset(scopy, "train", ids=[tile])
    with pytest.warns(UserWarning, match=r"'s1': 769 of .* value\(s\) are NaN or inf: set to 0 after normalisation .* 1 date\(s\)"):
        s = ds[0]
    expect = clean["radar"][: t - 1].clone()
    expect[0, 0, 1, 2] = 0
    assert torch.equal(s["radar"], expect) and torch.equal(s["radar_dates"], clean["radar_dates"][: t - 1])
    assert torch.equal(s["optical"], clean["optical"]) and ds.nonfinite_counts == {f"{npz}: 's1'": 769}


def test_valid_files_read_exactly_as_before(pastis: Path, sudan: Path) -> None:
    """No mask, no warning, no count for clean files: the policy only touches non-finite values."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = PastisRDataset(pastis, [1, 2, 3, 4, 5], cache=False)
        s = SouthSudanDataset(sudan, ["train", "val", "test"], cache=False)
        for ds in (p, s):
            for i in range(len(ds)):
                ds[i]
    raw = np.load(pastis / "DATA_S2/S2_10000.npy")
    assert p[0]["optical"].shape[0] == raw.shape[0] and not p.nonfinite_counts and not s.nonfinite_counts


# ------------------------------------------------------------------ 10. normalisation statistics
@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d: d["Fold_2"].update(std=d["Fold_2"]["std"][:9]), "Fold_2 'std' has 9 value(s), the arrays have 10 channels"),
    (lambda d: d["Fold_1"].update(mean=d["Fold_1"]["mean"] + [1.0]), "Fold_1 'mean' has 11 value(s), the arrays have 10 channels"),
    (lambda d: d["Fold_3"]["std"].__setitem__(3, 0.0), "Fold_3 'std' of channel 3 (B5) is 0.0; it must be finite and > 0"),
    (lambda d: d["Fold_1"]["std"].__setitem__(0, -2.0), "Fold_1 'std' of channel 0 (B2) is -2.0; it must be finite and > 0"),
    (lambda d: d["Fold_1"]["mean"].__setitem__(9, float("nan")), "Fold_1 'mean' of channel 9 (B12) is nan; it must be finite"),
    (lambda d: d.pop("Fold_2"), "Fold_2 is missing"),
])
def test_bad_norm_files_are_named_with_the_real_mismatch(pcopy: Path, edit, fragment: str) -> None:
    path = pcopy / "NORM_S2_patch.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as err:
        PastisRDataset(pcopy, [5])
    _one_line(err, f"{path}: ", fragment)


def test_zero_std_radar_channel_is_named(pcopy: Path) -> None:
    path = pcopy / "NORM_S1A_patch.json"
    doc = json.loads(path.read_text())
    doc["Fold_2"]["std"][1] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"NORM_S1A_patch.json: Fold_2 'std' of channel 1 \(VH\) is 0.0"):
        PastisRDataset(pcopy, [1])
