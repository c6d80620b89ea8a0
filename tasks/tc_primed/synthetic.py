"""Write the embedded synthetic TC-PRIMED as raw v01r01 files in the full real layout.

Each platform alive in a storm's season passes twice a day (sun-synchronous platforms at their own
local times, TRMM/GPM precessing), jittered; a pass sees the storm when the storm lies within its
swath (plus a margin: partial coverage happens near the swath edge, where the storm-centred subset
stops at the swath's last pixel). The sensor looks at the storm through its own geometry: a
``scan × pixel`` grid along its heading with its own spacing, conical-scan arcs, coarser grids for
the low frequencies, its footprints (Gaussian blur of the true fields), its frequency and incidence
response, a small calibration offset and gain, noise, and now and then a few missing scans.

An overpass file holds what a real v01r01 overpass file holds (``docs/tc_primed_data.md``):
``overpass_metadata``, ``overpass_storm_metadata``, ``passive_microwave`` (a ``time`` variable, a
``data_groups`` attribute and every swath group of the sensor, each with latitude, longitude,
int64 ``ScanTime``, storm-relative ``x``/``y``, ``angle_bins``, ``surface_type`` and its
``TB_*`` channels), ``GPROF/S1`` (surface precipitation retrieval) and ``infrared`` (an IRWIN
image on a storm-centred latitude/longitude grid). The file name's stamp is the overpass time
(the swath's closest approach to the storm centre, ``overpass_metadata/time``).

Files: ``raw/v01r01/final/<season>/<basin>/<NN>/TCPRIMED_v01r01-final_<ATCFID>_<SENSOR>_<PLATFORM>_
<ORBIT>_<YYYYMMDDhhmmss>.nc`` plus one ``..._era5_s<start>_e<end>.nc`` per storm (``storm_metadata``
and a storm-centred ERA5-like ``rectilinear`` group; skipped by our reader, as real environmental
files are). Deterministic: one RNG stream per storm from the seed, and netCDF4/HDF5 stores no
creation time, so the same seed and library versions give byte-identical files. For speed each
process builds one empty file per sensor (its layout, shapes fixed per sensor) and fills copies
of it, so the per-variable definition cost of netCDF4 is paid once per sensor, not per file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from .land import is_land
from .reader import FILL_VALUE
from .sensors import SENSOR_SWATHS, SOURCES, Source, tb_frequency
from .synthetic_storm import GENESIS, KM_PER_DEG, Storm, extra_tb, make_storm, rain_ice, true_tb

GENERATOR_VERSION = "tc-primed-synth-2"
SEASONS = (1999, 2000, 2004, 2014, 2015, 2016)
SEASON_WEIGHTS = (0.22, 0.22, 0.2, 0.12, 0.12, 0.12)
GENESIS_WEIGHTS = {"AL": 0.2, "AL-east": 0.05, "EP": 0.13, "CP": 0.06, "WP": 0.24, "IO": 0.1, "SH": 0.14, "SH-pacific": 0.08}
DEFAULT_SIZE = {"n_storms": 210, "half_box_km": 150.0, "grid_km": 4.0}
ORBIT_S = 101 * 60.0
GPROF_LAYERS = np.arange(0.5, 14.5, 0.5, dtype=np.float32)  # hgtTopLayer, km (28 layers)
IR_DEG = 0.07  # infrared grid spacing (degrees)
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
ANGLE_BIN_DEG = 45.0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _storms(seed: int, n_storms: int) -> list[Storm]:
    """Season, genesis region and ATCF number of every storm (numbered per season and basin), then its track."""
    rng = np.random.default_rng([seed, 0])
    seasons = rng.choice(SEASONS, n_storms, p=SEASON_WEIGHTS)
    regions = rng.choice(list(GENESIS_WEIGHTS), n_storms, p=list(GENESIS_WEIGHTS.values()))
    counts: dict[tuple[int, str], int] = {}
    storms = []
    for k, (season, region) in enumerate(zip(seasons.tolist(), regions.tolist(), strict=True)):
        basin = GENESIS[region][0]
        counts[(season, basin)] = counts.get((season, basin), 0) + 1
        storms.append(make_storm(np.random.default_rng([seed, 1, k]), season, region, counts[(season, basin)]))
    return storms


def _passes(storm: Storm, src: Source, rng: np.random.Generator, half_box: float) -> list[tuple[float, float, float]]:
    """(time, cross-track offset of the storm in km, heading in degrees) of the passes that see the storm."""
    out = []
    lt0 = src.synth_local_time if src.synth_local_time is not None else rng.uniform(0, 24)
    drift = 0.0 if src.synth_local_time is not None else -0.4  # h per day, precessing orbits
    day0 = np.floor(storm.t_start / 86400) * 86400
    t_end = storm.t_start + (storm.hours - 1) * 3600
    for d in range(int((t_end - day0) // 86400) + 1):
        for asc in (True, False):
            lat, lon, _ = storm.at(day0 + d * 86400 + 43200)
            local = lt0 + drift * d + (0 if asc else 12)
            t = day0 + d * 86400 + ((local - lon / 15) % 24) * 3600 + rng.normal(0, 0.3) * 3600
            if not storm.t_start <= t <= t_end:
                continue
            lat = storm.at(t)[0]
            spacing = 2750 * max(np.cos(np.radians(lat)), 0.3)  # km between successive ground tracks
            u = rng.uniform(-spacing / 2, spacing / 2)
            if abs(u) > src.synth_swath_km / 2 + 0.5 * half_box:
                continue
            tilt = 8 + 8 * abs(lat) / 30
            out.append((float(t), float(u), -tilt if asc else 180 + tilt))
    return out


def _swath_plan(src: Source) -> list[tuple[str, tuple[str, ...], tuple[int, int], tuple[float, float], float]]:
    """Per swath group of the sensor: name, TB variables, grid coarseness (scans, pixels) relative to
    the 89 GHz grid, footprint (km) and along-track phase shift (AMSR2's B scan sits half a scan later)."""
    plan = []
    for swath, variables in SENSOR_SWATHS[src.sensor].items():
        high = swath == src.swath89 or min(tb_frequency(v) for v in variables) >= 80
        coarse = (1, 1) if high else src.synth_factor37
        if high:
            ifov = src.ifov89
        else:
            scale = max(37.0 / min(tb_frequency(v) for v in variables), 1.0) if swath != src.swath37 else 1.0
            ifov = (src.ifov37[0] * scale, src.ifov37[1] * scale)
        shift = 0.5 if any(v.startswith("TB_B") for v in variables) else 0.0
        plan.append((swath, variables, coarse, ifov, shift))
    return plan


def _grid(src: Source, u: float, heading: float, half_box: float, coarse: tuple[int, int], phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """East/north km (storm-relative) of a swath grid's pixels, and each scan's along-track km. The
    shape is fixed per sensor and grid (the storm-centred subset of ``2 half_box`` along and across
    track); near the swath edge the subset stops at the swath's last pixel, off-centre."""
    da, dc = src.synth_spacing89[0] * coarse[0], src.synth_spacing89[1] * coarse[1]
    half_w = src.synth_swath_km / 2
    along = -half_box + (np.arange(max(int(round(2 * half_box / da)), 2)) + phase) * da
    cross_all = -half_w + (np.arange(int(src.synth_swath_km // dc) + 1) + 0.5 * (coarse[1] - 1)) * dc
    n_pix = min(max(int(round(2 * half_box / dc)), 2), cross_all.size)
    i0 = int(np.clip(np.searchsorted(cross_all, u - half_box), 0, cross_all.size - n_pix))
    cross = cross_all[i0: i0 + n_pix]
    a = along[:, None] + 25.0 * (cross[None, :] / half_w) ** 2  # conical-scan arcs bow forward
    c = np.broadcast_to(cross[None, :] - u, a.shape)
    th = np.radians(heading)
    east, north = a * np.sin(th) + c * np.cos(th), a * np.cos(th) - c * np.sin(th)
    return east, north, along


@lru_cache(maxsize=8)
def _field_grid(half_box: float, grid_km: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The storm-relative grid of the true fields (the same for every overpass of a size): its
    half-extent (km), axis, east km and north degrees per pixel, and the water-vapour bump around
    the centre (read-only)."""
    ext = half_box * 1.5 + 60
    axis = np.arange(-ext, ext + grid_km / 2, grid_km)
    fe, fn = np.meshgrid(axis, axis)  # rows = north, columns = east
    out = (axis, fe, fn / KM_PER_DEG, 0.3 * np.exp(-np.hypot(fe, fn) / 250))
    for arr in out:
        arr.flags.writeable = False
    return (ext, *out)


def _ir_shape(half_box: float) -> int:
    return int(round(2 * half_box / (IR_DEG * KM_PER_DEG))) + 1


def _shapes(src: Source, half_box: float) -> dict[str, tuple[int, int]]:
    """scan × pixel of every swath group (fixed per sensor and box size)."""
    out = {}
    for swath, _, coarse, _, shift in _swath_plan(src):
        east, _, _ = _grid(src, 0.0, 0.0, half_box, coarse, shift)
        out[swath] = east.shape
    return out


def _var(g, name: str, dtype, dims: tuple[str, ...], attrs: dict, fill=None, zlib: bool = False):
    var = g.createVariable(name, dtype, dims, fill_value=fill, zlib=zlib, complevel=1, shuffle=zlib)
    var.setncatts(attrs)
    return var


@lru_cache(maxsize=16)
def _template(src_name: str, half_box: float) -> bytes:
    """An empty overpass file of a sensor: every group, dimension, variable and constant attribute
    (per-file values are written into a copy by :func:`_write_overpass`)."""
    import netCDF4

    src = SOURCES[src_name]
    shapes = _shapes(src, half_box)
    import tempfile

    tmp = tempfile.NamedTemporaryFile(suffix=".nc", delete=False)
    tmp.close()
    ds = netCDF4.Dataset(tmp.name, "w", format="NETCDF4")
    ds.setncatts({"title": "TC PRIMED overpass file (SYNTHETIC: generated by the benchmark suite)",
                  "Conventions": "CF-1.11, ACDD-1.3", "product_version": "v01r01",
                  "data_groups": "overpass_metadata, overpass_storm_metadata, passive_microwave, GPROF, infrared",
                  "source": f"synthetic {src.sensor} {src.platform} (not NASA PPS 1C XCAL)", "generator": GENERATOR_VERSION,
                  "automated_tropical_cyclone_forecasting_system_storm_identifier": "xx000000"})
    tattrs = {"units": TIME_UNITS, "calendar": "standard"}
    meta = ds.createGroup("overpass_metadata")
    meta.createDimension("time", 1)
    _var(meta, "time", "i8", ("time",), {**tattrs, "long_name": "overpass time (closest approach to the storm centre)"})
    _var(meta, "season", "i2", ("time",), {"long_name": "storm season"})
    _var(meta, "cyclone_number", "i1", ("time",), {"long_name": "ATCF cyclone number"})
    for name in ("basin", "instrument_name", "platform_name"):
        meta.createVariable(name, str, ("time",))
    _var(meta, "ERA5_time", "i8", ("time",), {**tattrs, "long_name": "time of the ERA5 analysis nearest the overpass"})
    sm = ds.createGroup("overpass_storm_metadata")
    sm.createDimension("time", 1)
    _var(sm, "time", "i8", ("time",), tattrs)
    for name, dtype, units in (("storm_latitude", "f4", "degrees_north"), ("storm_longitude", "f4", "degrees_east"),
                               ("intensity", "i2", "kt"), ("central_min_pressure", "i2", "hPa"),
                               ("storm_speed", "f4", "m s-1"), ("storm_heading", "f4", "degree")):
        _var(sm, name, dtype, ("time",), {"units": units})
    sm.createVariable("development_level", str, ("time",))
    pm = ds.createGroup("passive_microwave")
    pm.createDimension("time", 1)
    _var(pm, "time", "i8", ("time",), tattrs)
    pm.setncatts({"data_groups": ", ".join(shapes), "instrument": src.sensor, "platform": src.platform})
    for swath, variables, _, _, _ in _swath_plan(src):
        g = pm.createGroup(swath)
        g.setncatts({"instrument": src.sensor, "platform": src.platform, "swath": swath,
                     "automated_tropical_cyclone_forecasting_system_storm_identifier": "xx000000"})
        g.createDimension("scan", shapes[swath][0])
        g.createDimension("pixel", shapes[swath][1])
        _var(g, "latitude", "f4", ("scan", "pixel"), {"units": "degrees_north"})
        _var(g, "longitude", "f4", ("scan", "pixel"), {"units": "degrees_east"})
        _var(g, "ScanTime", "i8", ("scan",), {**tattrs, "long_name": "scan time"})
        _var(g, "x", "f4", ("scan", "pixel"), {"units": "km", "long_name": "eastward distance from the storm centre"})
        _var(g, "y", "f4", ("scan", "pixel"), {"units": "km", "long_name": "northward distance from the storm centre"})
        _var(g, "angle_bins", "i1", ("scan", "pixel"), {"long_name": f"storm-relative azimuth bin ({ANGLE_BIN_DEG:g} degree bins, 0 = east, counter-clockwise)"})
        _var(g, "surface_type", "i1", ("scan", "pixel"), {"flag_values": np.array([0, 1], "i1"), "flag_meanings": "water land"})
        for v in variables:
            _var(g, v, "f4", ("scan", "pixel"), {"units": "K", "long_name": f"brightness temperature {v[3:]}"}, np.float32(FILL_VALUE))
    gp = ds.createGroup("GPROF").createGroup("S1")
    gp.setncatts({"instrument": src.sensor, "platform": src.platform, "algorithm": "GPROF-like (synthetic)"})
    gshape = shapes[src.swath37]
    gp.createDimension("scan", gshape[0])
    gp.createDimension("pixel", gshape[1])
    gp.createDimension("hgtTopLayer", GPROF_LAYERS.size)
    _var(gp, "hgtTopLayer", "f4", ("hgtTopLayer",), {"units": "km"})[:] = GPROF_LAYERS
    for name, dtype, dims, units in (("latitude", "f4", ("scan", "pixel"), "degrees_north"), ("longitude", "f4", ("scan", "pixel"), "degrees_east"),
                                     ("ScanTime", "i8", ("scan",), None), ("x", "f4", ("scan", "pixel"), "km"), ("y", "f4", ("scan", "pixel"), "km")):
        _var(gp, name, dtype, dims, tattrs if units is None else {"units": units})
    for name, units in (("surfacePrecipitation", "mm h-1"), ("convectivePrecipitation", "mm h-1"),
                        ("frozenPrecipitation", "mm h-1"), ("probabilityOfPrecip", "percent")):
        _var(gp, name, "f4", ("scan", "pixel"), {"units": units}, np.float32(FILL_VALUE))
    ir = ds.createGroup("infrared")
    n = _ir_shape(half_box)
    ir.createDimension("time", 1)
    ir.createDimension("ny", n)
    ir.createDimension("nx", n)
    _var(ir, "time", "i8", ("time",), {**tattrs, "long_name": "infrared image time"})
    _var(ir, "infrared_availability_flag", "i1", ("time",), {"flag_values": np.array([0, 1, 2], "i1"),
                                                             "flag_meanings": "unavailable geostationary HURSAT"})
    _var(ir, "latitude", "f4", ("ny", "nx"), {"units": "degrees_north"})
    _var(ir, "longitude", "f4", ("ny", "nx"), {"units": "degrees_east"})
    _var(ir, "x", "f4", ("nx",), {"units": "km"})
    _var(ir, "y", "f4", ("ny",), {"units": "km"})
    _var(ir, "IRWIN", "f4", ("ny", "nx"), {"units": "K", "long_name": "infrared window (~11 um) brightness temperature"}, np.float32(FILL_VALUE))
    ds.close()
    data = Path(tmp.name).read_bytes()
    Path(tmp.name).unlink()
    return data


def _sample(field: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    return map_coordinates(field, coords, order=order, mode="nearest")


def _observe(storm: Storm, src: Source, t: float, u: float, heading: float, rng: np.random.Generator,
             calib: np.ndarray, half_box: float, grid_km: float) -> dict[str, dict[str, np.ndarray]]:
    """Group path -> variables for one overpass: the sensor's view of the storm at time ``t``."""
    from scipy.ndimage import gaussian_filter

    clat, clon, _ = storm.at(t)
    ext, axis, fe, fn_deg, wv_core = _field_grid(half_box, grid_km)
    flat = np.clip(clat + fn_deg, -89.9, 89.9)
    flon = (clon + fe / (KM_PER_DEG * np.cos(np.radians(flat))) + 180) % 360 - 180
    land = is_land(flat, flon).astype(np.float64)
    rain, ice = rain_ice(storm, t, axis)
    wv = storm.params["wv"] + wv_core
    tb = true_tb(rain, ice, land, wv, src.frequencies, src.synth_incidence, storm.params["land_temp"])
    out: dict[str, dict[str, np.ndarray]] = {}
    phase = rng.uniform(0, 1)
    used = {v: c for c, v in enumerate(src.variables)}
    nedt = {v: src.synth_nedt[c >= 2] for v, c in used.items()}
    missing = rng.random() < 0.05
    geo37 = None
    for swath, variables, coarse, ifov, shift in _swath_plan(src):
        east, north, along = _grid(src, u, heading, half_box, coarse, phase + shift)
        coords = np.stack([(north + ext) / grid_km, (east + ext) / grid_km])
        sigma = np.sqrt(ifov[0] * ifov[1]) / 2.355 / grid_km
        lat = np.clip(clat + north / KM_PER_DEG, -89.9, 89.9)
        g: dict[str, np.ndarray] = {
            "latitude": lat.astype(np.float32),
            "longitude": ((clon + east / (KM_PER_DEG * np.cos(np.radians(lat)))) % 360).astype(np.float32),
            "ScanTime": np.round(t + along / 7.0).astype(np.int64),
            "x": east.astype(np.float32), "y": north.astype(np.float32),
            "angle_bins": (np.degrees(np.arctan2(north, east)) % 360 // ANGLE_BIN_DEG).astype(np.int8),
            "surface_type": _sample(land, coords, order=0).astype(np.int8),
        }
        extra = [v for v in variables if v not in used]
        if extra:
            rb, ib = _sample(gaussian_filter(rain, sigma, mode="nearest"), coords), _sample(gaussian_filter(ice, sigma, mode="nearest"), coords)
            lb, wb = _sample(land, coords), _sample(wv, coords)
        for v in variables:
            if v in used:
                c = used[v]
                obs = _sample(gaussian_filter(tb[c], sigma, mode="nearest"), coords)
                obs = 250 + calib[c, 1] * (obs - 250) + calib[c, 0]
            else:
                freq = tb_frequency(v)
                parts = v.removeprefix("TB_").rstrip("HVQ").split("_")
                obs = extra_tb(rb, ib, lb, wb, freq, v.endswith("H"), src.synth_incidence, storm.params["land_temp"],
                               offset=float(parts[1]) if len(parts) > 1 else 0.0)
            g[v] = (obs + rng.normal(0, nedt.get(v, 0.6), obs.shape)).astype(np.float32)
        if missing and east.shape[0] > 6:  # a few missing scans
            s0 = int(rng.integers(0, east.shape[0] - 4))
            for v in variables:
                g[v][s0: s0 + int(rng.integers(2, 5))] = FILL_VALUE
        out[f"passive_microwave/{swath}"] = g
        if swath == src.swath37:
            geo37 = (coords, g, sigma)
    coords, g37, sigma = geo37
    rr = 9.0 * _sample(gaussian_filter(rain, sigma, mode="nearest"), coords) ** 1.3
    conv = rr * _sample(gaussian_filter(ice, sigma, mode="nearest"), coords) / (0.5 + _sample(ice, coords))
    out["GPROF/S1"] = {**{k: g37[k] for k in ("latitude", "longitude", "ScanTime", "x", "y")},
                       "surfacePrecipitation": rr.astype(np.float32), "convectivePrecipitation": np.minimum(conv, rr).astype(np.float32),
                       "frozenPrecipitation": np.zeros_like(rr, dtype=np.float32),
                       "probabilityOfPrecip": (100 * (1 - np.exp(-3 * rr))).round().astype(np.float32)}
    n = _ir_shape(half_box)
    offs = (np.arange(n) - (n - 1) / 2) * IR_DEG
    ilat = np.clip(clat + offs, -89.9, 89.9)[:, None] + 0 * offs[None, :]
    ilon = (clon + offs)[None, :] + 0 * ilat
    iy, ix = (ilat - clat) * KM_PER_DEG, (ilon - clon) * KM_PER_DEG * np.cos(np.radians(ilat))
    icoords = np.stack([(iy + ext) / grid_km, (ix + ext) / grid_km])
    cloud = _sample(gaussian_filter(ice + 0.6 * rain, 2.0, mode="nearest"), icoords)
    irwin = 298 + 4 * _sample(land, icoords) - 100 * (1 - np.exp(-cloud / 0.5)) + rng.normal(0, 0.5, cloud.shape)
    available = 0 if rng.random() < 0.04 else (2 if storm.season < 2000 else 1)
    out["infrared"] = {"time": np.array([int(t // 1800 * 1800)], np.int64), "infrared_availability_flag": np.array([available], np.int8),
                       "latitude": ilat.astype(np.float32), "longitude": (ilon % 360).astype(np.float32),
                       "x": ix[n // 2].astype(np.float32), "y": iy[:, n // 2].astype(np.float32),
                       "IRWIN": (irwin if available else np.full_like(irwin, FILL_VALUE)).astype(np.float32)}
    return out


def _heading_speed(storm: Storm, t: float) -> tuple[float, float]:
    la0, lo0, _ = storm.at(t - 1800)
    la1, lo1, _ = storm.at(t + 1800)
    dn = (la1 - la0) * KM_PER_DEG * 1000
    de = ((lo1 - lo0 + 180) % 360 - 180) * KM_PER_DEG * 1000 * np.cos(np.radians((la0 + la1) / 2))
    return float(np.degrees(np.arctan2(de, dn)) % 360), float(np.hypot(de, dn) / 3600)


def _pressure(vmax: float) -> int:
    return int(round(1010 - (np.maximum(vmax, 15) / 6.3) ** (1 / 0.644)))  # an Atkinson-Holliday-like wind-pressure relation


def _dev_level(vmax: float) -> str:
    return "TD" if vmax < 34 else ("TS" if vmax < 64 else "HU")


def _write_overpass(path: Path, storm: Storm, src: Source, t: float, groups: dict, half_box: float) -> None:
    import netCDF4

    clat, clon, v = storm.at(t)
    heading, speed = _heading_speed(storm, t)
    ti = np.array([int(t)], np.int64)
    groups = {**groups,
              "overpass_metadata": {"time": ti, "season": np.array([storm.season], np.int16), "cyclone_number": np.array([storm.number], np.int8),
                                    "ERA5_time": np.array([int(round(t / 21600) * 21600)], np.int64)},
              "overpass_storm_metadata": {"time": ti, "storm_latitude": np.array([clat], np.float32),
                                          "storm_longitude": np.array([clon % 360], np.float32), "intensity": np.array([round(v)], np.int16),
                                          "central_min_pressure": np.array([_pressure(v)], np.int16),
                                          "storm_speed": np.array([speed], np.float32), "storm_heading": np.array([heading], np.float32)},
              "passive_microwave": {"time": ti}}
    strings = {"overpass_metadata": {"basin": storm.basin, "instrument_name": src.sensor, "platform_name": src.platform},
               "overpass_storm_metadata": {"development_level": _dev_level(v)}}
    atcf = {"automated_tropical_cyclone_forecasting_system_storm_identifier": storm.atcf_id.lower()}
    path.write_bytes(_template(src.name, half_box))
    with netCDF4.Dataset(path, "r+") as ds:
        ds.set_auto_maskandscale(False)  # plain arrays in, no masked-array handling per write
        ds.setncatts(atcf)
        for gpath, variables in groups.items():
            g = ds
            for part in gpath.split("/"):
                g = g.groups[part]
            if gpath.startswith("passive_microwave/"):
                g.setncatts(atcf)
            for name, arr in variables.items():
                g.variables[name][:] = arr
        for gpath, variables in strings.items():
            for name, value in variables.items():
                ds.groups[gpath].variables[name][0] = value


def _write_env(path: Path, storm: Storm) -> None:
    """The storm's environmental file: ``storm_metadata`` (6-hourly track) and a storm-centred
    ERA5-like ``rectilinear`` group (81 × 81 at 0.25°: sea-level pressure, 10 m winds, SST)."""
    import netCDF4

    idx = np.arange(0, storm.hours, 6)
    times = np.array([int(storm.t_start) + 3600 * int(i) for i in idx], np.int64)
    lat, lon, vmax = storm.lat[idx], storm.lon[idx], np.round(storm.vmax[idx])
    hs = np.array([_heading_speed(storm, float(t)) for t in times])
    with netCDF4.Dataset(path, "w", format="NETCDF4", diskless=True, persist=True) as ds:
        ds.setncatts({"title": "TC PRIMED environmental file (SYNTHETIC: generated by the benchmark suite)", "product_version": "v01r01",
                      "data_groups": "storm_metadata, rectilinear", "generator": GENERATOR_VERSION,
                      "automated_tropical_cyclone_forecasting_system_storm_identifier": storm.atcf_id.lower()})
        g = ds.createGroup("storm_metadata")
        g.createDimension("time", len(idx))
        g.createDimension("storm", 1)
        tattrs = {"units": TIME_UNITS, "calendar": "standard"}
        _var(g, "season", "i2", ("storm",), {})[:] = storm.season
        g.createVariable("basin", str, ("storm",))[0] = storm.basin
        _var(g, "cyclone_number", "i1", ("storm",), {})[:] = storm.number
        for name, dtype, values, attrs in (("time", "i8", times, tattrs), ("storm_latitude", "f4", lat, {"units": "degrees_north"}),
                                           ("storm_longitude", "f4", lon % 360, {"units": "degrees_east"}),
                                           ("intensity", "i2", vmax, {"units": "kt"}),
                                           ("central_min_pressure", "i2", [_pressure(x) for x in vmax], {"units": "hPa"}),
                                           ("storm_speed", "f4", hs[:, 1], {"units": "m s-1"}), ("storm_heading", "f4", hs[:, 0], {"units": "degree"})):
            _var(g, name, dtype, ("time",), attrs)[:] = values
        r = ds.createGroup("rectilinear")
        n = 81
        r.createDimension("time", len(idx))
        r.createDimension("ny", n)
        r.createDimension("nx", n)
        offs = (np.arange(n) - n // 2) * 0.25
        glat = np.clip(lat[:, None] + offs[None, :], -89.9, 89.9)
        glon = (lon[:, None] + offs[None, :]) % 360
        _var(r, "time", "i8", ("time",), tattrs)[:] = times
        _var(r, "latitude", "f4", ("time", "ny"), {"units": "degrees_north"})[:] = glat
        _var(r, "longitude", "f4", ("time", "nx"), {"units": "degrees_east"})[:] = glon
        dy = offs[None, :, None] * KM_PER_DEG
        dx = offs[None, None, :] * KM_PER_DEG * np.cos(np.radians(lat[:, None, None]))
        rr = np.hypot(dx, dy) + 1.0
        rmax = 40.0
        vt = (vmax[:, None, None] * 0.514) * np.where(rr < rmax, rr / rmax, (rmax / rr) ** 0.6)
        sign = -1.0 if storm.basin == "SH" else 1.0
        dp = (1010 - np.array([_pressure(x) for x in vmax]))[:, None, None] * 100.0
        fields = {"pressure_msl": 101000 - dp * np.exp(-rr / 150.0), "u_wind_10m": -sign * vt * dy / rr, "v_wind_10m": sign * vt * dx / rr,
                  "sst": 302.5 - 0.18 * np.maximum(np.abs(glat)[:, :, None] - 15, 0) + 0 * dx}
        for name, units in (("pressure_msl", "Pa"), ("u_wind_10m", "m s-1"), ("v_wind_10m", "m s-1"), ("sst", "K")):
            var = r.createVariable(name, "f4", ("time", "ny", "nx"), zlib=True, complevel=1, shuffle=True, least_significant_digit=1)
            var.units = units
            var[:] = fields[name]


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def _write_storm(args: tuple[Path, int, int, Storm, float, float]) -> dict[str, str]:
    out, seed, k, storm, half_box, grid_km = args
    rel_dir = Path("raw/v01r01/final") / str(storm.season) / storm.basin / f"{storm.number:02d}"
    (out / rel_dir).mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    calib_rng = np.random.default_rng([seed, 2])
    calib = {name: np.stack([calib_rng.normal(0, 1.5, 4), 1 + calib_rng.normal(0, 0.012, 4)], 1) for name in SOURCES}
    for j, (name, src) in enumerate(SOURCES.items()):
        if not src.synth_years[0] <= storm.season <= src.synth_years[1]:
            continue
        rng = np.random.default_rng([seed, 3, k, j])
        for t, u, heading in _passes(storm, src, rng, half_box):
            t = float(round(t))  # whole seconds: the stamp, overpass_metadata/time and the centre scan agree exactly
            groups = _observe(storm, src, t, u, heading, rng, calib[name], half_box, grid_km)
            orbit = int((t - 9.0e8) // ORBIT_S) % 1_000_000
            rel = rel_dir / f"TCPRIMED_v01r01-final_{storm.atcf_id}_{src.sensor}_{src.platform}_{orbit:06d}_{_stamp(t)}.nc"
            _write_overpass(out / rel, storm, src, t, groups, half_box)
            files[rel.as_posix()] = _sha(out / rel)
    end = storm.t_start + (storm.hours - 1) * 3600
    rel = rel_dir / f"TCPRIMED_v01r01-final_{storm.atcf_id}_era5_s{_stamp(storm.t_start)}_e{_stamp(end)}.nc"
    _write_env(out / rel, storm)
    files[rel.as_posix()] = _sha(out / rel)
    return files


def generate(out: Path, seed: int = 0, *, n_storms: int = DEFAULT_SIZE["n_storms"], half_box_km: float = DEFAULT_SIZE["half_box_km"],
             grid_km: float = DEFAULT_SIZE["grid_km"], workers: int = 1, progress: bool | None = None) -> dict[str, str]:
    """Write the raw synthetic overpass files under ``out/raw``; returns {relative path: sha256}.
    ``progress``: a bar per storm on stderr (None: as ``generation_progress`` says, else on a
    terminal); a summary line on stderr at the end. Storms are written by ``workers`` processes,
    each from its own RNG streams, so the files do not depend on ``workers``."""
    from tasks.sits.synthetic import note, progress_bar

    start = time.perf_counter()
    out = Path(out)
    storms = _storms(seed, int(n_storms))
    jobs = [(out, seed, k, s, float(half_box_km), float(grid_km)) for k, s in enumerate(storms)]
    files: dict[str, str] = {}
    with progress_bar(len(jobs), "generate tc_primed", "storm", progress) as bar:
        if workers > 1 and len(jobs) > 1:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for part in pool.map(_write_storm, jobs):
                    files.update(part)
                    bar.update(1)
        else:
            for job in jobs:
                files.update(_write_storm(job))
                bar.update(1)
    note(f"tc_primed: generated {len(jobs)} storms ({len(files)} raw files) in {time.perf_counter() - start:.1f} s")
    return dict(sorted(files.items()))
