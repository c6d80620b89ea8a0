"""tc_primed prepare: 37 -> 89 GHz resampling limit, thinning, storm split, train-only statistics,
bad input counted, incremental re-runs, CLI, and the synthetic generator's determinism."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from tasks.tc_primed.catalog import (
    assign_splits,
    merge_moments,
    moments,
    normalization_stats,
    split_storms,
    thin,
)
from tasks.tc_primed.prepare import overpass_array, prepare_store, resample_nearest
from tasks.tc_primed.reader import read_overpass
from tasks.tc_primed.synthetic import generate
from tests.test_tc_primed_reader import FILL, amsr2_file, gmi_file


def test_nearest_neighbour_resampling_stops_at_100_km() -> None:
    src_lat, src_lon = np.array([[0.0, 0.0]]), np.array([[0.0, 10.0]])
    values = np.array([[[1.0, 2.0]]], dtype=np.float32)
    # 0.85° of latitude ≈ 94.5 km (filled), 0.95° ≈ 105.6 km (beyond the limit), nearest wins
    dst_lat, dst_lon = np.array([[0.85, 0.95, 0.0, np.nan]]), np.array([[0.0, 0.0, 9.2, 0.0]])
    out = resample_nearest(src_lat, src_lon, values, dst_lat, dst_lon)
    assert out.shape == (1, 1, 4)
    assert out[0, 0, 0] == 1.0 and np.isnan(out[0, 0, 1]) and out[0, 0, 2] == 2.0 and np.isnan(out[0, 0, 3])
    # across the date line: 179.5 °E and -179.5 °E are 111 km apart at the equator; 0.8° apart are ~89 km
    out = resample_nearest(np.array([[0.0]]), np.array([[179.6]]), values[:, :, :1], np.array([[0.0]]), np.array([[-179.6]]))
    assert out[0, 0, 0] == 1.0


def test_overpass_array_keeps_the_89_grid(tmp_path: Path) -> None:
    ov = read_overpass(amsr2_file(tmp_path))
    arr = overpass_array(ov)
    assert arr.shape == (7, 8, 10) and arr.dtype == np.float32
    assert np.nanmax(arr[0]) == 150 and np.nanmax(arr[1]) == 210  # 37 GHz on the 89 GHz pixels
    assert np.isnan(arr[2, 0, 0]) and arr[2, 0, 1] == 201
    np.testing.assert_allclose(arr[5], ov.swaths["89"].lon)
    assert set(np.unique(arr[6])) <= {0.0, 1.0}


def test_thinning_keeps_observations_six_hours_apart() -> None:
    h = 3600.0
    recs = [{"atcf_id": "AL012015", "source": "GMI_GPM", "time": t * h, "obs_id": f"g{t}"} for t in (0, 3, 6, 7, 12.5, 18)]
    recs += [{"atcf_id": "AL012015", "source": "SSMIS_F17", "time": 1 * h, "obs_id": "s1"},
             {"atcf_id": "AL022015", "source": "GMI_GPM", "time": 2 * h, "obs_id": "o2"}]
    kept, dropped = thin(recs)
    assert sorted(r["obs_id"] for r in kept) == ["g0", "g12.5", "g6", "o2", "s1"]  # 12.5 h -> 18 h is 5.5 h
    assert sorted(r["obs_id"] for r in dropped) == ["g18", "g3", "g7"]


def test_storm_split_is_deterministic_70_15_15_and_incremental() -> None:
    storms = [f"WP{i:02d}{2000 + i % 7}" for i in range(60)]
    a, b = split_storms(storms), split_storms(list(reversed(storms)))
    assert a == b and {k: len(v) for k, v in a.items()} == {"train": 42, "val": 9, "test": 9}
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(storms)
    assert split_storms(storms, seed=1) != a
    grown = assign_splits(storms + ["AL012020", "AL022020"], a)  # earlier storms keep their split
    for k in a:
        assert set(a[k]) <= set(grown[k])


def test_moments_merge_and_training_only_statistics() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(250, 10, (4, 5, 6)).astype(np.float32) for _ in range(3)]
    arrays[1][:, 0] = np.nan
    merged = merge_moments(moments(a) for a in arrays)
    flat = np.concatenate([a.reshape(4, -1) for a in arrays], 1)
    np.testing.assert_allclose(merged[:, 1], np.nanmean(flat.astype(np.float64), 1), rtol=1e-9)
    np.testing.assert_allclose(np.sqrt(merged[:, 2] / merged[:, 0]), np.nanstd(flat.astype(np.float64), 1), rtol=1e-9)
    recs = [{"atcf_id": "A", "source": "GMI_GPM", "raw": "a", "moments": moments(arrays[0])},
            {"atcf_id": "B", "source": "GMI_GPM", "raw": "b", "moments": moments(arrays[2] + 500)}]  # a test storm, far off
    stats = normalization_stats(recs, ["A"], ["GMI_GPM", "TMI_TRMM"])
    np.testing.assert_allclose(stats["GMI_GPM"]["mean"], arrays[0].reshape(4, -1).mean(1), rtol=1e-6)
    assert not stats["GMI_GPM"]["pooled_fallback"] and stats["TMI_TRMM"]["pooled_fallback"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tc_raw")
    generate(root, seed=4, n_storms=5)
    return root / "raw"


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=4, n_storms=2)
    b = generate(tmp_path / "b", seed=4, n_storms=2)
    assert a == b and len(a) > 10
    for rel, sha in a.items():
        assert hashlib.sha256((tmp_path / "b" / rel).read_bytes()).hexdigest() == sha
    assert generate(tmp_path / "c", seed=5, n_storms=2) != a


def test_prepare_end_to_end_with_bad_files_and_incremental_rerun(raw: Path, tmp_path: Path) -> None:
    work = tmp_path / "raw"
    shutil.copytree(raw, work)
    bad = work / "bad"
    bad.mkdir()
    amsr2_file(bad, skip=("passive_microwave/S5",))
    (bad / "TCPRIMED_v01r01-final_AL062018_GMI_GPM_025677_20180905051440.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    gmi_file(bad, name="TCPRIMED_v01r01-final_AL062018_GMI_GPM_025678_20180905071440.nc")
    (bad / "readme.nc").write_text("x")
    out = tmp_path / "store"
    rep = prepare_store(work, out, scheduler="sync", progress=False, say=lambda s: None)
    assert rep["skipped"]["environmental"] == 5 and rep["skipped"]["missing_group"] == 1
    assert rep["skipped"]["unreadable"] == 1 and rep["skipped"]["bad_name"] == 1 and rep["errors"] == 3
    assert {f["file"] for f in rep["skipped_files"]} >= {"bad/readme.nc"}
    index = (out / "index.csv").read_text().splitlines()
    assert len(index) - 1 == rep["kept"] and rep["kept"] + rep["thinned"] == rep["ok"]
    splits = json.loads((out / "splits.json").read_text())
    assert splits == {**splits, **split_storms(splits["train"] + splits["val"] + splits["test"])}
    # statistics come from training storms only
    import pandas as pd

    idx = pd.read_csv(out / "index.csv")
    train = idx[(idx["split"] == "train") & (idx["source"] == "SSMIS_F17")]
    vals = np.concatenate([np.load(out / a)[:4].reshape(4, -1) for a in train["array"]], 1)
    stats = json.loads((out / "stats.json").read_text())["SSMIS_F17"]
    np.testing.assert_allclose(stats["mean"], np.nanmean(vals, 1), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], np.nanstd(vals, 1), rtol=1e-4)
    # incremental: nothing re-read; a changed file is
    before = {p: p.read_bytes() for p in (out / "index.csv", out / "stats.json")}
    msgs: list[str] = []
    rep2 = prepare_store(work, out, scheduler="sync", progress=False, say=msgs.append)
    assert rep2["read_now"] == 0 and all(p.read_bytes() == b for p, b in before.items())
    victim = next(work.rglob("*GMI_GPM*.nc"))
    os.utime(victim, ns=(1, 1))
    assert prepare_store(work, out, scheduler="sync", progress=False, say=msgs.append)["read_now"] == 1


def test_all_nan_after_resampling_is_skipped(tmp_path: Path) -> None:
    path = amsr2_file(tmp_path / "raw")
    import netCDF4

    with netCDF4.Dataset(path, "a") as ds:  # the 37 GHz swath lies > 100 km away from every 89 GHz pixel
        ds["passive_microwave/S4/latitude"][:] = ds["passive_microwave/S4/latitude"][:] + 5
    for k in range(3):  # three storms, so that the split has a training storm
        gmi_file(tmp_path / "raw", name=f"TCPRIMED_v01r01-final_AL0{k + 1}2018_GMI_GPM_02567{k}_20180905051440.nc")
    rep = prepare_store(tmp_path / "raw", tmp_path / "out", scheduler="sync", progress=False, say=lambda s: None)
    assert rep["skipped"] == {"all_nan": 1} and rep["kept"] == 3 and rep["storms"] == {"train": 1, "val": 1, "test": 1}


def test_prepare_cli(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "tc_primed", "--raw", str(raw), "--data-root", str(tmp_path), "--scheduler", "sync", "--no-progress"]) == 0
    assert "observations kept" in capsys.readouterr().out and (tmp_path / "tc_primed" / "index.csv").is_file()
    from tasks.tc_primed import TcPrimedTask

    data, identity = TcPrimedTask().resolve_data(tmp_path, "mini")  # a prepared real-layout copy is preferred over synthetic
    assert identity.kind == "real" and identity.root == str(tmp_path / "tc_primed") and len(data.store.index) > 0
    assert main(["prepare", "tc_primed", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_fill_constant_matches_the_documented_value() -> None:
    assert float(FILL) == pytest.approx(-9999.9)
