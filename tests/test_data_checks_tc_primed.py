"""Data checks of tc_primed that catch silent corruption (docs/data_checks.md): brightness-temperature
units, CF time units and plausibility, file-name time vs time variable, longitude fills, storms in
two splits, and normalisation statistics. Hand-written files (tests/test_tc_primed_reader.py
writers) in tmp_path; no embedded data is touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.errors import DataError
from tasks.tc_primed.prepare import prepare_store
from tasks.tc_primed.reader import FILL_VALUE, SkipFile, decode_time, read_overpass
from tasks.tc_primed.store import Store
from tests.test_tc_primed_reader import amsr2_file, gmi_file

GMI_TB = ("TB_36.64H", "TB_36.64V", "TB_89.0H", "TB_89.0V")
T0 = 1_536_124_480.0  # 2018-09-05 05:14:40 UTC, the writers' default time and file-name stamp


def _edit(path: Path, fn) -> Path:
    with netCDF4.Dataset(path, "a") as ds:
        fn(ds)
    return path


def _to_celsius(units: str, variables=GMI_TB):
    def fn(ds):
        for v in variables:
            var = ds[f"passive_microwave/S1/{v}"]
            var[:] = var[:] - np.float32(273.15)
            var.units = units
    return fn


def _skip(path: Path, reason: str, *fragments: str) -> str:
    with pytest.raises(SkipFile) as err:
        read_overpass(path)
    message = str(err.value)
    assert err.value.reason == reason and path.name in message and "\n" not in message, message
    for f in fragments:
        assert f in message, message
    return message


def _three_storms(folder: Path) -> list[Path]:
    """Three GMI files of three storms (a store needs a training storm)."""
    return [gmi_file(folder, name=f"TCPRIMED_v01r01-final_AL0{k + 1}2018_GMI_GPM_02567{k}_20180905051440.nc") for k in range(3)]


# ------------------------------------------------------------------ 1. brightness-temperature units
@pytest.mark.parametrize("units", ["degC", "°C", "C", "degrees_Celsius", "deg C"])
def test_celsius_tbs_are_converted_to_kelvin(tmp_path: Path, units: str) -> None:
    ref = read_overpass(gmi_file(tmp_path / "k"))
    ov = read_overpass(_edit(gmi_file(tmp_path / "c"), _to_celsius(units)))
    np.testing.assert_allclose(ov.swaths["89"].tb, ref.swaths["89"].tb, atol=1e-3)
    np.testing.assert_allclose(ov.swaths["37"].tb, ref.swaths["37"].tb, atol=1e-3)
    assert len(ov.notes) == 4 and all(f"in {units!r} converted to K" in n for n in ov.notes) and not ref.notes


def test_celsius_conversion_is_reported_by_prepare(tmp_path: Path) -> None:
    files = _three_storms(tmp_path / "raw")
    _edit(files[0], _to_celsius("degC"))
    lines: list[str] = []
    rep = prepare_store(tmp_path / "raw", tmp_path / "out", scheduler="sync", progress=False, say=lines.append)
    assert rep["kept"] == 3 and not rep["skipped"]
    assert [c["file"] for c in rep["converted"]] == [files[0].name] * 4
    assert any(line.startswith("prepare: converted 4 brightness-temperature variable(s) in 1 file(s)") for line in lines)
    assert json.loads((tmp_path / "out/report.json").read_text())["converted"] == rep["converted"]
    arrays = {a: np.load(tmp_path / "out" / a) for a in pd.read_csv(tmp_path / "out/index.csv")["array"]}
    ref, conv = (arrays[f"arrays/GMI_GPM/{Path(f).stem.split('_', 2)[2]}.npy"] for f in (files[1].name, files[0].name))
    np.testing.assert_allclose(conv[:4], ref[:4], atol=1e-3)  # the same Kelvin values as the file written in K


@pytest.mark.parametrize("units", ["K", "kelvin", "degrees_K", "Kelvin"])
def test_kelvin_spellings_are_kept_unchanged(tmp_path: Path, units: str) -> None:
    ref = read_overpass(gmi_file(tmp_path / "none"))  # no units attribute: Kelvin by the format's definition
    path = _edit(gmi_file(tmp_path / "k"), lambda ds: [setattr(ds[f"passive_microwave/S1/{v}"], "units", units) for v in GMI_TB])
    ov = read_overpass(path)
    assert np.array_equal(ov.swaths["89"].tb, ref.swaths["89"].tb, equal_nan=True) and not ov.notes


@pytest.mark.parametrize("units", ["degF", "W m-2", "mK", "counts"])
def test_other_tb_units_are_refused(tmp_path: Path, units: str) -> None:
    path = _edit(gmi_file(tmp_path), lambda ds: setattr(ds["passive_microwave/S1/TB_89.0V"], "units", units))
    _skip(path, "bad_units", "passive_microwave/S1/TB_89.0V", repr(units))


@pytest.mark.parametrize("units", [None, "K"])
def test_celsius_values_without_celsius_units_are_refused(tmp_path: Path, units: str | None) -> None:
    def fn(ds):
        var = ds["passive_microwave/S1/TB_89.0H"]
        var[:] = var[:] - np.float32(273.15)  # 240 K -> -33 °C; with a few warm pixels above 0
        var[0, :3] = 12.0
        if units:
            var.units = units
    _skip(_edit(gmi_file(tmp_path), fn), "bad_units", "passive_microwave/S1/TB_89.0H", "median 12.0", "wrong units?")


@pytest.mark.parametrize("units", [None, "K"])
def test_all_negative_tbs_are_called_a_units_problem(tmp_path: Path, units: str | None) -> None:
    def fn(ds):
        var = ds["passive_microwave/S1/TB_89.0V"]
        var[:] = var[:] - np.float32(273.15)  # every value -13 °C: all masked as invalid Kelvin
        if units:
            var.units = units
    _skip(_edit(gmi_file(tmp_path), fn), "bad_units", "passive_microwave/S1/TB_89.0V", "degrees Celsius labelled")


# ------------------------------------------------------------------ 2. CF time units and plausibility
@pytest.mark.parametrize(("units", "value"), [
    ("hours since 1970-01-01", T0 / 3600),
    ("minutes since 1970-01-01T00:00:00Z", T0 / 60),
    ("days since 2018-09-05", (T0 - 1_536_105_600.0) / 86400),
    ("seconds since 2018-09-05 07:00:00 +02:00", T0 - 1_536_105_600.0 - 5 * 3600),  # the epoch is 05:00 UTC
    ("seconds since 1970-01-01 00:00:00", T0),
])
def test_time_is_decoded_from_its_cf_units(tmp_path: Path, units: str, value: float) -> None:
    def fn(ds):
        var = ds["overpass_metadata/time"]
        var[:] = value
        var.units = units
        var.calendar = "standard"
    assert read_overpass(_edit(gmi_file(tmp_path), fn)).time == pytest.approx(T0, abs=1e-3)


def test_seconds_since_1970_come_back_bit_for_bit() -> None:
    for t in (T0, 1_000_000_000.123456, 1.4e9 + 1 / 3):
        assert decode_time(t, "seconds since 1970-01-01 00:00:00", "standard", "w") == t and decode_time(t, None, None, "w") == t


@pytest.mark.parametrize(("attrs", "fragment"), [
    ({"units": "months since 1970-01-01"}, "expected '<seconds|minutes|hours|days> since"),
    ({"units": "seconds"}, "expected '<seconds|minutes|hours|days> since"),
    ({"units": "hours since launch"}, "expected '<seconds|minutes|hours|days> since"),
    ({"units": "seconds since 1970-01-01", "calendar": "360_day"}, "calendar '360_day'"),
])
def test_unknown_time_units_are_refused(tmp_path: Path, attrs: dict, fragment: str) -> None:
    path = _edit(gmi_file(tmp_path), lambda ds: ds["overpass_metadata/time"].setncatts(attrs))
    _skip(path, "bad_time", "overpass_metadata/time", fragment)


def test_hours_read_as_seconds_land_in_1970_and_are_refused(tmp_path: Path) -> None:
    path = gmi_file(tmp_path, time=T0 / 3600)  # hours, but no units attribute: seconds since 1970 by convention
    _skip(path, "bad_time", "1970-01-05", "outside 1987-01-01 .. today")


def test_time_in_the_future_is_refused(tmp_path: Path) -> None:
    import datetime as dt

    t = dt.datetime.now(dt.timezone.utc).timestamp() + 30 * 86400
    stamp = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    path = gmi_file(tmp_path, name=f"TCPRIMED_v01r01-final_AL062018_GMI_GPM_025677_{stamp}.nc", time=t)
    _skip(path, "bad_time", "outside 1987-01-01 .. today")


# ------------------------------------------------------------------ 3. file-name stamp vs time variable
@pytest.mark.parametrize(("offset_h", "ok"), [(-2.9, True), (2.9, True), (3.1, False), (30 * 24, False)])
def test_file_name_time_must_agree_with_the_time_variable(tmp_path: Path, offset_h: float, ok: bool) -> None:
    path = gmi_file(tmp_path, time=T0 + offset_h * 3600)
    if ok:
        assert read_overpass(path).time == T0 + offset_h * 3600
    else:
        _skip(path, "bad_time", "the file name says 2018-09-05T05:14:40Z", f"{abs(offset_h):.1f} h apart, tolerance 3 h")


def test_thirty_days_off_names_both_times(tmp_path: Path) -> None:
    msg = _skip(gmi_file(tmp_path, time=T0 + 30 * 86400), "bad_time")
    assert "overpass_metadata/time is 2018-10-05T05:14:40Z but the file name says 2018-09-05T05:14:40Z" in msg


# ------------------------------------------------------------------ 4. longitude fills and range, like latitude
def test_longitude_fills_and_out_of_range_pixels_are_masked_like_latitude(tmp_path: Path) -> None:
    ref = read_overpass(amsr2_file(tmp_path / "ok")).swaths["89"]

    def fn(ds):
        lon, lat = ds["passive_microwave/S5/longitude"], ds["passive_microwave/S5/latitude"]
        lon[0, 1], lon[2, 3], lon[4, 5] = FILL_VALUE, 400.0, -200.0
        lat[6, 7] = FILL_VALUE
    s89 = read_overpass(_edit(amsr2_file(tmp_path / "bad"), fn)).swaths["89"]
    bad = np.zeros(s89.lat.shape, bool)
    bad[0, 1] = bad[2, 3] = bad[4, 5] = bad[6, 7] = True
    assert np.isnan(s89.lat[bad]).all() and np.isnan(s89.lon[bad]).all()  # not wrapped into [-180, 180)
    assert np.array_equal(s89.lon[~bad], ref.lon[~bad]) and np.array_equal(s89.lat[~bad], ref.lat[~bad])


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("storm_longitude", FILL_VALUE, "outside [-180, 360]"), ("storm_longitude", 361.0, "outside [-180, 360]"),
    ("storm_latitude", FILL_VALUE, "outside [-90, 90]"), ("storm_latitude", 91.0, "outside [-90, 90]"),
])
def test_storm_position_fills_are_refused(tmp_path: Path, name: str, value: float, fragment: str) -> None:
    path = _edit(gmi_file(tmp_path), lambda ds: ds[f"overpass_storm_metadata/{name}"].__setitem__(slice(None), value))
    _skip(path, "bad_metadata", f"overpass_storm_metadata/{name}", fragment)


# ------------------------------------------------------------------ 5. storms in two splits; 10. statistics
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tc_checks")
    _three_storms(root / "raw")
    prepare_store(root / "raw", root / "store", scheduler="sync", progress=False, say=lambda s: None)
    return root


@pytest.fixture()
def work(store: Path, tmp_path: Path) -> Path:
    shutil.copytree(store, tmp_path / "w")
    return tmp_path / "w"


def test_prepare_refuses_a_splits_file_with_a_storm_in_two_splits(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    splits = work / "my_splits.json"
    splits.write_text(json.dumps({"train": ["AL012018", "AL022018"], "val": [], "test": ["AL022018", "AL032018"]}))
    code = main(["prepare", "tc_primed", "--raw", str(work / "raw"), "--out", str(work / "new"), "--splits", str(splits),
                 "--scheduler", "sync", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--splits {splits}" in err and "'train' and 'test' overlap on 1 id(s), e.g. ['AL022018']" in err


def test_prepare_refuses_an_earlier_splits_json_with_a_storm_in_two_splits(work: Path) -> None:
    doc = json.loads((work / "store/splits.json").read_text())
    doc["val"] = doc["val"] + doc["train"][:1]
    (work / "store/splits.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"{work / 'store/splits.json'}: splits 'train' and 'val' overlap on 1 id"):
        prepare_store(work / "raw", work / "store", scheduler="sync", progress=False, say=lambda s: None)


def test_files_prepared_under_older_checks_are_read_again(work: Path) -> None:
    """An incremental re-run does not trust journal records written before these checks existed."""
    journal = work / "store/files.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert {r["checks"] for r in records} == {2}
    journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "checks"}) + "\n" for r in records))

    def read_now() -> int:
        return prepare_store(work / "raw", work / "store", scheduler="sync", progress=False, say=lambda s: None)["read_now"]

    assert read_now() == 3 and read_now() == 0


def test_store_refuses_storms_in_two_splits(work: Path) -> None:
    root = work / "store"
    Store.open(root)
    doc = json.loads((root / "splits.json").read_text())
    storm = doc["test"][0]
    (root / "splits.json").write_text(json.dumps({**doc, "train": doc["train"] + [storm]}))
    with pytest.raises(DataError, match=rf"splits.json: splits 'train' and 'test' overlap on 1 id\(s\), e.g. \['{storm}'\]"):
        Store.open(root)
    (root / "splits.json").write_text(json.dumps(doc))
    index = pd.read_csv(root / "index.csv", dtype=str)
    row = index[index["atcf_id"] == storm].assign(split="train")
    pd.concat([index, row]).to_csv(root / "index.csv", index=False)
    with pytest.raises(DataError, match=rf"index.csv: 1 storm\(s\) have rows in more than one split, e.g. {storm} \(test/train\)"):
        Store.open(root)
    index.assign(split=np.where(index["atcf_id"] == storm, "val", index["split"])).to_csv(root / "index.csv", index=False)
    with pytest.raises(DataError, match=rf"index.csv: 1 storm\(s\) disagree with .*splits.json, e.g. {storm} \(val in index.csv, test in splits.json\)"):
        Store.open(root)


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("std", 0.0, "channel 89H std is 0.0; it must be finite and > 0"),
    ("std", -1.0, "channel 89H std is -1.0"),
    ("std", float("nan"), "channel 89H std is nan"),
    ("mean", float("inf"), "channel 89H mean is inf; it must be finite"),
])
def test_store_refuses_bad_normalisation_statistics(work: Path, key: str, value: float, fragment: str) -> None:
    path = work / "store/stats.json"
    stats = json.loads(path.read_text())
    stats["GMI_GPM"][key][2] = value
    path.write_text(json.dumps(stats))
    with pytest.raises(DataError) as err:
        Store.open(work / "store")
    assert str(err.value).startswith(f"{path}: source GMI_GPM ") and fragment in str(err.value)
