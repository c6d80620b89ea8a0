"""The embedded synthetic TC-PRIMED files in the full v01r01 layout, read the way the authors'
public preprocessing reads real files (netCDF4 ``Dataset`` groups opened with xarray through
``NetCDF4DataStore`` with ``decode_times=False``, 1-element metadata arrays indexed ``[0]`` /
``[-1]``, the storm id from the file path and name). The access pattern is re-written here, not
copied. Also: the file stamp is the overpass time, int64 scan times, every swath of each sensor,
tracks across 0° and 180° through prepare and the windows, and broken files named in one line."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from xarray.backends import NetCDF4DataStore

from tasks.tc_primed.prepare import prepare_store
from tasks.tc_primed.reader import SkipFile, parse_name, read_overpass
from tasks.tc_primed.sensors import SENSOR_SWATHS, SOURCES
from tasks.tc_primed.store import Store
from tasks.tc_primed.synthetic import DEFAULT_SIZE, _storms, _write_storm, generate
from tasks.tc_primed.windows import _crop_box

TINY = {"n_storms": 3, "half_box_km": 60.0}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tc_layout")
    generate(root, seed=7, **TINY)
    return root / "raw" / "v01r01" / "final"


def _overpasses(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.nc") if "_era5_" not in p.name)


def _frequency(name: str) -> float:
    """GHz from a TB variable name, as a user of the files parses it (field after TB_, letters stripped)."""
    return float(name.split("_")[1].strip("ABHVQ"))


def _group(ds: netCDF4.Dataset, *path: str):
    g = ds
    for p in path:
        g = g[p]
    return xr.open_dataset(NetCDF4DataStore(g), decode_times=False)


def test_overpass_files_read_like_the_authors_preprocessing(raw: Path) -> None:
    files = _overpasses(raw)
    assert files
    sensors = set()
    for file in files:
        season, basin, number = file.parent.parent.parent.name, file.parent.parent.name, file.parent.name
        sensor, platform = file.stem.split("_")[3:5]
        sensors.add(sensor)
        with netCDF4.Dataset(file) as ds:
            assert {"overpass_metadata", "overpass_storm_metadata", "passive_microwave", "GPROF", "infrared"} <= set(ds.groups)
            meta, storm = ds["overpass_metadata"], ds["overpass_storm_metadata"]
            assert meta["season"][0].item() == int(season)
            assert meta["basin"][0] == basin and isinstance(meta["basin"][0], str)
            assert meta["cyclone_number"][-1].item() == int(number)
            assert (meta["instrument_name"][0], meta["platform_name"][0]) == (sensor, platform)
            when = pd.to_datetime(meta["time"][0], origin="unix", unit="s")
            assert when.to_pydatetime().replace(tzinfo=dt.timezone.utc) == parse_name(file.name).stamp  # stamp = overpass time
            assert meta["time"].dtype == np.int64 and meta["time"].units.startswith("seconds since 1970-01-01")
            lat, lon = storm["storm_latitude"][0].item(), storm["storm_longitude"][0].item()
            assert -90 <= lat <= 90 and 0 <= lon < 360 and storm["intensity"][0].item() > 0
            for name in ("central_min_pressure", "storm_speed", "storm_heading", "development_level", "time"):
                assert name in storm.variables
            pmw = ds["passive_microwave"]
            swaths = list(pmw.groups)
            assert swaths == list(SENSOR_SWATHS[sensor])  # every swath the real sensor has, in order
            assert "time" in pmw.dimensions and pmw["time"].dtype == np.int64
            assert [s.strip() for s in pmw.data_groups.split(",")] == swaths
            for swath in swaths:
                sw = _group(ds, "passive_microwave", swath)
                assert sw["ScanTime"].dtype == np.int64 and sw["ScanTime"].dims == ("scan",)
                assert sw["ScanTime"].attrs["units"].startswith("seconds since 1970-01-01")
                assert abs(int(sw["ScanTime"].values[sw.sizes["scan"] // 2]) - int(meta["time"][0])) < 60  # the subset is centred on the overpass
                for name in ("x", "y", "angle_bins", "surface_type", "latitude", "longitude"):
                    assert sw[name].dims == ("scan", "pixel"), (file.name, swath, name)
                sw = sw.drop_vars(["ScanTime", "angle_bins", "x", "y"])
                tbs = [v for v in sw.data_vars if v.startswith("TB")]
                assert tbs == list(SENSOR_SWATHS[sensor][swath])
                for v in tbs:
                    assert _frequency(v) > 5 and not sw[v].isnull().all() and sw[v].dtype == np.float32
                    assert 50 < float(sw[v].median()) < 320, (file.name, v)
                sw["longitude"] = (sw["longitude"] + 180) % 360 - 180
            gp = _group(ds, "GPROF", "S1")
            assert {"scan", "pixel", "hgtTopLayer"} <= set(gp.sizes) and "surfacePrecipitation" in gp
            gp.drop_vars(["ScanTime", "x", "y"])
            assert ds["infrared"]["infrared_availability_flag"][0].item() in (0, 1, 2)
            ir = _group(ds, "infrared")[["IRWIN", "latitude", "longitude"]]
            assert ir["IRWIN"].dims == ("ny", "nx") and ir["latitude"].dims == ("ny", "nx")
    assert len(sensors) >= 2


def test_environmental_files_read_like_the_authors_preprocessing(raw: Path) -> None:
    files = sorted(raw.rglob("*_era5_*.nc"))
    assert len(files) == TINY["n_storms"]
    for file in files:
        season, basin, number = file.parent.parent.parent.name, file.parent.parent.name, int(file.parent.name)
        with netCDF4.Dataset(file) as ds:
            sm = ds["storm_metadata"]
            assert (sm["season"][0].item(), sm["basin"][0], sm["cyclone_number"][-1].item()) == (int(season), basin, number)
            track = _group(ds, "storm_metadata")
            assert (track["season"].item(), track["basin"].item(), track["cyclone_number"].item()) == (int(season), basin, number)
            times = track["time"].values
            assert times.dtype == np.int64 and np.all(np.diff(times) == 6 * 3600)
            step = track.isel(time=len(times) // 2)
            for name in ("storm_latitude", "storm_longitude", "intensity", "central_min_pressure", "storm_speed", "storm_heading"):
                assert np.isfinite(step[name].item())
            era5 = _group(ds, "rectilinear")
            assert np.array_equal(era5["time"].values, times)
            one = era5.isel(time=0)[["pressure_msl", "u_wind_10m", "v_wind_10m", "sst", "latitude", "longitude"]].rename({"ny": "lat", "nx": "lon"})
            assert one["latitude"].ndim == 1 and one["longitude"].ndim == 1
            assert one.sizes["lat"] >= 81 and one.sizes["lon"] >= 81
            centre = one["pressure_msl"].values[one.sizes["lat"] // 2, one.sizes["lon"] // 2]
            assert centre < one["pressure_msl"].values[0, 0]  # the low is at the storm centre


def test_every_source_writes_all_its_swaths(tmp_path: Path) -> None:
    """One overpass per paper source (2014-2016 and 1999 storms cover all 11): the swath groups of each."""
    seen: dict[str, list[str]] = {}
    storms = _storms(0, DEFAULT_SIZE["n_storms"])
    wanted = {s.name for s in SOURCES.values()}
    for k, storm in enumerate(storms):
        if wanted <= set(seen):
            break
        alive = {n for n, s in SOURCES.items() if s.synth_years[0] <= storm.season <= s.synth_years[1]}
        if not alive - set(seen):
            continue
        _write_storm((tmp_path / str(k), 0, k, storm, 60.0, 4.0))
        for f in _overpasses(tmp_path / str(k)):
            name = "_".join(f.stem.split("_")[3:5])
            with netCDF4.Dataset(f) as ds:
                seen[name] = list(ds["passive_microwave"].groups)
    assert wanted <= set(seen)
    for name, swaths in seen.items():
        assert swaths == list(SENSOR_SWATHS[SOURCES[name].sensor]), name


def _crosses(storm, meridian: float) -> bool:
    d = (storm.lon - meridian + 180) % 360 - 180  # signed distance to the meridian
    return bool(np.any((np.sign(d[:-1]) != np.sign(d[1:])) & (np.abs(d[:-1]) < 5)))


def test_tracks_cross_the_greenwich_and_date_line_meridians() -> None:
    storms = _storms(0, DEFAULT_SIZE["n_storms"])
    assert sum(_crosses(s, 0.0) for s in storms) >= 2
    assert sum(_crosses(s, 180.0) for s in storms) >= 2


@pytest.mark.parametrize("meridian", [0.0, 180.0])
def test_prepare_and_windows_across_the_wrap(tmp_path: Path, meridian: float) -> None:
    storms = _storms(0, DEFAULT_SIZE["n_storms"])
    k = next(k for k, s in enumerate(storms) if _crosses(s, meridian))
    for j in list(dict.fromkeys((k, 0, 1, 2)))[:3]:  # prepare splits storms: it needs three
        _write_storm((tmp_path, 0, j, storms[j], 100.0, 4.0))
    prepare_store(tmp_path / "raw", tmp_path / "prepared", scheduler="sync", progress=False)
    store = Store.open(tmp_path / "prepared")
    straddling = 0
    rows = store.index.index[store.index["atcf_id"] == storms[k].atcf_id]
    assert len(rows) > 3
    for row in rows:
        rec = store.index.loc[row]
        arr = store.array(row)
        lat, lon = arr[4], arr[5]
        ok = np.isfinite(lon)
        assert np.all((lon[ok] >= -180) & (lon[ok] < 180))
        dlon = (lon - rec["storm_lon"] + 180) % 360 - 180
        if np.nanmax(np.abs(lon[ok] - rec["storm_lon"])) > 180:  # the array has pixels on both sides of ±180
            straddling += meridian == 180.0
        if np.nanmin(lon[ok]) < 0 < np.nanmax(lon[ok]) and np.nanmax(np.abs(lon[ok])) < 90:
            straddling += meridian == 0.0
        # storm-relative distances stay small across the wrap (km, equirectangular)
        dist = np.hypot(lat - rec["storm_lat"], dlon * np.cos(np.radians(rec["storm_lat"]))) * 111.2
        assert np.nanmin(dist) < 60
        rs, cs = _crop_box(arr, (float(rec["storm_lat"]), float(rec["storm_lon"])), 16)
        assert np.nanmin(dist[rs, cs]) == np.nanmin(dist)  # the crop holds the storm centre
        assert np.nanmax(dlon[rs, cs]) - np.nanmin(dlon[rs, cs]) < 10  # one piece, not split across the wrap
        assert np.isfinite(arr[:2, rs, cs]).mean() > 0.5  # 37 GHz resampled onto the 89 GHz grid across the wrap
    assert straddling >= 1


def test_broken_files_are_named_in_one_line(raw: Path, tmp_path: Path) -> None:
    good = next(f for f in _overpasses(raw) if "_AMSR2_" in f.name or "_SSMIS_" in f.name or "_GMI_" in f.name)
    src = next(s for s in SOURCES.values() if f"_{s.sensor}_{s.platform}_" in good.name)
    truncated = tmp_path / good.name
    truncated.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(SkipFile) as err:
        read_overpass(truncated)
    assert err.value.reason == "unreadable" and good.name in str(err.value) and "\n" not in str(err.value)
    missing = tmp_path / "m" / good.name
    missing.parent.mkdir()
    shutil.copy(good, missing)
    with netCDF4.Dataset(missing, "r+") as ds:  # rename the 89 GHz swath away: a required group is missing
        ds["passive_microwave"].renameGroup(src.swath89, "S9")
    with pytest.raises(SkipFile) as err:
        read_overpass(missing)
    assert err.value.reason == "missing_group" and good.name in str(err.value) and "\n" not in str(err.value)


def test_reader_reads_the_full_files(raw: Path) -> None:
    for file in _overpasses(raw):
        ov = read_overpass(file)
        assert ov.time == parse_name(file.name).stamp.timestamp()
        assert set(ov.swaths) == {"37", "89"} and np.isfinite(ov.swaths["89"].tb).any()
