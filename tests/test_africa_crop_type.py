"""Task africa_crop_type: the South Sudan reader on small data in the SustainBench layout, its
bad-input errors, the synthetic generator, the frozen splits, the harness interface, download."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.cli import main as cli_main
from benchmark.errors import DataError
from tasks.africa_crop_type import (
    DRIVE_URL,
    RELEASE_DIR,
    SPLITS_DIR,
    SYNTHETIC_SPLIT_FILE,
    AfricaCropTypeTask,
)
from tasks.africa_crop_type.dataset import (
    IGNORE_INDEX,
    PARTITION_CSV,
    S1_MEAN,
    S1_STD,
    SouthSudanDataset,
    dates_path,
    image_path,
    read_partitions,
    truth_path,
)
from tasks.africa_crop_type.synthetic import npz_bytes, write_south_sudan
from tasks.sits.splits import read_split_file

TINY = dict(n_tiles=8, size=16, s1_dates=(4, 7), s2_dates=(3, 5), pool_factor=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ss") / "southsudan"
    write_south_sudan(root, 0, **TINY)
    return root


@pytest.fixture
def work(tiny, tmp_path):
    """A fresh copy of the tiny dataset to break, and the id of its first training tile."""
    root = tmp_path / "southsudan"
    shutil.copytree(tiny, root)
    tile = next(t for t, p in read_partitions(root) if p == 0)
    return root, tile


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The task resolved on an empty data root: generates the default embedded dataset once."""
    task = AfricaCropTypeTask()
    root = tmp_path_factory.mktemp("data")
    data, identity = task.resolve_data(root, "smoke")
    return task, root, data, identity


def _ctx(profile="smoke"):
    return types.SimpleNamespace(profile=profile)


# ---------------------------------------------------------------- reader
def test_sample_shapes_and_dtypes(tiny):
    ds = SouthSudanDataset(tiny, "train")
    assert len(ds) == len(ds.ids) == sum(p == 0 for _, p in read_partitions(tiny)) > 0
    s = ds[0]
    assert set(s) == {"radar", "radar_dates", "optical", "optical_dates", "label", "id"}
    tr, to = s["radar"].shape[0], s["optical"].shape[0]
    assert s["radar"].shape == (tr, 3, 16, 16) and s["radar"].dtype == torch.float32
    assert s["optical"].shape == (to, 3, 16, 16) and s["optical"].dtype == torch.float32
    assert s["radar_dates"].shape == (tr,) and s["optical_dates"].shape == (to,)
    assert s["radar_dates"].dtype == torch.float32
    assert s["label"].shape == (16, 16) and s["label"].dtype == torch.int64
    assert s["id"] == ds.ids[0] and len(s["id"]) == 6
    assert SouthSudanDataset(tiny, ["train", "val", "test"]).ids == [t for t, _ in read_partitions(tiny)]
    assert SouthSudanDataset(tiny, 0, optical_bands="all")[0]["optical"].shape[1] == 10
    assert SouthSudanDataset(tiny, 0, radar_bands=(0, 1))[0]["radar"].shape[1] == 2


def test_time_sorted_by_dates_files(tiny):
    ds = SouthSudanDataset(tiny, "train", normalize=False)
    tile = ds.ids[0]
    s = ds[0]
    for key in ("radar_dates", "optical_dates"):
        assert bool((s[key][1:] > s[key][:-1]).all())
    file_dates = json.loads(dates_path(tiny, "s2", tile).read_text())["dates"]
    assert file_dates == sorted(file_dates, reverse=True)  # the files are newest first
    raw = np.load(image_path(tiny, tile))
    expect = raw["s2"][[2, 1, 0]].transpose(3, 0, 1, 2)[::-1].astype(np.float32)
    assert np.array_equal(s["optical"].numpy(), expect)
    expect_r = raw["s1"].transpose(3, 0, 1, 2)[::-1]
    assert np.array_equal(s["radar"].numpy(), expect_r)
    # days since 2017-01-01
    first = sorted(file_dates)[0]
    assert float(s["optical_dates"][0]) == (np.datetime64(first) - np.datetime64("2017-01-01")).astype(int)
    norm = SouthSudanDataset(tiny, "train")[0]["radar"]
    assert torch.allclose(norm[:, 0], (s["radar"][:, 0] - S1_MEAN[0]) / S1_STD[0], atol=1e-5)


def test_label_mapping(work):
    root, tile = work
    raw = np.tile(np.arange(5, dtype=np.uint8), (16, 4))[:, :16]
    truth_path(root, tile).write_bytes(npz_bytes({"truth": raw}))
    label = SouthSudanDataset(root, "train", ids=[tile])[0]["label"].numpy()
    assert np.array_equal(label, np.array([IGNORE_INDEX, 0, 1, 2, 3])[raw])


