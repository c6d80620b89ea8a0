"""tc_primed reader on hand-written v01r01 files (written here with netCDF4, not by the generator),
file names, bad input, and the land-mask lookup. The writers are reused by the prepare tests.

Independent of the synthetic generator: the layout follows the public description of the files
(groups, variable names, 1-element metadata arrays, 0–360 longitudes, −9999.9 TB fill), with the
variations real files show (char-array strings, a cyclone-number history, extra swath groups).
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

FILL = np.float32(-9999.9)


def swath(lat0: float, lon0: float, scans: int, pixels: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """A small regular swath (degrees) with longitudes in 0–360."""
    lat = lat0 + step * np.arange(scans)[:, None] + 0 * np.arange(pixels)[None, :]
    lon = (lon0 + step * np.arange(pixels)[None, :] + 0 * np.arange(scans)[:, None]) % 360
    return lat.astype(np.float32), lon.astype(np.float32)


def write_overpass(path: Path, *, groups: dict[str, dict[str, np.ndarray]], time: float = 1_536_124_480.0, season: int = 2018,
                   basin: str = "AL", cyclone_number: list[int] | None = None, storm: tuple[float, float] = (20.0, 300.0),
                   intensity: float = 95.0, char_strings: bool = False, skip: tuple[str, ...] = ()) -> Path:
    """Write one overpass file; ``groups`` maps ``S<k>`` to variables; ``skip`` drops groups or variables by path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncattr("data_groups", "overpass_metadata, overpass_storm_metadata, passive_microwave, GPROF, infrared")
        if "overpass_metadata" not in skip:
            m = ds.createGroup("overpass_metadata")
            numbers = cyclone_number or [6]
            m.createDimension("time", 1)
            m.createDimension("history", len(numbers))
            m.createVariable("time", "f8", ("time",))[:] = time
            m.createVariable("season", "i4", ("time",))[:] = season
            m.createVariable("cyclone_number", "i4", ("history",))[:] = numbers
            if char_strings:
                m.createDimension("strlen", 2)
                m.createVariable("basin", "S1", ("time", "strlen"))[:] = netCDF4.stringtochar(np.array([basin], dtype="S2"))
            else:
                m.createVariable("basin", str, ("time",))[0] = basin
        if "overpass_storm_metadata" not in skip:
            s = ds.createGroup("overpass_storm_metadata")
            s.createDimension("time", 1)
            for name, value in (("time", time), ("storm_latitude", storm[0]), ("storm_longitude", storm[1]), ("intensity", intensity)):
                if f"overpass_storm_metadata/{name}" not in skip:
                    s.createVariable(name, "f8", ("time",))[:] = value
        pmw = ds.createGroup("passive_microwave")
        pmw.createDimension("time", 1)
        for gname, variables in groups.items():
            if f"passive_microwave/{gname}" in skip:
                continue
            g = pmw.createGroup(gname)
            h, w = variables["latitude"].shape
            g.createDimension("scan", h)
            g.createDimension("pixel", w)
            g.createVariable("ScanTime", "f8", ("scan",))[:] = time + np.arange(h)
            for vname, arr in variables.items():
                if f"passive_microwave/{gname}/{vname}" in skip:
                    continue
                kw = {"fill_value": FILL} if vname.startswith("TB_") else {}
                var = g.createVariable(vname, "f4", ("scan", "pixel"), zlib=True, **kw)
                var[:] = np.where(np.isnan(arr), FILL, arr) if vname.startswith("TB_") else arr
        ds.createGroup("GPROF").createGroup("S1")
        ds.createGroup("infrared")
    return path


def amsr2_file(folder: Path, name: str = "TCPRIMED_v01r01-final_AL062018_AMSR2_GCOMW1_032741_20180905051440.nc", **kw) -> Path:
    """AMSR2: 36.5 GHz in S4 (coarse), A-scan 89 GHz in S5 (fine), B-scan in S6 (ignored)."""
    lat5, lon5 = swath(19.0, 299.0, 8, 10, 0.1)
    lat4, lon4 = swath(19.0, 299.0, 4, 5, 0.2)
    tb89 = 200 + np.arange(80, dtype=np.float32).reshape(8, 10)
    tb89[0, 0] = np.nan  # a fill value in the file
    groups = {
        "S4": {"latitude": lat4, "longitude": lon4, "TB_36.5H": np.full((4, 5), 150, np.float32), "TB_36.5V": np.full((4, 5), 210, np.float32)},
        "S5": {"latitude": lat5, "longitude": lon5, "TB_A89.0H": tb89, "TB_A89.0V": tb89 + 30},
        "S6": {"latitude": lat5, "longitude": lon5, "TB_B89.0H": tb89 - 5, "TB_B89.0V": tb89 + 25},
    }
    return write_overpass(folder / name, groups=groups, **kw)


def gmi_file(folder: Path, name: str = "TCPRIMED_v01r01-final_AL062018_GMI_GPM_025677_20180905051440.nc", **kw) -> Path:
    """GMI: both frequencies in S1 (one grid)."""
    lat, lon = swath(18.5, 299.5, 6, 7, 0.1)
    groups = {"S1": {"latitude": lat, "longitude": lon, "TB_36.64H": np.full((6, 7), 160, np.float32), "TB_36.64V": np.full((6, 7), 220, np.float32),
                     "TB_89.0H": np.full((6, 7), 240, np.float32), "TB_89.0V": np.full((6, 7), 260, np.float32)}}
    return write_overpass(folder / name, groups=groups, **kw)


