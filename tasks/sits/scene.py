"""One synthetic SITS patch: the same ground seen by an optical and a radar sensor over a season.

Both embedded segmentation datasets (PASTIS-R-like and South-Sudan-like) are drawn from this
model, each written in its own real on-disk layout. The ground comes first, the sensors second,
so what one sensor sees the other sees too (which is what cross-modal self-supervision uses):

* **Parcels** are Voronoi cells (slightly anisotropic, like field shapes); each gets a class
  drawn with the dataset's (imbalanced) class shares.
* **Phenology** per class: a green canopy fraction that rises at green-up and falls at
  senescence (double logistic), then a dry canopy (straw) until harvest, then bare soil;
  perennial classes (meadow, fodder) hold a level with mowing cuts; some classes flower (a
  colour change of the canopy for two weeks). Each parcel shifts its class's calendar (sowing
  date, σ ``timing_sd`` days) and scales its vigour, so classes overlap at any single date.
* **Sub-field texture**: rows (a period and an orientation per parcel: vines, maize, potato
  ridges), tree dots (orchards), or patchiness, multiplying the canopy fraction; plus a smooth
  within-patch vigour field (soil heterogeneity). It is ground truth, so both sensors see it.
* **Soil moisture** per date (rain events shared by the patch) plus a per-parcel offset: wet
  soil darkens the optical soil spectrum and raises radar backscatter of bare parts.
* **Optical** (10 Sentinel-2 bands, reflectance × 10 000): soil / green / straw / flower spectra
  mixed by the canopy state, per-parcel soil brightness, per-date atmospheric gain and thin haze,
  **clouds** (smooth blobs with soft edges) and their **shadows** (the cloud mask displaced and
  darkening the ground), sensor noise.
* **Radar** (VV, VH, VV/VH in dB): backscatter from the canopy biomass and its class-specific
  structure, from the soil (moisture, roughness) where the canopy is thin, an incidence-angle
  term of the orbit, and multiplicative **speckle** (gamma, ~4.4 looks) drawn per pixel and date.

Deterministic: everything is drawn from the generator passed in, in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Spectra for the 10 Sentinel-2 bands in PASTIS order B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12.
SOIL = np.array([0.09, 0.12, 0.15, 0.18, 0.21, 0.23, 0.25, 0.26, 0.32, 0.27])
VEGETATION = np.array([0.03, 0.07, 0.035, 0.11, 0.30, 0.40, 0.45, 0.47, 0.23, 0.12])
STRAW = np.array([0.10, 0.15, 0.20, 0.24, 0.27, 0.29, 0.31, 0.32, 0.38, 0.30])
FLOWER = np.array([0.04, 0.16, 0.17, 0.20, 0.28, 0.34, 0.38, 0.40, 0.25, 0.14])  # yellow (rapeseed, sunflower)
CLOUD = np.array([0.55, 0.54, 0.55, 0.56, 0.57, 0.57, 0.58, 0.58, 0.45, 0.35])
TEXTURES = ("none", "rows", "dots", "patchy")


@dataclass(frozen=True)
class CropClass:
    """A class's calendar (days of the dataset's crop year), canopy and texture.

    ``flat`` classes hold ``peak`` all season (minus mowing ``cuts``); the others follow a double
    logistic from ``green_up`` to ``senescence``, then dry canopy for ``harvest`` days.
    """

    green_up: float  # day of half green-up
    senescence: float  # day of half senescence
    peak: float  # maximum green fraction
    structure_db: float = 0.0  # extra radar backscatter of a full canopy from its structure (dB)
    flat: bool = False  # perennial / non-crop: a level (with cuts), no season
    harvest: float = 25.0  # days of dry canopy after senescence, before the soil is bare
    cuts: tuple[float, ...] = ()  # mowing days (flat classes): the canopy drops, then regrows
    flower: float | None = None  # day the canopy flowers (two weeks of yellow)
    texture: str = "none"  # one of TEXTURES
    texture_period: float = 3.0  # px between rows / trees
    texture_amp: float = 0.0  # relative canopy modulation of the texture
    timing_sd: float = 7.0  # per-parcel calendar shift (days, standard deviation)


def canopy(cls: CropClass, doy: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([P, T] green fraction, [P, T] dry fraction, [P, T] flowering weight) for parcels with a
    per-parcel calendar shift and vigour scale."""
    t = doy[None, :] - shift[:, None]
    if cls.flat:
        green = np.full(t.shape, cls.peak) * scale[:, None] + 0.04 * np.sin(t / 58.0)
        for cut in cls.cuts:  # a cut removes most of the canopy, which regrows over ~4 weeks
            since = t - cut
            green = green * np.where(since >= 0, 1 - 0.65 * np.exp(-np.maximum(since, 0) / 14.0), 1.0)
        return np.clip(green, 0, 1), np.zeros(t.shape), np.zeros(t.shape)
    up = 1 / (1 + np.exp(-(t - cls.green_up) / 9.0))
    down = 1 / (1 + np.exp((t - cls.senescence) / 8.0))
    green = 0.04 + cls.peak * scale[:, None] * up * down
    gone = 1 / (1 + np.exp(-(t - cls.senescence - cls.harvest) / 3.0))  # harvested
    dry = np.clip(cls.peak * scale[:, None] * up * (1 - down) * (1 - gone), 0, 1)
    bloom = np.zeros(t.shape) if cls.flower is None else np.exp(-0.5 * ((t - cls.flower) / 7.0) ** 2)
    return np.clip(green, 0, 1), dry, bloom


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
    values = np.zeros(shape)
    for _ in range(4):
        kx, ky = rng.normal(0, scale, 2)
        values += np.cos(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 2 * np.pi))
    return (values - values.min()) / (np.ptp(values) + 1e-9)


