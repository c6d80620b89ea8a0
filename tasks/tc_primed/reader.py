"""Read one raw TC-PRIMED v01r01 overpass file (netCDF4 with groups) as distributed on NODD.

File names: ``TCPRIMED_v01r01-final_<ATCFID>_<SENSOR>_<PLATFORM>_<ORBIT>_<YYYYMMDDhhmmss>.nc``
(environmental files ``..._<ATCFID>_era5_s<start>_e<end>.nc`` are recognised and skipped).
Groups read: ``overpass_metadata`` (time in s since 1970, season, basin, cyclone_number — 1-element
arrays, the number possibly a history vector whose last element counts), ``overpass_storm_metadata``
(storm centre, 0–360 longitudes, intensity in kt) and ``passive_microwave/S<k>`` (``scan × pixel``
latitude, longitude and ``TB_<freq><pol>`` in K with ``_FillValue`` −9999.9).

Every problem raises :class:`SkipFile` with a short reason code, so a batch can count and report
why each file was left out without ever stopping.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .sensors import Source, source_of

FILL_VALUE = -9999.9
FILE_RE = re.compile(
    r"^TCPRIMED_(?P<version>v\d{2}r\d{2})-(?P<stage>final|preliminary)_(?P<atcf>[A-Z]{2}\d{2}\d{4})_"
    r"(?P<sensor>[A-Z0-9]+)_(?P<platform>[A-Z0-9]+)_(?P<orbit>\d+)_(?P<stamp>\d{14})\.nc$"
)
ENV_RE = re.compile(r"^TCPRIMED_v\d{2}r\d{2}-\w+_[A-Z]{2}\d{6}_(era5|env)\w*\.nc$", re.IGNORECASE)

# reason codes, in the order a report lists them
REASONS = {
    "environmental": "environmental (ERA5) file, not an overpass",
    "other_source": "sensor/platform not among the paper's 11 sources",
    "bad_name": "file name does not parse as a v01r01 overpass",
    "unreadable": "not a readable netCDF4/HDF5 file (truncated or another format)",
    "missing_group": "a required group is missing",
    "missing_variable": "a required variable is missing",
    "bad_shape": "coordinate and brightness-temperature shapes disagree",
    "all_nan": "a brightness-temperature channel has no valid pixel",
    "bad_metadata": "metadata value missing or not finite",
}
NOT_ERRORS = ("environmental", "other_source")


class SkipFile(Exception):
    """A file left out of the prepared store, with a reason code from ``REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class FileName:
    atcf_id: str
    sensor: str
    platform: str
    orbit: str
    stamp: dt.datetime
    stage: str


