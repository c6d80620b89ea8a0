"""PASTIS-R: the reader on small data in the real layout (and its fallbacks), bad input, splits,
the embedded synthetic data, the download path and the pixel_rf baseline end to end."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import runner
from benchmark.cli import main
from benchmark.contracts import RunContext
from benchmark.errors import DataError
from tasks.pastis_r import PastisRTask
from tasks.pastis_r.dataset import PastisRDataset, footprint_centroid, parse_dates
from tasks.pastis_r.synthetic import generate
from tasks.sits.splits import file_sha256


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pastis") / "PASTIS-R"
    generate(root, seed=3, n_patches=10, size=16, s2_dates=(5, 8), s1_dates=(6, 9))
    return root


@pytest.fixture()
def copy(tiny: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "PASTIS-R"
    shutil.copytree(tiny, dst)
    return dst


def test_reader_reads_the_real_layout(tiny: Path) -> None:
    ds = PastisRDataset(tiny, [1, 2, 3])
    assert len(ds) == 6 and ds.ids == ["10000", "10001", "10002", "10005", "10006", "10007"]
    s = ds[0]
    raw_s2 = np.load(tiny / "DATA_S2/S2_10000.npy")
    assert raw_s2.dtype == np.int16 and raw_s2.shape[1:] == (10, 16, 16)
    assert np.load(tiny / "DATA_S1A/S1A_10000.npy").dtype == np.float16
    assert s["optical"].shape == (raw_s2.shape[0], 3, 16, 16) and s["optical"].dtype == torch.float32
    assert s["radar"].shape[1:] == (3, 16, 16) and s["label"].dtype == torch.int64
    meta = json.loads((tiny / "metadata.geojson").read_text())["features"][0]["properties"]
    first = str(meta["dates-S2"]["0"])
    import datetime as dt

    expected = (dt.date(int(first[:4]), int(first[4:6]), int(first[6:])) - dt.date(2018, 9, 1)).days
    assert s["optical_dates"][0].item() == expected
    assert bool((s["optical_dates"].diff() > 0).all())
    # RGB = B4, B3, B2 of the 10 bands, normalised with the training folds' statistics
    full = PastisRDataset(tiny, [1, 2, 3], optical_bands="all", normalize=False)[0]
    assert full["optical"].shape[1] == 10
    assert torch.equal(full["optical"][:, [2, 1, 0]], torch.from_numpy(raw_s2[:, [2, 1, 0]].astype(np.float32)))
    norm = json.loads((tiny / "NORM_S2_patch.json").read_text())
    mean = np.mean([norm[f"Fold_{f}"]["mean"] for f in (1, 2, 3)], 0)[[2, 1, 0]]
    std = np.mean([norm[f"Fold_{f}"]["std"] for f in (1, 2, 3)], 0)[[2, 1, 0]]
    ref = (raw_s2[:, [2, 1, 0]] - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(s["optical"].numpy(), ref, rtol=1e-5, atol=1e-5)
    # descending orbit is selectable and differs
    d = PastisRDataset(tiny, [1, 2, 3], radar="S1D")[0]
    assert not torch.equal(d["radar_dates"], s["radar_dates"]) or not torch.equal(d["radar"], s["radar"])
    # labels: void (19) present, all values in range
    labels = torch.stack([ds[i]["label"] for i in range(len(ds))])
    assert labels.min() >= 0 and labels.max() <= 19 and (labels == 19).any()


def test_dates_as_json_strings_or_missing(copy: Path) -> None:
    path = copy / "metadata.geojson"
    doc = json.loads(path.read_text())
    for f in doc["features"]:
        f["properties"]["dates-S2"] = json.dumps(f["properties"]["dates-S2"])
        del f["properties"]["dates-S1A"]
    path.write_text(json.dumps(doc))
    ref = PastisRDataset(copy, [4])
    with pytest.warns(UserWarning, match="no dates-S1A: using index order"):
        s = ref[0]
    assert torch.equal(s["radar_dates"], torch.arange(s["radar"].shape[0], dtype=torch.float32))
    assert parse_dates(json.dumps({"1": 20180903, "0": 20180902}), "x") == [1, 2]


def test_missing_norm_files_are_computed_from_training_folds_and_cached(copy: Path, tiny: Path) -> None:
    for sat in ("S2", "S1A", "S1D"):
        (copy / f"NORM_{sat}_patch.json").unlink()
    with pytest.warns(UserWarning, match="computing S2 statistics"):
        ds = PastisRDataset(copy, [5])
    cached = copy / ".benchmark_cache/NORM_S2_computed.json"
    assert cached.is_file()
    # the same recipe as the distributed files (per-patch means/stds averaged per fold)
    np.testing.assert_allclose(ds[0]["optical"].numpy(), PastisRDataset(tiny, [5])[0]["optical"].numpy(), rtol=1e-3, atol=1e-3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PastisRDataset(copy, [5])  # second time: read from the cache, no warning


def test_any_patch_size(tmp_path: Path) -> None:
    generate(tmp_path, seed=1, n_patches=5, size=24, s2_dates=(3, 4), s1_dates=(3, 4))
    s = PastisRDataset(tmp_path, [1, 2, 3, 4, 5])[0]
    assert s["label"].shape == (24, 24) and s["radar"].shape[-2:] == (24, 24)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "DATA_S2/S2_10003.npy").unlink(), "missing S2 file: .*S2_10003.npy"),
        (lambda r: (r / "DATA_S2/S2_10003.npy").write_bytes((r / "DATA_S2/S2_10003.npy").read_bytes()[:300]), "S2_10003.npy: cannot read S2 array"),
        (lambda r: np.save(r / "DATA_S2/S2_10003.npy", np.zeros((5, 4, 16, 16), np.int16)), r"S2_10003.npy: shape \(5, 4, 16, 16\), expected T × 10"),
        (lambda r: np.save(r / "ANNOTATIONS/TARGET_10003.npy", np.full((3, 16, 16), 25, np.uint8)), "TARGET_10003.npy: label values must be in 0..19"),
        (lambda r: np.save(r / "ANNOTATIONS/TARGET_10003.npy", np.zeros((3, 8, 8), np.uint8)), "spatial size .* differs from the label"),
        (lambda r: np.save(r / "DATA_S1A/S1A_10003.npy", np.zeros((99, 3, 16, 16), np.float16)), "dates but DATA_S1A/S1A_10003.npy has 99 time steps"),
        (lambda r: np.save(r / "DATA_S1A/S1A_10003.npy", np.full((6, 3, 16, 16), np.nan, np.float32)), "S1A_10003.npy: contains NaN"),
    ],
)
def test_bad_files_are_named(copy: Path, breakage, message: str) -> None:
    breakage(copy)
    ds = PastisRDataset(copy, [4], cache=False)
    assert ds.ids == ["10003", "10008"]
    with pytest.raises(DataError, match=message):
        ds[0]
    ds[1]  # other patches still read


def test_bad_metadata_is_named(copy: Path) -> None:
    path = copy / "metadata.geojson"
    doc = json.loads(path.read_text())
    doc["features"][0]["properties"]["Fold"] = 7
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="patch 10000 has Fold 7"):
        PastisRDataset(copy, [1])
    path.write_text("{not json")
    with pytest.raises(DataError, match="metadata.geojson: not a GeoJSON"):
        PastisRDataset(copy, [1])
    path.unlink()
    with pytest.raises(DataError, match="metadata missing"):
        PastisRDataset(copy, [1])


def test_footprint_centroids_become_sample_coords(copy: Path) -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    assert footprint_centroid(square, "x") == pytest.approx((5.0, 5.0))
    clockwise = {"type": "Polygon", "coordinates": [[[0, 0], [0, 10], [10, 10], [10, 0]]]}  # open ring, other orientation
    assert footprint_centroid(clockwise, "x") == pytest.approx((5.0, 5.0))
    l_shape = {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2], [0, 0]]]}
    assert footprint_centroid(l_shape, "x") == pytest.approx((5 / 6, 5 / 6))  # not the vertex mean
    multi = {"type": "MultiPolygon", "coordinates": [square["coordinates"], [[[20, 0], [30, 0], [30, 10], [20, 10], [20, 0]]]]}
    assert footprint_centroid(multi, "x") == pytest.approx((15.0, 5.0))
    assert footprint_centroid({"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [0, 0]]]}, "x") == pytest.approx((1.0, 0.0))
    assert footprint_centroid(None, "x") is None
    for bad, message in [({"type": "Polygon", "coordinates": []}, "malformed Polygon"),
                         ({"type": "Polygon", "coordinates": [[[0, 0], [1]]]}, "malformed Polygon"),
                         ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "at least 3 finite"),
                         ("POLYGON((0 0))", "must be a GeoJSON object")]:
        with pytest.raises(DataError, match=message):
            footprint_centroid(bad, "where")
    ds = PastisRDataset(copy, [1, 2, 3])
    ring = json.loads((copy / "metadata.geojson").read_text())["features"][0]["geometry"]["coordinates"][0]
    assert ds[0]["coords"].dtype == torch.float32
    assert ds[0]["coords"].tolist() == pytest.approx([(ring[0][0] + ring[1][0]) / 2, (ring[0][1] + ring[2][1]) / 2])
    path = copy / "metadata.geojson"
    doc = json.loads(path.read_text())
    doc["features"][0]["geometry"] = {"type": "Point", "coordinates": [1, 2]}
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"metadata.geojson \(patch 10000\): patch footprint geometry must be a Polygon"):
        PastisRDataset(copy, [1])
    for f in doc["features"]:
        f.pop("geometry")
    path.write_text(json.dumps(doc))
    assert "coords" not in PastisRDataset(copy, [1, 2, 3])[0]  # geometry is optional


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=5, n_patches=4, size=16, s2_dates=(3, 5), s1_dates=(3, 5))
    b = generate(tmp_path / "b", seed=5, n_patches=4, size=16, s2_dates=(3, 5), s1_dates=(3, 5))
    c = generate(tmp_path / "c", seed=6, n_patches=4, size=16, s2_dates=(3, 5), s1_dates=(3, 5))
    assert a == b and a != c
    for rel, sha in a.items():
        assert hashlib.sha256((tmp_path / "b" / rel).read_bytes()).hexdigest() == sha


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    task = PastisRTask()
    data, identity = task.resolve_data(tmp_path_factory.mktemp("data"), "smoke")
    return task, data, identity


def test_splits_are_frozen_disjoint_and_nested(embedded) -> None:
    task, data, identity = embedded
    assert identity.kind == "synthetic" and (Path(identity.root) / "MANIFEST.json").is_file()
    for rel, sha in task.spec.split_files.items():
        assert file_sha256(task.splits_dir() / rel) == sha
    frozen = json.loads((task.splits_dir() / task.split_file_names()[1]).read_text())
    assert frozen == task.materialized_splits(data.root)
    tr, va, te = (set(frozen[k]) for k in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert set(frozen["train@0.1"]) < set(frozen["train@1"]) == tr
    assert len(frozen["train@0.1"]) == 60 and len(tr) == 600 and len(frozen["test"]) == 200
    rule = json.loads((task.splits_dir() / "rule.json").read_text())
    assert rule["folds"] == {"train": [1, 2, 3], "val": [4], "test": [5]}


def test_views_for_the_harness(embedded) -> None:
    task, data, _ = embedded
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams={}, checkpoint_dir=Path("/tmp"))
    cell = task.spec.cell("optical-10")
    unl = task.unlabeled(data, cell, ctx)
    assert len(unl) == 600 + 1800 and "label" not in unl[0] and {"radar", "optical"} <= set(unl[0])  # training folds + pool
    assert "label" not in unl[len(unl) - 1] and int(unl[len(unl) - 1]["id"]) >= 100_000
    assert unl[0]["optical"].shape[0] == task.temporal_length["smoke"]
    lab = task.labeled(data, "train", cell, ctx)
    assert len(lab) == 60 and "label" in lab[0]
    assert len(task.labeled(data, "test", cell, ctx)) == 200
    batch = task.collate([lab[0], lab[1]])
    assert batch["optical_mask"].shape == (2, task.temporal_length["smoke"]) and batch["label"].shape == (2, 16, 16)


def test_tampered_split_file_is_refused(embedded, monkeypatch: pytest.MonkeyPatch) -> None:
    task, _, _ = embedded
    bad = dict(task.spec.split_files)
    bad["rule.json"] = "0" * 64
    import dataclasses

    monkeypatch.setattr(type(task), "spec", dataclasses.replace(task.spec, split_files=bad))
    with pytest.raises(ValueError, match="rule.json has sha256"):
        task.check_split_files()


def test_pixel_rf_end_to_end_on_embedded_data(embedded, tmp_path: Path) -> None:
    task, data, identity = embedded
    summaries = runner.run("pastis_r", ["pixel_rf"], profile="smoke", data_root=Path(identity.root).parent.parent,
                           results_dir=tmp_path, cells=["radar-100", "optical-100"], show_progress=False, device="cpu")
    assert [s.status for s in summaries] == ["ok", "ok"]
    for s in summaries:
        rec = json.loads(s.path.read_text())
        miou = rec["metrics"]["miou"]["estimate"]
        assert 0.06 < miou < 0.9, miou  # well above chance for 19 classes, well below perfect
        assert rec["data"]["kind"] == "synthetic"


class _ZipHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args) -> None:
        pass


def test_download_from_local_server_installs_and_verifies(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "PASTIS-R.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tiny.rglob("*")):
            if path.is_file():
                zf.write(path, Path("PASTIS-R") / path.relative_to(tiny))
    _ZipHandler.payload = archive.read_bytes()
    md5 = hashlib.md5(_ZipHandler.payload).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ZipHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/PASTIS-R.zip"
    try:
        root = tmp_path / "root"
        assert main(["download", "pastis_r", "--data-root", str(root), "--url", url, "--md5", md5, "--no-progress"]) == 0
        assert (root / "PASTIS-R/metadata.geojson").is_file() and not (root / "PASTIS-R.zip").exists()
        assert PastisRDataset(root / "PASTIS-R", [1])[0]["label"].shape == (16, 16)
        assert main(["download", "pastis_r", "--data-root", str(root), "--url", url, "--md5", md5]) == 0
        assert "already installed" in capsys.readouterr().out
        bad_root = tmp_path / "bad"
        assert main(["download", "pastis_r", "--data-root", str(bad_root), "--url", url, "--md5", "0" * 32, "--no-progress"]) == 2
        assert "md5" in capsys.readouterr().err.lower()
        assert not (bad_root / "PASTIS-R").exists()
    finally:
        server.shutdown()
