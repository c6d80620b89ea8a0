"""Synthetic tropical cyclones for the embedded TC-PRIMED: tracks, evolving structure, true TBs.

A storm moves along a track that starts in a real genesis region and may recurve or make
landfall (land from ``global-land-mask``; it weakens over land and over cool water). Its rain and
ice fields, in storm-relative km, have an eye (only once intense), an eyewall, spiral rain bands
that rotate cyclonically within hours, a shear asymmetry, short-lived convective bursts and a
rotating multiplicative texture: two looks 1 h apart are alike, 6 h apart differ markedly.

Brightness temperatures follow the first-order physics of passive microwave over storms: over the
radiometrically cold ocean, rain emission warms 37 GHz (H more than V, saturating) while ice
scattering cools 89 GHz strongly and 37 GHz a little; land is warm with a small polarization
difference, so only scattering shows there. Frequency and incidence angle shift the response per
sensor (85.5 / 89.0 / 91.665 GHz; 36.5 / 36.64 / 37.0 GHz).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

KM_PER_DEG = 111.2
GENESIS = {  # region: ATCF basin, genesis lat range, lon range, initial motion (east, north) m/s
    "AL": ("AL", (12.0, 22.0), (-78.0, -48.0), (-5.0, 1.5)),
    "AL-east": ("AL", (28.0, 36.0), (-16.0, -6.0), (5.5, 1.5)),  # late-season storms heading for Iberia: cross 0°
    "EP": ("EP", (11.0, 17.0), (-108.0, -96.0), (-4.0, 1.2)),
    "CP": ("CP", (10.0, 18.0), (-176.0, -164.0), (-5.5, 0.8)),  # central Pacific, moving west: cross 180°
    "WP": ("WP", (9.0, 19.0), (122.0, 150.0), (-5.0, 1.8)),
    "IO": ("IO", (10.0, 16.0), (84.0, 91.0), (-1.0, 2.5)),
    "SH": ("SH", (-18.0, -11.0), (108.0, 124.0), (-3.0, -1.5)),
    "SH-pacific": ("SH", (-19.0, -12.0), (168.0, 177.0), (4.0, -2.0)),  # South Pacific, moving east-south-east: cross 180°
}
BASINS = {region: v[1:] for region, v in GENESIS.items()}


@dataclass
class Storm:
    """One synthetic storm: hourly track and intensity, plus the constants of its structure."""

    atcf_id: str
    season: int
    basin: str
    number: int
    t_start: float  # s since 1970
    lat: np.ndarray  # hourly
    lon: np.ndarray
    vmax: np.ndarray  # kt
    params: dict

    @property
    def hours(self) -> int:
        return len(self.lat)

    @cached_property
    def _track(self) -> tuple[np.ndarray, np.ndarray]:
        """Hour indices and the unwrapped track longitudes (radians), computed once per storm."""
        return np.arange(self.hours), np.unwrap(np.radians(self.lon))

    def at(self, t: float) -> tuple[float, float, float]:
        """Centre latitude, longitude ([-180, 180)) and intensity at time ``t`` (s), interpolated."""
        h = np.clip((t - self.t_start) / 3600.0, 0, self.hours - 1)
        idx, unwrapped = self._track
        lon = np.interp(h, idx, unwrapped)
        return float(np.interp(h, idx, self.lat)), float((np.degrees(lon) + 180) % 360 - 180), float(np.interp(h, idx, self.vmax))


def make_storm(rng: np.random.Generator, season: int, region: str, number: int) -> Storm:
    """A track with genesis in ``region`` (a key of GENESIS), intensification, possible
    recurvature and landfall decay; 30-90 h long."""
    from .land import is_land

    basin, (la0, la1), (lo0, lo1), (u0, v0) = GENESIS[region]
    south = basin == "SH"
    month_day = (1, 5) if south else (7, 1)
    start = dt.datetime(season, *month_day, tzinfo=dt.timezone.utc) + dt.timedelta(hours=int(rng.integers(0, 100 * 24)))
    hours = int(rng.integers(30, 91))
    lat, lon = [rng.uniform(la0, la1)], [rng.uniform(lo0, lo1)]
    u_rec, v_rec, t_rec = rng.uniform(2.0, 6.0), rng.uniform(2.0, 5.0) * (-1 if south else 1), rng.uniform(36, 110)
    u0, v0 = u0 + rng.normal(0, 1.0), v0 + rng.normal(0, 0.7)
    v_pot, tau = rng.uniform(60, 150), rng.uniform(20, 45)
    vmax = [25.0]
    for h in range(1, hours):
        w = 1 / (1 + np.exp(-(h - t_rec) / 12))
        u, v = (1 - w) * u0 + w * u_rec + rng.normal(0, 0.5), (1 - w) * v0 + w * v_rec + rng.normal(0, 0.4)
        la = lat[-1] + v * 3.6 / KM_PER_DEG
        lo = lon[-1] + u * 3.6 / (KM_PER_DEG * np.cos(np.radians(la)))
        lat.append(la)
        lon.append((lo + 180) % 360 - 180)
        on_land = bool(is_land(np.array([la]), np.array([lon[-1]]))[0])
        if on_land:
            vmax.append(vmax[-1] - (vmax[-1] - 15) / 12)
        else:
            pot = v_pot * np.clip((32 - abs(la)) / 8, 0.25, 1.0)
            vmax.append(vmax[-1] + (pot - vmax[-1]) / tau)
    params = {
        "sign": -1.0 if south else 1.0,  # cyclonic rotation: counter-clockwise in the north
        "arms": rng.uniform(0.4, 1.0, int(rng.integers(1, 4))),
        "arm_phase": rng.uniform(0, 2 * np.pi, 3),
        "pitch": np.radians(rng.uniform(12, 25)),
        "band_sharp": rng.uniform(2.5, 6.0),
        "band_period_h": rng.uniform(9, 18),
        "shear_dir": rng.uniform(0, 2 * np.pi), "shear_amp": rng.uniform(0.2, 0.6), "shear_drift": rng.normal(0, 0.03),
        "modes_k": rng.uniform(0.02, 0.09, (16, 1)) * np.stack([np.cos(a := rng.uniform(0, 2 * np.pi, 16)), np.sin(a)], 1),
        "modes_phase": rng.uniform(0, 2 * np.pi, 16), "modes_speed": rng.normal(0, 0.5, 16),
        "bursts": _bursts(rng, hours),
        "land_temp": rng.normal(0, 4.0),
        "wv": rng.uniform(0.3, 0.8),
    }
    return Storm(f"{basin}{number:02d}{season}", season, basin, number, start.timestamp(),
                 np.array(lat), np.array(lon), np.array(vmax), params)


def _bursts(rng: np.random.Generator, hours: int) -> np.ndarray:
    """Convective bursts: birth (h), life (h), radius (km), angle, size (km), amplitude."""
    n = rng.poisson(hours / 5)
    return np.stack([rng.uniform(-6, hours, n), rng.uniform(3, 9, n), rng.uniform(25, 140, n),
                     rng.uniform(0, 2 * np.pi, n), rng.uniform(8, 22, n), rng.uniform(0.6, 1.6, n)], 1)


@lru_cache(maxsize=8)
def _polar(axis_bytes: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Radius, angle and the two radial envelopes of the grid ``axis × axis`` (float32): the parts
    of :func:`rain_ice` that depend on the grid only, computed once per grid (read-only)."""
    axis = np.frombuffer(axis_bytes, dtype=np.float32)
    east, north = axis[None, :], axis[:, None]
    r = np.hypot(east, north) + np.float32(1e-3)
    theta = np.arctan2(north, east)
    out = (r, theta, np.exp(-r / 140), np.exp(-((r / 320) ** 2)))
    for arr in out:
        arr.flags.writeable = False
    return out


