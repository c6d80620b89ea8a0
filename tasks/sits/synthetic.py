"""A learnable, non-trivial synthetic SITS scene: parcels, phenology, clouds, coupled radar.

Both embedded datasets (PASTIS-R-like and South-Sudan-like) are written from this generator, each
in its own real on-disk layout. What makes it learnable yet not trivial:

* parcels are Voronoi cells; each gets a class drawn with an imbalanced distribution, and a
  background class with its own (flat, bare-soil-like) signal;
* each crop class has a phenology: a double-logistic vegetation fraction over the day of year
  (green-up, senescence, peak) — several classes share similar curves and differ only in timing
  or peak, so a single date does not separate them but the time series does;
* each parcel jitters its class's timing (±8 days) and peak (±12 %), and each pixel adds noise;
* optical (Sentinel-2-like, 10 bands, reflectance × 10 000 as int16) mixes soil and vegetation
  spectra by the vegetation fraction; clouds (smooth random blobs) replace dates' reflectance by
  bright, flat cloud spectra, so some optical dates are useless;
* radar (Sentinel-1-like, VV, VH, VV/VH in dB) is driven by the same vegetation state plus a
  class-specific structure term and soil moisture, with multiplicative gamma speckle (4 looks);
  radar and optical are acquired on different, irregular dates;
* parcels that touch the patch edge are partly labelled void (as in PASTIS).

Also here, shared by every embedded dataset's generator (PASTIS-R, South Sudan, TC-PRIMED):
progress on stderr while a first use generates one (:func:`generation_progress`,
:func:`progress_bar`, :func:`note`). Progress never touches a random stream, so the files are
the same bytes with or without it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- generation progress
# A task's ``resolve_data(..., show_progress=...)`` is where the run's ``--no-progress`` reaches the
# data side; the generators and ``prepare`` it calls (through ``ensure_synthetic``) take no such
# argument, so the choice travels in a context variable for the duration of that call.


@dataclass(frozen=True)
class _Setting:
    show: bool | None  # True, False, or None: bars only when stderr is a terminal


_SETTING: ContextVar[_Setting | None] = ContextVar("embedded_data_progress", default=None)


@contextlib.contextmanager
def generation_progress(show: bool | None) -> Iterator[None]:
    """Within the block, the generators' and ``prepare``'s bars follow ``show`` (``None``: only on
    a terminal) and each phase ends with a one-line summary on stderr."""
    token = _SETTING.set(_Setting(show))
    try:
        yield
    finally:
        _SETTING.reset(token)


def in_generation() -> bool:
    """Whether a :func:`generation_progress` block (a first-use generation) encloses the call."""
    return _SETTING.get() is not None


def progress_show(default: bool | None = None) -> bool | None:
    """The enclosing :func:`generation_progress` choice, else ``default``."""
    setting = _SETTING.get()
    return default if setting is None else setting.show


def progress_bar(total: int, desc: str, unit: str, show: bool | None = None, iterable: Any = None) -> Any:
    """A tqdm bar on stderr counting ``unit``s (over ``iterable`` when given). ``show``: True, False,
    or None for the enclosing :func:`generation_progress` choice (outside one: only when stderr is a
    terminal)."""
    from tqdm.auto import tqdm

    show = progress_show() if show is None else show
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None if show is None else not show, leave=False,
                dynamic_ncols=True, file=sys.stderr)


def note(message: str) -> None:
    """One line on stderr (a phase's start or end), shown even without bars."""
    print(message, file=sys.stderr, flush=True)


# Spectra for the 10 Sentinel-2 bands in PASTIS order B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12.
SOIL = np.array([0.09, 0.12, 0.15, 0.18, 0.21, 0.23, 0.25, 0.26, 0.32, 0.27])
VEGETATION = np.array([0.03, 0.07, 0.035, 0.11, 0.30, 0.40, 0.45, 0.47, 0.23, 0.12])
CLOUD = np.array([0.55, 0.54, 0.55, 0.56, 0.57, 0.57, 0.58, 0.58, 0.45, 0.35])


@dataclass(frozen=True)
class CropClass:
    """Phenology of a class: vegetation fraction = peak · green-up logistic · senescence logistic."""

    green_up: float  # day of year of half green-up
    senescence: float  # day of year of half senescence
    peak: float  # maximum vegetation fraction
    structure_db: float = 0.0  # extra radar backscatter from canopy structure (dB)
    flat: bool = False  # background: no phenology, bare/mixed surface


def crop_catalog(n_classes: int, rng: np.random.Generator, background: bool = True) -> list[CropClass]:
    """``n_classes`` classes with deliberately overlapping phenologies (pairs differ by timing or peak)."""
    classes: list[CropClass] = []
    if background:
        classes.append(CropClass(0, 0, 0.15, structure_db=-1.0, flat=True))
    while len(classes) < n_classes:
        g = rng.uniform(20, 200)
        s = g + rng.uniform(60, 150)
        peak = rng.uniform(0.55, 0.95)
        structure = rng.uniform(-1.5, 2.5)
        classes.append(CropClass(g, s, peak, structure))
        if len(classes) < n_classes:  # a "confusable sibling": same shape, shifted 15-30 days or a lower peak
            shift = rng.uniform(15, 30) * rng.choice([-1, 1])
            classes.append(CropClass(g + shift, s + shift, peak * rng.uniform(0.8, 1.0), structure + rng.uniform(-0.7, 0.7)))
    return classes


def vegetation_fraction(cls: CropClass, doy: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """[P, T] vegetation fraction for parcels with per-parcel timing shift and peak scale."""
    if cls.flat:
        return np.clip(cls.peak * scale[:, None] + 0.05 * np.sin(doy[None, :] / 58.0), 0, 1)
    up = 1 / (1 + np.exp(-(doy[None, :] - cls.green_up - shift[:, None]) / 9.0))
    down = 1 / (1 + np.exp((doy[None, :] - cls.senescence - shift[:, None]) / 12.0))
    return np.clip(0.05 + cls.peak * scale[:, None] * up * down, 0, 1)


def voronoi_parcels(size: int, n_parcels: int, rng: np.random.Generator) -> np.ndarray:
    """[H, W] parcel index map from random seeds (slightly anisotropic, like field shapes)."""
    seeds = rng.uniform(0, size, (n_parcels, 2))
    stretch = rng.uniform(0.6, 1.6, n_parcels)
    yy, xx = np.mgrid[0:size, 0:size]
    d = (yy[..., None] - seeds[:, 0]) ** 2 * stretch + (xx[..., None] - seeds[:, 1]) ** 2 / stretch
    return d.argmin(-1)


def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth random field in [0, 1] (sum of a few random low-frequency waves)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    field = np.zeros(shape)
    for _ in range(4):
        kx, ky = rng.normal(0, scale, 2)
        field += np.cos(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 2 * np.pi))
    return (field - field.min()) / (np.ptp(field) + 1e-9)


@dataclass
class Scene:
    label: np.ndarray  # [H, W] int, class index, or the void value
    parcels: np.ndarray  # [H, W] parcel ids
    optical: np.ndarray  # [T_o, 10, H, W] int16 reflectance × 10 000
    radar: np.ndarray  # [T_r, 3, H, W] float32 dB (VV, VH, VV/VH)
    cloud_cover: np.ndarray  # [T_o] fraction of clouded pixels per optical date
    extra_radar: list[np.ndarray] = field(default_factory=list)  # other orbits, on their own dates


def make_scene(
    rng: np.random.Generator,
    classes: list[CropClass],
    class_probs: np.ndarray,
    optical_doy: np.ndarray,
    radar_doy: np.ndarray,
    size: int,
    *,
    void_label: int | None,
    n_parcels: int | None = None,
    cloud_prob: float = 0.35,
    extra_radar_doy: tuple[np.ndarray, ...] = (),
    void_prob: float = 0.5,
) -> Scene:
    """One patch. Days are days of the crop year (any origin); the classes' phenology uses them."""
    n_parcels = n_parcels or max(4, int(size * size / rng.uniform(60, 140)))
    parcels = voronoi_parcels(size, n_parcels, rng)
    parcel_class = rng.choice(len(classes), size=n_parcels, p=class_probs)
    shift = rng.normal(0, 8, n_parcels)
    scale = rng.uniform(0.88, 1.12, n_parcels)
    moisture = rng.uniform(-1.5, 1.5, n_parcels)

    def parcel_curves(doy: np.ndarray) -> np.ndarray:
        curves = np.empty((n_parcels, len(doy)))
        for c in np.unique(parcel_class):
            sel = parcel_class == c
            curves[sel] = vegetation_fraction(classes[c], doy, shift[sel], scale[sel])
        return curves

    # optical: [T, H, W] vegetation fraction -> spectra, pixel noise, clouds
    veg_o = parcel_curves(optical_doy)[parcels].transpose(2, 0, 1)  # [T, H, W]
    veg_o = np.clip(veg_o + rng.normal(0, 0.04, veg_o.shape), 0, 1)
    refl = SOIL[None, :, None, None] * (1 - veg_o[:, None]) + VEGETATION[None, :, None, None] * veg_o[:, None]
    refl *= rng.normal(1, 0.03, (1, 10, size, size))  # per-pixel brightness texture
    cloud_cover = np.zeros(len(optical_doy))
    for t in range(len(optical_doy)):
        if rng.random() < cloud_prob:
            density = smooth_noise((size, size), rng, 2.5)
            mask = density > rng.uniform(0.2, 0.8)
            alpha = np.clip((density - 0.2) * 2, 0, 1) * mask
            refl[t] = refl[t] * (1 - alpha) + CLOUD[:, None, None] * alpha
            cloud_cover[t] = mask.mean()
    refl += rng.normal(0, 0.008, refl.shape)
    optical = np.clip(refl * 10_000, -10_000, 20_000).astype(np.int16)

    # radar: dB backscatter driven by the same vegetation state, structure and moisture, with speckle
    structure = np.array([c.structure_db for c in classes])[parcel_class][parcels]
    wet = moisture[parcels]

    def radar_series(doy: np.ndarray, orbit_offset_db: float) -> np.ndarray:
        veg_r = parcel_curves(doy)[parcels].transpose(2, 0, 1)
        vv_db = -14.0 + orbit_offset_db + 5.0 * veg_r + structure[None] + 0.8 * wet[None]
        vh_db = -21.5 + orbit_offset_db + 8.0 * veg_r + 0.6 * structure[None] + 0.5 * wet[None]
        looks = 4.0
        speckle = rng.gamma(looks, 1 / looks, (2, *vv_db.shape))
        vv = 10 * np.log10(10 ** (vv_db / 10) * speckle[0])
        vh = 10 * np.log10(10 ** (vh_db / 10) * speckle[1])
        return np.stack([vv, vh, vv - vh], axis=1).astype(np.float32)

    radar = radar_series(radar_doy, 0.0)
    extra_radar = [radar_series(doy, -0.7 * (k + 1)) for k, doy in enumerate(extra_radar_doy)]  # other orbits see other angles

    label = parcel_class[parcels].astype(np.int64)
    if void_label is not None:
        edge = np.unique(np.concatenate([parcels[0], parcels[-1], parcels[:, 0], parcels[:, -1]]))
        voided = edge[rng.random(len(edge)) < void_prob]
        label[np.isin(parcels, voided)] = void_label
    return Scene(label=label, parcels=parcels, optical=optical, radar=radar, cloud_cover=cloud_cover, extra_radar=extra_radar)


def irregular_dates(rng: np.random.Generator, start: float, end: float, n_min: int, n_max: int) -> np.ndarray:
    """Sorted, distinct integer days in [start, end] with irregular gaps (satellite revisits + gaps)."""
    n = int(rng.integers(n_min, n_max + 1))
    days = np.sort(rng.choice(np.arange(int(start), int(end) + 1), size=n, replace=False))
    return days.astype(np.int64)
