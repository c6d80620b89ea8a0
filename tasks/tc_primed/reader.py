"""Read one raw TC-PRIMED v01r01 overpass file (netCDF4 with groups) as distributed on NODD.

File names: ``TCPRIMED_v01r01-final_<ATCFID>_<SENSOR>_<PLATFORM>_<ORBIT>_<YYYYMMDDhhmmss>.nc``
(environmental files ``..._<ATCFID>_era5_s<start>_e<end>.nc`` are recognised and skipped).
Groups read: ``overpass_metadata`` (time, CF units, seconds since 1970 without them; season, basin, cyclone_number — 1-element
arrays, the number possibly a history vector whose last element counts), ``overpass_storm_metadata``
(storm centre, 0–360 longitudes, intensity in kt) and ``passive_microwave/S<k>`` (``scan × pixel``
latitude, longitude and ``TB_<freq><pol>`` in K with ``_FillValue`` −9999.9).

Every problem raises :class:`SkipFile` with a short reason code, so a batch can count and report
why each file was left out without ever stopping. The checks (units, time, coordinates) are listed
with their policies in ``docs/data_checks.md``.
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
    "bad_metadata": "metadata value missing, not finite or out of range (storm position)",
    "bad_units": "brightness temperatures in units other than Kelvin or Celsius, or implausible for their units",
    "bad_time": "time units unknown, time implausible (before 1987 or in the future), or the file name's time disagrees",
}
NOT_ERRORS = ("environmental", "other_source")
# Version of what the reader checks and converts: prepare re-reads a file whose journal record was
# written under another version (an older store may hold files that the current checks refuse).
CHECKS_VERSION = 2

# Brightness-temperature units. Kelvin spellings are kept as they are; Celsius spellings are
# converted (+273.15 K) and the conversion is reported by prepare (report.json "converted");
# anything else is refused (``bad_units``). A variable without a ``units`` attribute is taken as
# Kelvin, as the v01r01 format defines (real files carry units = "K"); the plausibility check
# below still catches Celsius (or other) values written without units.
KELVIN_UNITS = frozenset({"k", "kelvin", "kelvins", "degk", "degreek", "degreesk", "degreekelvin", "degreeskelvin"})
CELSIUS_UNITS = frozenset({"c", "degc", "°c", "ºc", "celsius", "degcelsius", "degreec", "degreesc", "degreecelsius", "degreescelsius"})
CELSIUS_OFFSET_K = 273.15
# The median valid brightness temperature of a 37/89 GHz overpass lies well inside 50-350 K (the
# coldest radio-quiet ocean scenes are ~120 K at 37H; deep-convection scattering at 89 GHz leaves
# the scene median far above 50 K): outside, the values are not Kelvin TBs whatever the attribute says.
TB_MEDIAN_RANGE_K = (50.0, 350.0)

# Time. overpass_metadata/time is decoded from its CF units ("<unit> since <epoch>", unit one of
# seconds, minutes, hours, days); without a units attribute it is seconds since 1970-01-01, the
# v01r01 convention. A decoded time before 1987 (TC-PRIMED starts with SSM/I F08, launched in June
# 1987) or more than a day in the future is refused, as is a time more than NAME_TIME_TOLERANCE_S
# away from the file name's stamp. TC-PRIMED names carry the overpass time
# (``..._GMI_GPM_025677_20180905051440.nc``), as the embedded generator does (stamp =
# overpass_metadata/time to the second). A stamp rounded elsewhere or taken at the start of the
# orbit granule would differ by at most one orbit (~101 min); 3 h covers that with margin, while
# any date mistake (a wrong day or month, hours read as seconds) is days or years off.
MIN_TIME = dt.datetime(1987, 1, 1, tzinfo=dt.timezone.utc)
MAX_FUTURE_S = 86400.0
NAME_TIME_TOLERANCE_S = 3 * 3600.0
_TIME_FACTORS = {**dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
                 **dict.fromkeys(("min", "mins", "minute", "minutes"), 60.0),
                 **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
                 **dict.fromkeys(("d", "day", "days"), 86400.0)}
_TIME_UNITS_RE = re.compile(r"^\s*(?P<unit>[A-Za-z]+)\s+since\s+(?P<epoch>.+?)\s*$")
_EPOCH_RE = re.compile(r"^(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})"
                       r"(?:[T ](?P<h>\d{1,2}):(?P<mi>\d{1,2})(?::(?P<s>\d{1,2}(?:\.\d*)?))?)?"
                       r"\s*(?:Z|UTC|GMT|(?P<sign>[+-])(?P<oh>\d{1,2})(?::?(?P<om>\d{2}))?)?$", re.IGNORECASE)
GREGORIAN = ("standard", "gregorian", "proleptic_gregorian")


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
    notes: list[str] = field(default_factory=list)  # conversions made while reading (prepare reports them)


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


def _attr(var, name: str) -> str | None:
    """A variable's text attribute (None when absent)."""
    if name not in var.ncattrs():
        return None
    return _text(var.getncattr(name))