def rain_ice(storm: Storm, t: float, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rain and ice fields (arbitrary units, ≥ 0) on the storm-relative grid ``axis × axis`` (km;
    rows = north, columns = east) at time ``t``."""
    p = storm.params
    h = (t - storm.t_start) / 3600.0
    v = storm.at(t)[2]
    axis = axis.astype(np.float32)
    r, theta, band_envelope, rain_envelope = _polar(axis.tobytes())
    r_eye = float(np.clip(10 + 40 * np.exp(-(v - 30) / 40), 10, 50))
    r_ew, w_ew = r_eye + 8, 6 + 8 * np.exp(-v / 80)
    strength = float(np.clip((v - 30) / 70, 0.15, 1.2))
    shear = 1 + p["shear_amp"] * np.cos(theta - (p["shear_dir"] + p["shear_drift"] * h))
    ring = strength * np.exp(-(((r - r_ew) / w_ew) ** 2))
    omega = p["sign"] * 2 * np.pi / p["band_period_h"]
    phi = theta - p["sign"] * np.log(np.maximum(r, r_ew) / r_ew) / np.tan(p["pitch"])
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    bands = np.zeros_like(r)
    for amp, phase in zip(p["arms"], p["arm_phase"], strict=False):
        c = phase + omega * h  # cos(phi - c) without another transcendental per pixel
        bands += amp * np.exp((cos_phi * np.float32(np.cos(c)) + sin_phi * np.float32(np.sin(c)) - 1) * p["band_sharp"])
    bands *= band_envelope / (1 + np.exp(-(r - r_ew - 10) / 6)) * (0.4 + 0.6 * strength)
    bursts = np.zeros_like(r)
    for born, life, rb, ang, size, amp in p["bursts"]:
        age = h - born
        if 0 < age < life:
            ang_t = ang + p["sign"] * (v * 0.514 * 3.6 / rb) * 0.5 * age  # orbits at half the wind speed
            gx = np.exp(-((axis - rb * np.cos(ang_t)) ** 2) / (2 * size**2))
            gy = np.exp(-((axis - rb * np.sin(ang_t)) ** 2) / (2 * size**2))
            bursts += np.float32(amp * np.sin(np.pi * age / life)) * np.outer(gy, gx)
    # rotating texture: rotate the wave vectors instead of the grid, then cos(a + b) is two matrix products
    rot = omega * h
    k = p["modes_k"] @ np.array([[np.cos(rot), np.sin(rot)], [-np.sin(rot), np.cos(rot)]])
    a = np.multiply.outer(axis, k[:, 0].astype(np.float32))  # east part [E, M]
    b = np.multiply.outer(axis, k[:, 1].astype(np.float32)) + (p["modes_phase"] + p["modes_speed"] * h).astype(np.float32)
    tex = (np.cos(b) @ np.cos(a).T - np.sin(b) @ np.sin(a).T) / np.float32(np.sqrt(8))
    texture = np.clip(1 + 0.35 * tex, 0.2, None)
    eye = 1 - np.exp(-((r / r_eye) ** 4)) if v > 65 else 1.0  # a clear eye only once intense
    core = (ring + 0.8 * bands + bursts) * shear * texture * eye
    if v <= 65:  # weaker storms have a central dense overcast instead
        core = core + 0.5 * strength * np.exp(-((r / r_ew) ** 2)) * texture
    rain = core * rain_envelope
    ice = (1.1 * ring + 0.6 * bands + 1.3 * bursts) * shear * texture * eye
    return np.clip(rain, 0, None), np.clip(ice, 0, None) ** 1.2


def true_tb(rain: np.ndarray, ice: np.ndarray, land: np.ndarray, wv: np.ndarray, freqs: tuple[float, ...],
            incidence: float, land_temp: float) -> np.ndarray:
    """[4, ...] brightness temperatures (K) for channels 37H, 37V, 89H, 89V at the given frequencies."""
    out = []
    water = 1 - land
    emission: dict[float, np.ndarray] = {}  # H and V of a band share the absorption (same frequency) and the scattering
    scattering: dict[float, np.ndarray] = {}
    for c, f in enumerate(freqs):
        high = c >= 2
        pol_h = c % 2 == 0
        f_ref = 89.0 if high else 37.0
        if high:
            ocean = (205 + 35 * wv) if pol_h else (250 + 15 * wv)
            t_sat, k, scat, i0 = (272.0 if pol_h else 275.0), 3.0 * (f / 89) ** 2, 170.0, 0.8
        else:
            ocean = (135 + 25 * wv) if pol_h else (200 + 15 * wv)
            t_sat, k, scat, i0 = (268.0 if pol_h else 272.0), 1.8 * (f / 37) ** 2, 50.0, 1.5
        ocean = ocean + (0.4 if high else 1.0) * (f - f_ref) + (-1.2 if pol_h else 0.8) * (incidence - 53)
        land_tb = (278.0 if pol_h else 283.0) + land_temp
        base = land * land_tb + water * ocean
        if k not in emission:
            emission[k] = 1 - np.exp(-k * rain)
        if i0 not in scattering:
            scattering[i0] = 1 - np.exp(-ice / i0)
        tb = base + (t_sat - base) * emission[k]
        tb = tb - scat * (f / f_ref) ** 2 * scattering[i0] * (0.95 if pol_h else 1.0)  # scattering saturates
        out.append(tb)
    return np.stack(out)


def extra_tb(rain: np.ndarray, ice: np.ndarray, land: np.ndarray, wv: np.ndarray, freq: float, pol_h: bool,
             incidence: float, land_temp: float, offset: float = 0.0) -> np.ndarray:
    """Brightness temperature (K) of a channel outside the four the benchmark uses (10-23 GHz
    window and water-vapour channels, 150-183 GHz sounding channels), first-order like
    :func:`true_tb`: rain emission warms the low frequencies over the cold ocean; ice scattering
    cools the high ones, and the 183.31 GHz channels see the upper-level water vapour (colder
    the closer to the line centre). Evaluated directly on swath pixels (already footprint-blurred
    fields)."""
    if freq < 30:
        ocean = (90 + 2.2 * freq + 25 * wv) if pol_h else (160 + 1.7 * freq + 15 * wv)
        if 21 <= freq <= 24:  # water-vapour line: the ocean looks warmer and less polarized
            ocean = ocean + 18
        ocean = ocean + (-1.2 if pol_h else 0.8) * (incidence - 53)
        base = land * ((276.0 if pol_h else 282.0) + land_temp) + (1 - land) * ocean
        emission = 1 - np.exp(-1.8 * (freq / 37) ** 2 * rain)
        tb = base + ((266.0 if pol_h else 270.0) - base) * emission
        return tb - 50 * (freq / 37) ** 2 * (1 - np.exp(-ice / 1.5))
    sounding = offset > 0  # 183.31 ± offset GHz
    base = 272.0 - (40 * np.exp(-offset / 2.5) if sounding else 0.0) + 4 * wv - 2 * land
    return base - 160 * (1 - np.exp(-ice / 0.7)) * (0.7 if sounding and offset < 5 else 1.0)