def test_cache_and_ids(tiny):
    ds = SouthSudanDataset(tiny, "train")
    a, b = ds[1], ds[1]
    assert a["radar"] is b["radar"]  # decoded once
    assert SouthSudanDataset(tiny, "train", cache=False)[1]["radar"] is not SouthSudanDataset(tiny, "train", cache=False)[1]["radar"]
    sub = SouthSudanDataset(tiny, "train", ids=list(reversed(ds.ids[:2])))
    assert sub.ids == list(reversed(ds.ids[:2]))
    test_id = next(t for t, p in read_partitions(tiny) if p == 2)
    with pytest.raises(DataError, match="not in partitions"):
        SouthSudanDataset(tiny, "train", ids=[test_id])


def test_missing_dates_file_warns_and_keeps_file_order(work):
    root, tile = work
    dates_path(root, "s2", tile).unlink()
    ds = SouthSudanDataset(root, "train", ids=[tile], normalize=False)
    with pytest.warns(UserWarning, match="missing dates file"):
        s = ds[0]
    assert torch.equal(s["optical_dates"], torch.arange(s["optical"].shape[0], dtype=torch.float32))
    raw = np.load(image_path(root, tile))["s2"]
    assert np.array_equal(s["optical"].numpy(), raw[[2, 1, 0]].transpose(3, 0, 1, 2).astype(np.float32))