def texture_field(classes: list[CropClass], parcel_class: np.ndarray, parcels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[H, W] multiplicative canopy texture (1 = none): each parcel's class pattern at the
    parcel's own orientation and phase."""
    n = len(parcel_class)
    theta = rng.uniform(0, np.pi, n)[parcels]
    phase = rng.uniform(0, 2 * np.pi, (2, n))[:, parcels]
    yy, xx = np.mgrid[0 : parcels.shape[0], 0 : parcels.shape[1]].astype(float)
    kind = np.array([TEXTURES.index(c.texture) for c in classes])[parcel_class][parcels]
    period = np.array([c.texture_period for c in classes])[parcel_class][parcels]
    amp = np.array([c.texture_amp for c in classes])[parcel_class][parcels]
    along = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period
    across = (-xx * np.sin(theta) + yy * np.cos(theta)) * 2 * np.pi / period
    rows = np.cos(along + phase[0])
    dots = np.maximum(np.cos(along + phase[0]) * np.cos(across + phase[1]), 0) * 2 - 0.5
    patchy = smooth_noise(parcels.shape, rng, 6.0) * 2 - 1
    pattern = np.select([kind == 1, kind == 2, kind == 3], [rows, dots, patchy], 0.0)
    return 1 + amp * pattern


@dataclass
class Scene:
    label: np.ndarray  # [H, W] int, class index, or the void value
    parcels: np.ndarray  # [H, W] parcel ids (0..P-1)
    parcel_class: np.ndarray  # [P] class of each parcel (before the void rule)
    optical: np.ndarray  # [T_o, 10, H, W] int16 reflectance × 10 000
    radar: np.ndarray  # [T_r, 3, H, W] float32 dB (VV, VH, VV/VH)
    cloud_cover: np.ndarray  # [T_o] fraction of clouded pixels per optical date
    extra_radar: list[np.ndarray] = field(default_factory=list)  # other orbits, on their own dates


@dataclass(frozen=True)
class Acquisitions:
    """When each sensor looks: optical dates, radar dates, other orbits' dates (days)."""

    optical: np.ndarray
    radar: np.ndarray
    extra_radar: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class SceneStyle:
    """Per-dataset knobs of the scene model."""

    void_label: int | None = None  # value of labels cut by the patch edge (None: keep them)
    void_prob: float = 0.5  # share of edge parcels labelled void
    cloud_prob: float = 0.35  # share of optical dates with clouds
    parcel_px: tuple[float, float] = (60, 140)  # range of the mean parcel size (px)
    moisture_events: float = 0.08  # rain events per day (soil moisture pulses)
    looks: float = 4.4  # speckle: equivalent number of looks


def soil_moisture(doy: np.ndarray, events: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """[T] patch soil moisture in [0, 1]: rain pulses drying out with a ~6-day time constant."""
    lag = doy[:, None] - events[None, :]
    return np.clip((amounts[None, :] * np.exp(-np.maximum(lag, 0) / 6.0) * (lag >= 0)).sum(1), 0, 1)


def make_scene(rng: np.random.Generator, classes: list[CropClass], class_probs: np.ndarray, when: Acquisitions, size: int,
               style: SceneStyle = SceneStyle()) -> Scene:
    """One patch; days are days of the crop year (any origin) as the classes' calendars use them."""
    n_parcels = max(3, int(size * size / rng.uniform(*style.parcel_px)))
    parcels = voronoi_parcels(size, n_parcels, rng)
    parcel_class = rng.choice(len(classes), size=n_parcels, p=class_probs)
    shift = rng.normal(0, 1, n_parcels) * np.array([classes[c].timing_sd for c in parcel_class])
    scale = rng.uniform(0.85, 1.15, n_parcels)
    wet_offset = rng.uniform(-0.15, 0.15, n_parcels)[parcels]
    roughness = rng.normal(0, 1.0, n_parcels)[parcels]
    brightness = rng.uniform(0.8, 1.2, n_parcels)[parcels]
    texture = texture_field(classes, parcel_class, parcels, rng)
    vigour = 1 + 0.2 * (smooth_noise((size, size), rng, 1.5) - 0.5)
    span = (min(d.min() for d in (when.optical, when.radar, *when.extra_radar)) - 10,
            max(d.max() for d in (when.optical, when.radar, *when.extra_radar)) + 1)
    n_events = rng.poisson(style.moisture_events * (span[1] - span[0]))
    events, amounts = rng.uniform(*span, n_events), rng.uniform(0.2, 0.8, n_events)

    def ground(doy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """[T, H, W] green, dry, flowering, soil moisture on ``doy``."""
        g = np.empty((n_parcels, len(doy)))
        d, b = np.empty_like(g), np.empty_like(g)
        for c in np.unique(parcel_class):
            sel = parcel_class == c
            g[sel], d[sel], b[sel] = canopy(classes[c], doy, shift[sel], scale[sel])
        mod = (texture * vigour)[None]
        green = np.clip(g.T[:, parcels] * mod, 0, 1)
        dry = np.clip(d.T[:, parcels] * mod, 0, 1 - green)
        wet = np.clip(soil_moisture(doy, events, amounts)[:, None, None] + wet_offset[None], 0, 1)
        return green, dry, b.T[:, parcels], wet

    # optical: canopy and soil spectra, atmosphere, clouds and their shadows, noise
    green, dry, bloom, wet = ground(when.optical.astype(float))
    soil = SOIL[None, :, None, None] * (brightness * (1 - 0.3 * wet))[:, None]
    leaf = VEGETATION[None, :, None, None] + (FLOWER - VEGETATION)[None, :, None, None] * bloom[:, None]
    bare = np.clip(1 - green - dry, 0, 1)
    refl = soil * bare[:, None] + leaf * green[:, None] + STRAW[None, :, None, None] * dry[:, None]
    n_o = len(when.optical)
    refl = refl * rng.normal(1, 0.03, (n_o, 1, 1, 1)) + rng.uniform(0, 0.04, (n_o, 1, 1, 1)) * (rng.random((n_o, 1, 1, 1)) < 0.25)
    cloud_cover = np.zeros(n_o)
    for t in range(n_o):
        if rng.random() < style.cloud_prob:
            density = smooth_noise((size, size), rng, 0.8)  # cloud fields: larger than a patch, mostly
            alpha = np.clip((density - rng.uniform(0.25, 0.85)) * 3, 0, 1)
            dy, dx = (int(v) for v in rng.integers(-size // 4, size // 4 + 1, 2))
            shadow = np.roll(alpha, (dy, dx), axis=(0, 1)) * (1 - alpha)
            refl[t] = refl[t] * (1 - alpha) * (1 - 0.55 * shadow) + CLOUD[:, None, None] * alpha
            cloud_cover[t] = float((alpha > 0.1).mean())
    refl += rng.normal(0, 0.006, refl.shape)
    optical = np.clip(refl * 10_000, -10_000, 20_000).astype(np.int16)

    structure = np.array([c.structure_db for c in classes])[parcel_class][parcels]

    def radar_series(doy: np.ndarray, incidence: float) -> np.ndarray:
        g, d, _, w = ground(doy.astype(float))
        biomass = np.clip(g + 0.7 * d, 0, 1)
        soil_db = 3.0 * w + 0.8 * roughness[None]
        angle_db = -0.12 * (incidence - 38.0)
        vv_db = -16.0 + angle_db + (1 - biomass) * soil_db + biomass * (5.5 + structure[None])
        vh_db = -24.0 + angle_db + 0.6 * (1 - biomass) * soil_db + biomass * (9.0 + 0.6 * structure[None])
        speckle = rng.gamma(style.looks, 1 / style.looks, (2, *vv_db.shape))
        vv = 10 * np.log10(10 ** (vv_db / 10) * speckle[0])
        vh = 10 * np.log10(10 ** (vh_db / 10) * speckle[1])
        return np.stack([vv, vh, vv - vh], axis=1).astype(np.float32)

    radar = radar_series(when.radar, rng.uniform(32, 44))
    extra_radar = [radar_series(doy, rng.uniform(32, 44)) for doy in when.extra_radar]  # other orbits see other angles

    label = parcel_class[parcels].astype(np.int64)
    if style.void_label is not None:
        edge = np.unique(np.concatenate([parcels[0], parcels[-1], parcels[:, 0], parcels[:, -1]]))
        voided = edge[rng.random(len(edge)) < style.void_prob]
        label[np.isin(parcels, voided)] = style.void_label
    return Scene(label=label, parcels=parcels, parcel_class=parcel_class, optical=optical, radar=radar,
                 cloud_cover=cloud_cover, extra_radar=extra_radar)


def revisit_dates(rng: np.random.Generator, start: float, end: float, n_min: int, n_max: int) -> np.ndarray:
    """Sorted, distinct integer days in [start, end]: a regular revisit, jittered by up to a
    quarter of its spacing (orbits, acquisition gaps), ``n_min``–``n_max`` of them."""
    n = int(rng.integers(n_min, n_max + 1))
    spacing = (end - start) / n
    days = start + spacing * (np.arange(n) + 0.5) + rng.uniform(-spacing / 4, spacing / 4, n)
    return np.unique(np.clip(np.round(days), start, end).astype(np.int64))