def parse_name(name: str) -> FileName:
    """Parse an overpass file name; environmental and malformed names raise :class:`SkipFile`."""
    if ENV_RE.match(name):
        raise SkipFile("environmental", name)
    m = FILE_RE.match(name)
    if not m:
        raise SkipFile("bad_name", f"{name!r} is not TCPRIMED_v01r01-final_<ATCFID>_<SENSOR>_<PLATFORM>_<ORBIT>_<YYYYMMDDhhmmss>.nc")
    try:
        stamp = dt.datetime.strptime(m["stamp"], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise SkipFile("bad_name", f"{name!r}: {m['stamp']} is not a valid date") from None
    return FileName(m["atcf"], m["sensor"], m["platform"], m["orbit"], stamp, m["stage"])


@dataclass
class Swath:
    """One swath group: coordinates (lon in [-180, 180)) and the selected channels, NaN where missing."""

    lat: np.ndarray  # [scan, pixel] float64
    lon: np.ndarray
    tb: np.ndarray  # [2, scan, pixel] float32 (H, V)


@dataclass
class Overpass:
    path: Path
    source: Source
    atcf_id: str
    time: float  # s since 1970-01-01 UTC
    season: int
    basin: str
    cyclone_number: int
    storm_lat: float
    storm_lon: float  # [-180, 180)
    intensity: float  # kt (NaN when absent)
    swaths: dict[str, Swath] = field(default_factory=dict)  # "37" and "89"


def wrap_lon(lon: np.ndarray | float) -> np.ndarray | float:
    """Longitudes to [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def _text(value: object) -> str:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S":  # char array
            import netCDF4

            value = netCDF4.chartostring(value)
        value = value.ravel()[-1] if value.size else ""
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("utf-8", "ignore")
    return str(value).strip()


def _scalar(group, name: str, path: Path, *, required: bool = True) -> float:
    if name not in group.variables:
        if required:
            raise SkipFile("missing_variable", f"{path.name}: {group.path}/{name} is missing")
        return float("nan")
    arr = np.ma.filled(np.ma.asarray(group.variables[name][...], dtype=np.float64), np.nan).ravel()
    if not arr.size or not np.isfinite(arr[-1]):
        if required:
            raise SkipFile("bad_metadata", f"{path.name}: {group.path}/{name} has no finite value")
        return float("nan")
    return float(arr[-1])


def _group(ds, path: Path, *names: str):
    g = ds
    for n in names:
        if n not in g.groups:
            raise SkipFile("missing_group", f"{path.name}: group /{'/'.join(names)} is missing")
        g = g.groups[n]
    return g


def _read_swath(ds, path: Path, group: str, variables: tuple[str, str]) -> Swath:
    g = _group(ds, path, "passive_microwave", group)
    for v in ("latitude", "longitude", *variables):
        if v not in g.variables:
            raise SkipFile("missing_variable", f"{path.name}: passive_microwave/{group}/{v} is missing")
    g.set_auto_maskandscale(True)
    lat = np.ma.filled(np.ma.asarray(g["latitude"][...], dtype=np.float64), np.nan)
    lon = np.ma.filled(np.ma.asarray(g["longitude"][...], dtype=np.float64), np.nan)
    tbs = []
    for v in variables:
        tb = np.ma.filled(np.ma.asarray(g[v][...], dtype=np.float32), np.nan)
        if tb.shape != lat.shape or lon.shape != lat.shape or lat.ndim != 2:
            raise SkipFile("bad_shape", f"{path.name}: passive_microwave/{group}: {v} {tb.shape}, latitude {lat.shape}, longitude {lon.shape}")
        tb[(tb <= 0) | (tb > 500) | np.isclose(tb, FILL_VALUE)] = np.nan  # fill written without the attribute, or garbage
        if not np.isfinite(tb).any():
            raise SkipFile("all_nan", f"{path.name}: passive_microwave/{group}/{v} has no valid pixel")
        tbs.append(tb)
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90))
    lat[bad], lon[bad] = np.nan, np.nan
    return Swath(lat=lat, lon=np.asarray(wrap_lon(lon)), tb=np.stack(tbs))


def read_overpass(path: Path | str) -> Overpass:
    """Read the paper's four channels and the metadata of one overpass file (or raise SkipFile)."""
    import netCDF4

    path = Path(path)
    name = parse_name(path.name)
    source = source_of(name.sensor, name.platform)
    if source is None:
        raise SkipFile("other_source", f"{path.name}: {name.sensor}_{name.platform}")
    try:
        ds = netCDF4.Dataset(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise SkipFile("unreadable", f"{path.name}: {exc}") from None
    try:
        meta = _group(ds, path, "overpass_metadata")
        storm = _group(ds, path, "overpass_storm_metadata")
        season = _scalar(meta, "season", path, required=False)
        number = _scalar(meta, "cyclone_number", path, required=False)
        basin = _text(meta["basin"][...]) if "basin" in meta.variables else ""
        over = Overpass(
            path=path, source=source, atcf_id=name.atcf_id,
            time=_scalar(meta, "time", path),
            season=int(season) if np.isfinite(season) else int(name.atcf_id[4:]),
            basin=(basin or name.atcf_id[:2]).upper(),
            cyclone_number=int(number) if np.isfinite(number) else int(name.atcf_id[2:4]),
            storm_lat=_scalar(storm, "storm_latitude", path),
            storm_lon=float(wrap_lon(_scalar(storm, "storm_longitude", path))),
            intensity=_scalar(storm, "intensity", path, required=False),
        )
        v = source.variables
        over.swaths["37"] = _read_swath(ds, path, source.swath37, (v[0], v[1]))
        over.swaths["89"] = _read_swath(ds, path, source.swath89, (v[2], v[3]))
        return over
    except SkipFile:
        raise
    except (OSError, RuntimeError, KeyError, IndexError, ValueError) as exc:  # HDF5 errors inside a damaged file
        raise SkipFile("unreadable", f"{path.name}: {type(exc).__name__}: {exc}") from None
    finally:
        ds.close()