def _iso(t: float) -> str:
    try:
        return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{t!r} s since 1970"


def epoch_seconds(epoch: str) -> float | None:
    """Seconds from 1970-01-01 UTC to a CF epoch ("1970-01-01", "1970-01-01 00:00:00", "...T...Z",
    "... +00:00"); None when it does not parse."""
    m = _EPOCH_RE.match(epoch.strip())
    if not m:
        return None
    try:
        when = dt.datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0), int(m["mi"] or 0), tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    seconds = (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() + float(m["s"] or 0)
    if m["sign"]:  # local time = UTC + offset
        seconds -= (1 if m["sign"] == "+" else -1) * (int(m["oh"]) * 3600 + int(m["om"] or 0) * 60)
    return seconds


def decode_time(value: float, units: str | None, calendar: str | None, where: str) -> float:
    """A CF time value as seconds since 1970-01-01 UTC (``where`` names the variable in errors).
    Seconds since 1970 (or no units) come back unchanged, bit for bit."""
    if units is None:
        return value
    m = _TIME_UNITS_RE.match(units)
    factor = _TIME_FACTORS.get(m["unit"].lower()) if m else None
    offset = epoch_seconds(m["epoch"]) if m else None
    if factor is None or offset is None:
        raise SkipFile("bad_time", f"{where} has units {units!r}; expected '<seconds|minutes|hours|days> since <YYYY-MM-DD[ hh:mm:ss]>'")
    if calendar is not None and calendar.lower() not in GREGORIAN:
        raise SkipFile("bad_time", f"{where} has calendar {calendar!r}; only the standard (Gregorian) calendar is read")
    return value * factor + offset


def _overpass_time(meta, path: Path, stamp: dt.datetime) -> float:
    """overpass_metadata/time decoded, plausible, and within tolerance of the file name's stamp."""
    where = f"{path.name}: overpass_metadata/time"
    raw = _scalar(meta, "time", path)
    var = meta.variables["time"]
    units = _attr(var, "units")
    t = decode_time(raw, units, _attr(var, "calendar"), where)
    read_as = repr(units) if units is not None else "no units: seconds since 1970-01-01"
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    if not MIN_TIME.timestamp() <= t <= now + MAX_FUTURE_S:
        raise SkipFile("bad_time", f"{where} = {raw!r} ({read_as}) is {_iso(t)}, outside {MIN_TIME:%Y-%m-%d} .. today: wrong time units?")
    gap = abs(t - stamp.timestamp())
    if gap > NAME_TIME_TOLERANCE_S:
        raise SkipFile("bad_time", f"{where} is {_iso(t)} but the file name says {stamp:%Y-%m-%dT%H:%M:%SZ} "
                                   f"({gap / 3600:.1f} h apart, tolerance {NAME_TIME_TOLERANCE_S / 3600:g} h)")
    return t


def _storm_position(storm, path: Path) -> tuple[float, float]:
    """Storm centre (lat, lon in [-180, 180)); out-of-range values (fills) are refused like swath coordinates."""
    lat = _scalar(storm, "storm_latitude", path)
    lon = _scalar(storm, "storm_longitude", path)
    if abs(lat) > 90:
        raise SkipFile("bad_metadata", f"{path.name}: overpass_storm_metadata/storm_latitude is {lat!r}, outside [-90, 90]")
    if not -180 <= lon <= 360:
        raise SkipFile("bad_metadata", f"{path.name}: overpass_storm_metadata/storm_longitude is {lon!r}, outside [-180, 360]")
    return lat, float(wrap_lon(lon))


def _tb_units(var, path: Path, name: str) -> float:
    """0 for Kelvin (or no units attribute), CELSIUS_OFFSET_K for Celsius; SkipFile otherwise."""
    units = _attr(var, "units")
    if units is None:
        return 0.0
    key = re.sub(r"[\s_\-]+", "", units.lower())
    if key in KELVIN_UNITS:
        return 0.0
    if key in CELSIUS_UNITS:
        return CELSIUS_OFFSET_K
    raise SkipFile("bad_units", f"{path.name}: {name} has units {units!r}; brightness temperatures must be in K (or degrees Celsius, converted)")


def _group(ds, path: Path, *names: str):
    g = ds
    for n in names:
        if n not in g.groups:
            raise SkipFile("missing_group", f"{path.name}: group /{'/'.join(names)} is missing")
        g = g.groups[n]
    return g


def _read_swath(ds, path: Path, group: str, variables: tuple[str, str], notes: list[str] | None = None) -> Swath:
    g = _group(ds, path, "passive_microwave", group)
    for v in ("latitude", "longitude", *variables):
        if v not in g.variables:
            raise SkipFile("missing_variable", f"{path.name}: passive_microwave/{group}/{v} is missing")
    g.set_auto_maskandscale(True)
    lat = np.ma.filled(np.ma.asarray(g["latitude"][...], dtype=np.float64), np.nan)
    lon = np.ma.filled(np.ma.asarray(g["longitude"][...], dtype=np.float64), np.nan)
    tbs = []
    for v in variables:
        name = f"passive_microwave/{group}/{v}"
        offset = _tb_units(g[v], path, name)
        tb = np.ma.filled(np.ma.asarray(g[v][...], dtype=np.float32), np.nan)
        if tb.shape != lat.shape or lon.shape != lat.shape or lat.ndim != 2:
            raise SkipFile("bad_shape", f"{path.name}: passive_microwave/{group}: {v} {tb.shape}, latitude {lat.shape}, longitude {lon.shape}")
        if offset:  # Celsius: fill first (it is written in the file's units), then to Kelvin
            tb[np.isclose(tb, FILL_VALUE)] = np.nan
            tb += np.float32(offset)
            tb[(tb <= 0) | (tb > 500)] = np.nan
            if notes is not None:
                notes.append(f"{path.name}: {name} in {_attr(g[v], 'units')!r} converted to K (+{offset})")
        else:
            invalid = (tb <= 0) | (tb > 500) | np.isclose(tb, FILL_VALUE)  # fill written without the attribute, or garbage
            if invalid.all() and ((tb > -CELSIUS_OFFSET_K) & (tb < 0)).any():
                raise SkipFile("bad_units", f"{path.name}: {name} has no value above 0 K but values in (-273.15, 0): "
                                            f"degrees Celsius labelled {_attr(g[v], 'units') or 'without units'}?")
            tb[invalid] = np.nan
        if not np.isfinite(tb).any():
            raise SkipFile("all_nan", f"{path.name}: {name} has no valid pixel")
        median = float(np.nanmedian(tb))
        if not TB_MEDIAN_RANGE_K[0] <= median <= TB_MEDIAN_RANGE_K[1]:
            units = _attr(g[v], "units")
            raise SkipFile("bad_units", f"{path.name}: {name} has median {median:.1f} "
                                        f"{'K' if units is None else repr(units) + ' (in K)'}"
                                        f"{' and no units attribute' if units is None else ''}, outside the "
                                        f"{TB_MEDIAN_RANGE_K[0]:g}-{TB_MEDIAN_RANGE_K[1]:g} K of microwave brightness temperatures: wrong units?")
        tbs.append(tb)
    # coordinates: fills and out-of-range values are masked (the pixel is dropped), latitude and longitude alike
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360))
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
        storm_lat, storm_lon = _storm_position(storm, path)
        over = Overpass(
            path=path, source=source, atcf_id=name.atcf_id,
            time=_overpass_time(meta, path, name.stamp),
            season=int(season) if np.isfinite(season) else int(name.atcf_id[4:]),
            basin=(basin or name.atcf_id[:2]).upper(),
            cyclone_number=int(number) if np.isfinite(number) else int(name.atcf_id[2:4]),
            storm_lat=storm_lat,
            storm_lon=storm_lon,
            intensity=_scalar(storm, "intensity", path, required=False),
        )
        v = source.variables
        over.swaths["37"] = _read_swath(ds, path, source.swath37, (v[0], v[1]), over.notes)
        over.swaths["89"] = _read_swath(ds, path, source.swath89, (v[2], v[3]), over.notes)
        return over
    except SkipFile:
        raise
    except (OSError, RuntimeError, KeyError, IndexError, ValueError) as exc:  # HDF5 errors inside a damaged file
        raise SkipFile("unreadable", f"{path.name}: {type(exc).__name__}: {exc}") from None
    finally:
        ds.close()