def _rewrite(path: Path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del arrays[k]
    path.write_bytes(npz_bytes(arrays))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _break(kind: str, root: Path, tile: str) -> Path:
    img, lab = image_path(root, tile), truth_path(root, tile)
    a = _arrays(img)
    if kind == "missing image":
        img.unlink()
        return img
    if kind == "truncated image":
        img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
        return img
    if kind == "corrupt image":
        img.write_bytes(b"not a zip file at all" * 10)
        return img
    if kind == "missing key":
        _rewrite(img, s2=None)
        return img
    if kind == "s1 ndim":
        _rewrite(img, s1=a["s1"][..., 0])
        return img
    if kind == "s2 bands":
        _rewrite(img, s2=a["s2"][:4])
        return img
    if kind == "s1 nan":  # no finite value at all (isolated NaN pixels are masked: tests/test_data_checks_sits.py)
        _rewrite(img, s1=np.full_like(a["s1"], np.nan))
        return img
    if kind == "label shape":
        _rewrite(lab, truth=_arrays(lab)["truth"][:8, :8])
        return lab
    if kind == "label nan":
        t = _arrays(lab)["truth"].astype(np.float32)
        t[3, 3] = np.nan
        _rewrite(lab, truth=t)
        return lab
    if kind == "label range":
        t = _arrays(lab)["truth"].copy()
        t[0, 0] = 7
        _rewrite(lab, truth=t)
        return lab
    if kind == "missing label":
        lab.unlink()
        return lab
    if kind == "dates count":
        p = dates_path(root, "s1", tile)
        doc = json.loads(p.read_text())
        p.write_text(json.dumps({"dates": doc["dates"][:-1]}))
        return p
    if kind == "bad date":
        p = dates_path(root, "s2", tile)
        doc = json.loads(p.read_text())
        p.write_text(json.dumps({"dates": ["2017-13-45"] + doc["dates"][1:]}))
        return p
    if kind == "dates json":
        p = dates_path(root, "s2", tile)
        p.write_text("{not json")
        return p
    if kind == "csv header":
        p = root / "list_eval_partition.csv"
        p.write_text(p.read_text().replace("id,partition", "tile,split"))
        return p
    if kind == "csv partition":
        p = root / "list_eval_partition.csv"
        lines = p.read_text().splitlines()
        lines[1] = lines[1].split(",")[0] + ",5"
        p.write_text("\n".join(lines) + "\n")
        return p
    raise AssertionError(kind)


BAD = {
    "missing image": "without files",
    "missing label": "without files",
    "truncated image": "truncated or corrupt",
    "corrupt image": "truncated or corrupt",
    "missing key": "no array 's2'",
    "s1 ndim": "4 dimensions",
    "s2 bands": "at least the 10",
    "s1 nan": "NaN",
    "label shape": r"16×16 px but the label .* is 8×8",
    "label nan": "NaN",
    "label range": r"values \[7\] out of range",
    "dates count": "time steps",
    "bad date": "not a YYYY-MM-DD date",
    "dates json": "cannot read the dates file",
    "csv header": "lacks the SustainBench columns",
    "csv partition": "partition 5",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_names_file_and_problem(work, kind):
    root, tile = work
    path = _break(kind, root, tile)
    with pytest.raises(DataError, match=BAD[kind]) as info:
        ds = SouthSudanDataset(root, "train", ids=[tile] if "csv" not in kind else None)
        ds[0]
    assert path.name in str(info.value)


# ---------------------------------------------------------------- generator
def test_generator_is_deterministic(tmp_path, tiny):
    a = write_south_sudan(tmp_path / "a", 0, **TINY)
    b = write_south_sudan(tmp_path / "b", 0, **TINY)
    assert a == b and len(a) == 1 + 5 * TINY["n_tiles"]
    for rel, sha in a.items():
        assert hashlib.sha256((tmp_path / "a" / rel).read_bytes()).hexdigest() == sha
        assert (tiny / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert write_south_sudan(tmp_path / "c", 1, **TINY) != a
    with np.load(tmp_path / "a" / "npy" / f"southsudan_{read_partitions(tmp_path / 'a')[0][0]}.npz") as z:
        assert z["s2"].dtype == np.uint16 and z["s1"].dtype == np.float32 and z["planet"].shape[0] == 4
        assert z["s2"].shape[:3] == (10, 16, 16) and z["s1"].shape[:3] == (3, 16, 16)


def test_extra_test_tiles_leave_the_other_tiles_bytes_alone(tmp_path):
    base = write_south_sudan(tmp_path / "a", 0, **TINY)
    grown = write_south_sudan(tmp_path / "b", 0, extra_test=5, **TINY)
    rows_a, rows_b = dict(read_partitions(tmp_path / "a")), dict(read_partitions(tmp_path / "b"))
    added = set(rows_b) - set(rows_a)
    assert len(added) == 5 and {rows_b[t] for t in added} == {2} and all(rows_b[t] == p for t, p in rows_a.items())
    assert all(grown[k] == v for k, v in base.items() if k != PARTITION_CSV)  # the first tiles keep their bytes
    assert len(grown) == len(base) + 5 * 5 and all(1 <= int(t) <= 7999 for t in added)
    with pytest.raises(ValueError, match="extra_test"):
        write_south_sudan(tmp_path / "c", 0, extra_test=8000, **TINY)


# ---------------------------------------------------------------- splits
def test_split_files_frozen_and_consistent(harness):
    task, _, data, _ = harness
    task.check_split_files()  # every file of the spec exists with its recorded sha256
    assert set(task.spec.split_files) == {p.name for p in SPLITS_DIR.glob("*.json")} == set(task.split_file_names())
    assert read_split_file(SPLITS_DIR / "rule.json", task.spec.split_files["rule.json"]) == task.split_rule()
    frozen = read_split_file(SPLITS_DIR / SYNTHETIC_SPLIT_FILE, task.spec.split_files[SYNTHETIC_SPLIT_FILE])
    computed = task.materialized_splits(data.root)
    assert frozen == computed
    train, val, test = (set(computed[k]) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert set(computed["train@0.1"]) <= set(computed["train@1"]) == train
    assert len(computed["train@0.1"]) == math.ceil(0.1 * len(train))
    assert data.split_ids == task.split_ids(data.root)


def test_tampered_synthetic_data_is_refused(harness, tmp_path):
    """Embedded data whose partitions differ from the frozen lists is refused (not silently used)."""
    task, _, data, _ = harness
    fake = task.synthetic_dir(tmp_path)
    for sub in ("npy", "truth"):
        (fake / sub).mkdir(parents=True)
    rows = read_partitions(data.root)
    csv = fake / "list_eval_partition.csv"
    csv.write_text("id,partition\n" + "".join(f"{t},{(p + 1) % 3}\n" for t, p in rows))
    # a manifest that agrees with the tampered files (an edit the manifest check alone would miss)
    (fake / "MANIFEST.json").write_text(json.dumps({"files": {csv.name: hashlib.sha256(csv.read_bytes()).hexdigest()}}))
    with pytest.raises(DataError, match="frozen"):
        task.resolve_data(tmp_path, "smoke")


# ---------------------------------------------------------------- harness interface
def test_task_through_harness_interface(harness):
    task, root, data, identity = harness
    spec = task.spec
    assert spec.name == "africa_crop_type" and spec.family == "segmentation"
    assert spec.metric.num_classes == 4 and spec.metric.ignore_index == 4
    assert [c.name for c in spec.cells] == ["radar-100", "optical-100", "radar-10", "optical-10"]
    assert identity.kind == "synthetic" and identity.generator_version == task.synthetic_version
    assert Path(identity.root) == task.synthetic_dir(root)
    cell10 = spec.cell("optical-10")
    unl = task.unlabeled(data, cell10, _ctx())
    n_train = len(data.split_ids["train"])
    assert n_train == 390 and len(data.split_ids["test"]) == 480
    # pre-training pool: the training tiles plus the unlabeled pool (three times the training partition)
    assert len(unl) == len(task.pretrain_ids(data)) == n_train + 3 * n_train
    assert set(data.split_ids["train"]) < set(task.pretrain_ids(data))
    assert not set(task.pretrain_ids(data)) & (set(data.split_ids["val"]) | set(data.split_ids["test"]))
    s = unl[0]
    assert "label" not in s and s["radar"].shape[0] <= 6 and s["optical"].shape[1:] == (3, 16, 16)
    pooled = unl[len(unl) - 1]  # a tile of the unlabeled pool: no truth file exists for it
    assert "label" not in pooled and pooled["radar"].shape[1:] == (3, 16, 16) and int(pooled["id"]) >= 10_000
    lab10 = task.labeled(data, "train", cell10, _ctx())
    assert len(lab10) == math.ceil(0.1 * n_train)
    assert len(task.labeled(data, "train", spec.cell("radar-100"), _ctx())) == n_train
    test = task.labeled(data, "test", cell10, _ctx())
    batch = task.collate([test[0], test[1]])
    assert batch["label"].shape == (2, 16, 16) and batch["radar_mask"].shape[0] == 2
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 3, 4}
    info = task.info(data, cell10)
    assert info["channels"] == {"radar": 3, "optical": 3} and info["class_names"][0] == "sorghum"
    assert info["class_weights"] == [0.28, 0.89, 0.90, 0.93]  # Rustowicz et al.'s 1 − class frequency
    assert task.recipe("paper")["class_weights"] == [0.28, 0.89, 0.90, 0.93]
    # mini: 1 / frequency (0.72 / 0.11 / 0.10 / 0.07) normalised to mean 1
    freq = [0.72, 0.11, 0.10, 0.07]
    balanced = [(1 / f) / (sum(1 / g for g in freq) / 4) for f in freq]
    assert task.recipe("mini") == {"temporal_length": 8, "train_crop": None, "class_weights": pytest.approx(balanced, abs=0.006)}
    again, _ = task.resolve_data(root, "smoke")  # reuses the generated data
    assert again.root == data.root


def test_real_copy_is_found(tiny, tmp_path):
    task = AfricaCropTypeTask()
    shutil.copytree(tiny, tmp_path / RELEASE_DIR / "southsudan")
    data, identity = task.resolve_data(tmp_path, "smoke")
    assert identity.kind == "real" and data.root == tmp_path / RELEASE_DIR / "southsudan"
    assert identity.checksum == hashlib.sha256((data.root / "list_eval_partition.csv").read_bytes()).hexdigest()
    assert not (tmp_path / "synthetic").exists()


# ---------------------------------------------------------------- download
def test_download_prints_instructions(tmp_path, capsys):
    assert cli_main(["download", "africa_crop_type", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert DRIVE_URL in out and "africa_crop_type_mapping" in out and "southsudan" in out
    assert str(tmp_path / RELEASE_DIR / "southsudan") in out and "--from-archive" in out


def _tar(tiny: Path, path: Path, top: str) -> str:
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tiny, arcname=top)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_from_archive(tiny, tmp_path, capsys):
    archive = tmp_path / "archive.tar.gz"
    sha = _tar(tiny, archive, f"{RELEASE_DIR}/southsudan")
    root = tmp_path / "data"
    assert cli_main(["download", "africa_crop_type", "--data-root", str(root), "--from-archive", str(archive), "--sha256", sha]) == 0
    assert "installed South Sudan" in capsys.readouterr().out
    data, identity = AfricaCropTypeTask().resolve_data(root, "smoke")
    assert identity.kind == "real" and len(data.split_ids["train"]) > 0


def test_download_zip_with_southsudan_top(tiny, tmp_path, capsys):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(tiny.rglob("*")):
            if p.is_file():
                zf.write(p, f"southsudan/{p.relative_to(tiny).as_posix()}")
    archive = tmp_path / "ss.zip"
    archive.write_bytes(buf.getvalue())
    assert cli_main(["download", "africa_crop_type", "--data-root", str(tmp_path / "d"), "--from-archive", str(archive)]) == 0
    assert AfricaCropTypeTask().find_dataset(tmp_path / "d") == tmp_path / "d" / "southsudan"


def test_download_checksum_mismatch_fails_clearly(tiny, tmp_path, capsys):
    archive = tmp_path / "archive.tar.gz"
    _tar(tiny, archive, f"{RELEASE_DIR}/southsudan")
    root = tmp_path / "data"
    assert cli_main(["download", "africa_crop_type", "--data-root", str(root), "--from-archive", str(archive), "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "archive.tar.gz" in err and "sha256" in err.lower()
    assert not (root / RELEASE_DIR).exists()


def test_download_archive_without_dataset(tmp_path, capsys):
    archive = tmp_path / "other.tar.gz"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.txt").write_text("hello")
    _tar(tmp_path / "x", archive, "other")
    assert cli_main(["download", "africa_crop_type", "--data-root", str(tmp_path / "d"), "--from-archive", str(archive)]) == 1
    assert "found no South Sudan dataset" in capsys.readouterr().out
