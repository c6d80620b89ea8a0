"""Write the embedded synthetic TC-PRIMED as raw v01r01 overpass files (the real layout).

Each platform alive in a storm's season passes twice a day (sun-synchronous platforms at their own
local times, TRMM/GPM precessing), jittered; a pass sees the storm when the storm lies within its
swath (plus a margin: partial coverage happens near the swath edge). The sensor looks at the
storm through its own geometry: a ``scan × pixel`` grid along its heading with its own spacing,
conical-scan arcs, a 37 GHz grid coarser than the 89 GHz one (GMI: one shared swath group), its
footprints (Gaussian blur of the true TBs), its frequency and incidence response, a small
calibration offset and gain, noise, and now and then a few missing scans.

Files: ``raw/v01r01/final/<season>/<basin>/<NN>/TCPRIMED_v01r01-final_<ATCFID>_<SENSOR>_<PLATFORM>_
<ORBIT>_<YYYYMMDDhhmmss>.nc`` plus one ``..._era5_s<start>_e<end>.nc`` per storm (skipped by the
reader, as real environmental files are). Deterministic: one RNG stream per storm from the seed,
and netCDF4/HDF5 stores no creation time, so the same seed and library versions give
byte-identical files (the library version string inside, ``_NCProperties``, is the only part that
changes across installs; the prepared store's hashes do not depend on it).
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
from .sensors import SOURCES, Source
from .synthetic_storm import KM_PER_DEG, Storm, make_storm, rain_ice, true_tb

GENERATOR_VERSION = "tc-primed-synth-1"
SEASONS = (1999, 2000, 2004, 2014, 2015, 2016)
SEASON_WEIGHTS = (0.08, 0.08, 0.14, 0.26, 0.22, 0.22)
BASIN_WEIGHTS = {"AL": 0.25, "EP": 0.15, "WP": 0.3, "IO": 0.12, "SH": 0.18}
DEFAULT_SIZE = {"n_storms": 60, "half_box_km": 150.0, "grid_km": 4.0}
ORBIT_S = 101 * 60.0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _storms(seed: int, n_storms: int) -> list[Storm]:
    """Season, basin and ATCF number of every storm (numbered per season and basin), then its track."""
    rng = np.random.default_rng([seed, 0])
    seasons = rng.choice(SEASONS, n_storms, p=SEASON_WEIGHTS)
    basins = rng.choice(list(BASIN_WEIGHTS), n_storms, p=list(BASIN_WEIGHTS.values()))
    counts: dict[tuple[int, str], int] = {}
    storms = []
    for k, (season, basin) in enumerate(zip(seasons.tolist(), basins.tolist(), strict=True)):
        counts[(season, basin)] = counts.get((season, basin), 0) + 1
        storms.append(make_storm(np.random.default_rng([seed, 1, k]), season, basin, counts[(season, basin)]))
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


def _grid(src: Source, u: float, heading: float, half_box: float, coarse: tuple[int, int], rng_phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """East/north km (storm-relative) of a swath grid's pixels, and each scan's along-track km."""
    da, dc = src.synth_spacing89[0] * coarse[0], src.synth_spacing89[1] * coarse[1]
    half_w = src.synth_swath_km / 2
    along = np.arange(-half_box + rng_phase * da, half_box, da)
    cross = -half_w + (np.arange(int(src.synth_swath_km // dc) + 1) + 0.5 * (coarse[1] - 1)) * dc
    cross = cross[np.abs(cross - u) <= half_box]
    a = along[:, None] + 25.0 * (cross[None, :] / half_w) ** 2  # conical-scan arcs bow forward
    c = np.broadcast_to(cross[None, :] - u, a.shape)
    th = np.radians(heading)
    east, north = a * np.sin(th) + c * np.cos(th), a * np.cos(th) - c * np.sin(th)
    return east, north, along


@lru_cache(maxsize=8)
def _field_grid(half_box: float, grid_km: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The storm-relative grid of the true fields (the same for every overpass of a size): its
    half-extent (km), axis, east km and north degrees per pixel, and the water-vapour bump around
    the centre. Computed once (read-only), as each overpass computed it before."""
    ext = half_box * 1.5 + 60
    axis = np.arange(-ext, ext + grid_km / 2, grid_km)
    fe, fn = np.meshgrid(axis, axis)  # rows = north, columns = east
    out = (axis, fe, fn / KM_PER_DEG, 0.3 * np.exp(-np.hypot(fe, fn) / 250))
    for arr in out:
        arr.flags.writeable = False
    return (ext, *out)