# --------------------------------------------------------------------------- reader tests
import pytest  # noqa: E402

from tasks.tc_primed.reader import REASONS, SkipFile, parse_name, read_overpass  # noqa: E402


def test_reads_amsr2_in_the_real_layout(tmp_path: Path) -> None:
    ov = read_overpass(amsr2_file(tmp_path, cyclone_number=[9, 6], char_strings=True))
    assert ov.source.name == "AMSR2_GCOMW1" and ov.atcf_id == "AL062018"
    assert (ov.season, ov.basin, ov.cyclone_number) == (2018, "AL", 6)  # last element of the number history
    assert ov.time == 1_536_124_480.0 and ov.intensity == 95.0
    assert ov.storm_lat == 20.0 and ov.storm_lon == pytest.approx(-60.0)  # 300 °E wrapped
    s89, s37 = ov.swaths["89"], ov.swaths["37"]
    assert s89.tb.shape == (2, 8, 10) and s37.tb.shape == (2, 4, 5)
    assert np.isnan(s89.tb[0, 0, 0]) and s89.tb[0, 0, 1] == 201  # fill -> NaN; H first, A-scan (not B-scan)
    assert s89.tb[1, 0, 1] == 231 and float(s37.tb[0].mean()) == 150 and float(s37.tb[1].mean()) == 210
    assert (s89.lon >= -180).all() and (s89.lon < 180).all() and s89.lon[0, 0] == pytest.approx(-61.0, abs=1e-4)


def test_reads_gmi_with_both_bands_in_one_swath(tmp_path: Path) -> None:
    ov = read_overpass(gmi_file(tmp_path))
    assert ov.source.name == "GMI_GPM" and ov.swaths["37"].tb.shape == ov.swaths["89"].tb.shape == (2, 6, 7)
    assert ov.source.frequencies == (36.64, 36.64, 89.0, 89.0)


def test_file_names() -> None:
    n = parse_name("TCPRIMED_v01r01-final_WP212015_SSMIS_F17_045123_20151003211500.nc")
    assert (n.atcf_id, n.sensor, n.platform, n.orbit, n.stamp.hour) == ("WP212015", "SSMIS", "F17", "045123", 21)
    with pytest.raises(SkipFile) as env:
        parse_name("TCPRIMED_v01r01-final_AL062018_era5_s20180831000000_e20180917180000.nc")
    assert env.value.reason == "environmental"
    for bad in ("TCPRIMED_v01r01-final_AL062018_GMI_GPM.nc", "notes.nc", "TCPRIMED_v01r01-final_AL062018_GMI_GPM_025677_20181345051440.nc"):
        with pytest.raises(SkipFile) as env:
            parse_name(bad)
        assert env.value.reason == "bad_name"


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:700])


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d: _truncate(amsr2_file(d)), "unreadable"),
    (lambda d: (d / "TCPRIMED_v01r01-final_AL062018_AMSR2_GCOMW1_032741_20180905051440.nc").write_text("not netcdf"), "unreadable"),
    (lambda d: amsr2_file(d, skip=("passive_microwave/S5",)), "missing_group"),
    (lambda d: amsr2_file(d, skip=("overpass_storm_metadata",)), "missing_group"),
    (lambda d: amsr2_file(d, skip=("passive_microwave/S4/TB_36.5V",)), "missing_variable"),
    (lambda d: amsr2_file(d, skip=("overpass_storm_metadata/storm_latitude",)), "missing_variable"),
    (lambda d: amsr2_file(d, name="TCPRIMED_v01r01-final_AL062018_AMSR2_GCOMW1_bad.nc"), "bad_name"),
    (lambda d: amsr2_file(d, name="TCPRIMED_v01r01-final_AL062018_ATMS_NOAA20_032741_20180905051440.nc"), "other_source"),
])
def test_bad_input_raises_a_counted_reason(tmp_path: Path, make, reason: str) -> None:
    make(tmp_path)
    (path,) = list(tmp_path.iterdir())
    with pytest.raises(SkipFile) as env:
        read_overpass(path)
    assert env.value.reason == reason and reason in REASONS and path.name in str(env.value)


def test_all_nan_swath_is_refused(tmp_path: Path) -> None:
    path = gmi_file(tmp_path)
    with netCDF4.Dataset(path, "a") as ds:
        ds["passive_microwave/S1/TB_89.0V"][:] = FILL
    with pytest.raises(SkipFile, match="TB_89.0V has no valid pixel") as env:
        read_overpass(path)
    assert env.value.reason == "all_nan"


def test_land_lookup_equals_global_land_mask() -> None:
    from global_land_mask import globe

    from tasks.tc_primed.land import is_land

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 20_000), rng.uniform(-180, 180, 20_000)
    coast_lat, coast_lon = rng.uniform(25, 31, 20_000), rng.uniform(-98, -80, 20_000)  # the US Gulf coast
    for la, lo in ((lat, lon), (coast_lat, coast_lon), (np.array([90.0, -90.0]), np.array([180.0, -180.0]))):
        np.testing.assert_array_equal(is_land(la, lo), globe.is_land(la, lo))