def _observe(storm: Storm, src: Source, t: float, u: float, heading: float, rng: np.random.Generator,
             calib: np.ndarray, half_box: float, grid_km: float) -> dict[str, dict[str, np.ndarray]]:
    """Swath groups -> variables for one overpass: the sensor's view of the storm at time ``t``."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    clat, clon, _ = storm.at(t)
    ext, axis, fe, fn_deg, wv_core = _field_grid(half_box, grid_km)
    flat = np.clip(clat + fn_deg, -89.9, 89.9)
    flon = (clon + fe / (KM_PER_DEG * np.cos(np.radians(flat))) + 180) % 360 - 180
    land = is_land(flat, flon).astype(np.float64)
    rain, ice = rain_ice(storm, t, axis)
    wv = storm.params["wv"] + wv_core
    tb = true_tb(rain, ice, land, wv, src.frequencies, src.synth_incidence, storm.params["land_temp"])
    groups: dict[str, dict[str, np.ndarray]] = {}
    phase = rng.uniform(0, 1)
    for chans, swath, coarse, ifov, nedt in (  # 89 GHz first: its grid gives a shared group its coordinates
        ((2, 3), src.swath89, (1, 1), src.ifov89, src.synth_nedt[1]),
        ((0, 1), src.swath37, src.synth_factor37, src.ifov37, src.synth_nedt[0]),
    ):
        east, north, along = _grid(src, u, heading, half_box, coarse, phase)
        coords = np.stack([(north + ext) / grid_km, (east + ext) / grid_km])
        sigma = np.sqrt(ifov[0] * ifov[1]) / 2.355 / grid_km
        g = groups.setdefault(swath, {})
        for c in chans:
            blurred = gaussian_filter(tb[c], sigma, mode="nearest")
            obs = map_coordinates(blurred, coords, order=1, mode="nearest")
            obs = 250 + calib[c, 1] * (obs - 250) + calib[c, 0] + rng.normal(0, nedt, obs.shape)
            g[src.variables[c]] = obs.astype(np.float32)
        lat = np.clip(clat + north / KM_PER_DEG, -89.9, 89.9)
        g.setdefault("latitude", lat.astype(np.float32))
        g.setdefault("longitude", ((clon + east / (KM_PER_DEG * np.cos(np.radians(lat)))) % 360).astype(np.float32))
        g.setdefault("ScanTime", t + along / 7.0)
        if rng.random() < 0.05 and east.shape[0] > 6:  # a few missing scans
            s0 = int(rng.integers(0, east.shape[0] - 4))
            for c in chans:
                g[src.variables[c]][s0: s0 + int(rng.integers(2, 5))] = FILL_VALUE
    return groups


def _write_overpass(path: Path, storm: Storm, src: Source, t: float, groups: dict, orbit: int) -> None:
    import netCDF4

    clat, clon, v = storm.at(t)
    with netCDF4.Dataset(path, "w", format="NETCDF4", diskless=True, persist=True) as ds:  # one write at close
        ds.setncatts({"title": "TC PRIMED overpass file (SYNTHETIC: generated by the benchmark suite)",
                      "Conventions": "CF-1.11, ACDD-1.3", "product_version": "v01r01",
                      "automated_tropical_cyclone_forecasting_system_storm_identifier": storm.atcf_id.lower(),
                      "data_groups": "overpass_metadata, overpass_storm_metadata, passive_microwave",
                      "source": f"synthetic {src.sensor} {src.platform} (not NASA PPS 1C XCAL)",
                      "generator": GENERATOR_VERSION})
        meta = ds.createGroup("overpass_metadata")
        meta.createDimension("time", 1)
        for name, dtype, value, attrs in (
            ("time", "f8", t, {"units": "seconds since 1970-01-01 00:00:00", "calendar": "standard"}),
            ("season", "i2", storm.season, {}), ("cyclone_number", "i1", storm.number, {}),
        ):
            var = meta.createVariable(name, dtype, ("time",))
            var.setncatts(attrs)
            var[:] = value
        for name, value in (("basin", storm.basin), ("instrument_name", src.sensor), ("platform_name", src.platform)):
            var = meta.createVariable(name, str, ("time",))
            var[0] = value
        sm = ds.createGroup("overpass_storm_metadata")
        sm.createDimension("time", 1)
        for name, value, units in (("time", t, "seconds since 1970-01-01 00:00:00"), ("storm_latitude", clat, "degrees_north"),
                                   ("storm_longitude", clon % 360, "degrees_east"), ("intensity", round(v), "kt"),
                                   ("central_min_pressure", round(1010 - 0.9 * v), "hPa")):
            var = sm.createVariable(name, "f8" if name == "time" else "f4", ("time",))
            var.units = units
            var[:] = value
        pmw = ds.createGroup("passive_microwave")
        for swath, variables in sorted(groups.items()):
            g = pmw.createGroup(swath)
            h, w = variables["latitude"].shape
            g.createDimension("scan", h)
            g.createDimension("pixel", w)
            for name, arr in variables.items():
                if name == "ScanTime":
                    var = g.createVariable(name, "f8", ("scan",))
                    var.units = "seconds since 1970-01-01 00:00:00"
                elif name.startswith("TB_"):
                    var = g.createVariable(name, "f4", ("scan", "pixel"), fill_value=np.float32(FILL_VALUE))
                    var.units = "K"
                else:
                    var = g.createVariable(name, "f4", ("scan", "pixel"))
                    var.units = {"latitude": "degrees_north", "longitude": "degrees_east"}[name]
                var[:] = arr


def _write_env(path: Path, storm: Storm) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts({"title": "TC PRIMED environmental file (SYNTHETIC: storm track only)", "product_version": "v01r01"})
        g = ds.createGroup("storm_metadata")
        idx = np.arange(0, storm.hours, 6)
        g.createDimension("time", len(idx))
        for name, values in (("time", storm.t_start + idx * 3600.0), ("storm_latitude", storm.lat[idx]),
                             ("storm_longitude", storm.lon[idx] % 360), ("intensity", np.round(storm.vmax[idx]))):
            g.createVariable(name, "f8", ("time",))[:] = values


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
            groups = _observe(storm, src, t, u, heading, rng, calib[name], half_box, grid_km)
            start = t - half_box / 7.0
            orbit = int((t - 9.0e8) // ORBIT_S) % 1_000_000
            rel = rel_dir / f"TCPRIMED_v01r01-final_{storm.atcf_id}_{src.sensor}_{src.platform}_{orbit:06d}_{_stamp(start)}.nc"
            _write_overpass(out / rel, storm, src, t, groups, orbit)
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
