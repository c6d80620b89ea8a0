"""PASTIS-R reader: Sentinel-1/2 image time series with crop-type semantic labels.

Facts of the data (Garnot et al., ISPRS J. 2022; Zenodo record 5735646, ``PASTIS-R.zip``, 54 GB,
md5 ``4887513d6c2d2b07fa935d325bd53e09``, CC-BY-4.0):

* 2,433 patches of 128 × 128 px at 10 m in France, 124,422 parcels, 5 folds (``Fold`` 1–5).
* ``DATA_S2/S2_{ID}.npy``: T × 10 × H × W int16 (reflectance × 10 000), T = 38–61 dates between
  September 2018 and November 2019; bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12.
* ``DATA_S1A/S1A_{ID}.npy`` and ``DATA_S1D/S1D_{ID}.npy``: T × 3 × H × W (VV, VH, VV/VH in dB),
  ascending and descending orbits, ~70 dates each, float16 or float32.
* ``ANNOTATIONS/TARGET_{ID}.npy``: 3 × H × W; channel 0 is the semantic map: 0 background,
  1–18 crop types, 19 void (parcels mostly outside the patch).
* ``metadata.geojson``: one feature per patch with ``ID_PATCH``, ``Fold`` and ``dates-S2``,
  ``dates-S1A``, ``dates-S1D`` ({"0": 20180924, ...}, as a dict or as a JSON string).
  Each feature's geometry is the patch footprint (Polygon, Lambert-93 / EPSG:2154 metres); its
  centroid is given to samples as ``coords`` (float32 [2], x/y) so location-aware methods
  (GSSL's geo pretext) can cluster real places.
* ``NORM_{S2,S1A,S1D}_patch.json``: {"Fold_k": {"mean": [C], "std": [C]}} per fold.

Protocol (``docs/design.md``, protocol decisions): folds 1–3 train, 4 val, 5 test; radar = S1A by default (S1D
selectable); optical = RGB (B4, B3, B2) by default (all 10 bands selectable); dates as days since
2018-09-01; normalisation statistics from the training folds only, whatever split is read.

Checks (``docs/data_checks.md``): an ``ID_PATCH`` listed twice in the metadata is refused (it
could sit in two splits); labels must be integers (integral floats are accepted); ``NORM_*`` files
must hold, per fold, one finite mean and one finite std > 0 per channel; NaN/inf pixels are set to 0
after normalisation and dates with no finite value dropped, with a warning once per file and a
count in ``nonfinite_counts`` (:mod:`tasks.sits.checks`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.errors import DataError
from tasks.sits.checks import integer_labels, nonfinite_message
from tasks.sits.subsample import even_indices

WindowFn = Callable[[torch.Tensor | None, tuple[int, int]], tuple[int, int, int, int] | None]

log = logging.getLogger(__name__)

REFERENCE_DATE = dt.date(2018, 9, 1)
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
RGB = (2, 1, 0)  # B4, B3, B2
NUM_LABELS = 20  # 0..18 classes + 19 void
VOID = 19
TRAIN_FOLDS = (1, 2, 3)
CLASS_NAMES = (
    "background", "meadow", "soft winter wheat", "corn", "winter barley", "winter rapeseed", "spring barley",
    "sunflower", "grapevine", "beet", "winter triticale", "winter durum wheat", "fruits, vegetables, flowers",
    "potatoes", "leguminous fodder", "soybeans", "orchard", "mixed cereal", "sorghum",
)
CACHE_LIMIT_BYTES = 2 * 2**30  # decoded samples are kept in memory when the split fits in this


def parse_dates(value: Any, where: str) -> list[int] | None:
    """The ``dates-*`` property as days since 2018-09-01 in index order (None when absent)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: dates are not valid JSON: {exc}") from None
    if isinstance(value, dict):
        try:
            items = sorted(((int(k), int(v)) for k, v in value.items()))
        except (TypeError, ValueError):
            raise DataError(f"{where}: dates must map integer indices to YYYYMMDD integers") from None
        stamps = [v for _, v in items]
    elif isinstance(value, list):
        stamps = [int(v) for v in value]
    else:
        raise DataError(f"{where}: dates must be a dict, list or JSON string, got {type(value).__name__}")
    days = []
    for s in stamps:
        try:
            d = dt.date(s // 10000, s // 100 % 100, s % 100)
        except ValueError:
            raise DataError(f"{where}: {s} is not a YYYYMMDD date") from None
        days.append((d - REFERENCE_DATE).days)
    return days


CENTROID_KEY = "_centroid"  # added to each feature's properties by read_metadata (None without geometry)


def _ring_centroid(ring: np.ndarray) -> tuple[float, float, float]:
    """Signed area and area-weighted centroid (shoelace) of a linear ring ``[N, 2]`` (closed or open)."""
    x, y = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    if abs(area) < 1e-12:  # degenerate ring: the mean of its distinct vertices
        distinct = np.unique(ring, axis=0)
        return 0.0, float(distinct[:, 0].mean()), float(distinct[:, 1].mean())
    return float(area), float(((x + x1) * cross).sum() / (6 * area)), float(((y + y1) * cross).sum() / (6 * area))


def footprint_centroid(geometry: Any, where: str) -> tuple[float, float] | None:
    """Centroid of a GeoJSON Polygon / MultiPolygon footprint (exterior rings, area-weighted);
    None when the feature has no geometry. Anything else is a data error naming ``where``."""
    if geometry is None:
        return None
    if not isinstance(geometry, dict):
        raise DataError(f"{where}: geometry must be a GeoJSON object, got {type(geometry).__name__}")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        raise DataError(f"{where}: patch footprint geometry must be a Polygon or MultiPolygon, got {kind!r}")
    try:
        exteriors = [coords[0]] if kind == "Polygon" else [poly[0] for poly in coords]
        rings = [np.asarray(r, dtype=np.float64)[:, :2] for r in exteriors]
    except (TypeError, IndexError, ValueError, KeyError):
        raise DataError(f"{where}: malformed {kind} coordinates") from None
    if not rings or any(r.ndim != 2 or len(r) < 3 or not np.isfinite(r).all() for r in rings):
        raise DataError(f"{where}: a {kind} ring needs at least 3 finite [x, y] positions")
    parts = [_ring_centroid(r) for r in rings]
    total = sum(abs(a) for a, _, _ in parts)
    if total == 0:  # all parts degenerate: the mean of every part's vertex mean
        return float(np.mean([cx for _, cx, _ in parts])), float(np.mean([cy for _, _, cy in parts]))
    return (sum(abs(a) * cx for a, cx, _ in parts) / total, sum(abs(a) * cy for a, _, cy in parts) / total)


def read_metadata(root: Path) -> list[dict[str, Any]]:
    """Features' properties of ``metadata.geojson`` (clear errors for a missing or broken file)."""
    path = root / "metadata.geojson"
    if not path.is_file():
        raise DataError(f"PASTIS-R metadata missing: {path}")
    try:
        doc = json.loads(path.read_text())
        props = [{**f["properties"], CENTROID_KEY: footprint_centroid(f.get("geometry"), f"{path} (patch {f['properties'].get('ID_PATCH')})")}
                 for f in doc["features"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a GeoJSON FeatureCollection with feature properties ({exc})") from None
    folds: dict[str, list[int]] = {}
    for p in props:
        for key in ("ID_PATCH", "Fold"):
            if key not in p:
                raise DataError(f"{path}: a feature lacks the {key!r} property")
        if int(p["Fold"]) not in range(1, 6):
            raise DataError(f"{path}: patch {p['ID_PATCH']} has Fold {p['Fold']}, expected 1..5")
        folds.setdefault(str(p["ID_PATCH"]), []).append(int(p["Fold"]))
    repeated = {pid: f for pid, f in folds.items() if len(f) > 1}
    if repeated:  # a patch in two folds would sit in two splits (e.g. train and test)
        shown = ", ".join(f"{pid} (Fold {'/'.join(map(str, f))})" for pid, f in sorted(repeated.items())[:3])
        raise DataError(f"{path}: {len(repeated)} ID_PATCH value(s) listed in more than one feature, e.g. {shown}; each patch must appear once")
    return props


def _load_npy(path: Path, *, ndim: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read {what} array (truncated or not a .npy file?): {exc}") from None
    if arr.ndim != ndim:
        raise DataError(f"{path}: {what} array has shape {arr.shape}, expected {ndim} dimensions")
    return arr


def _finite_mask(values: np.ndarray) -> np.ndarray:
    """``np.isfinite`` of a float16/float32 array; float16 from its exponent bits (all ones: inf or
    NaN), exact and ~10x faster than NumPy's float16 ``isfinite`` (float32's is vectorised already)."""
    if values.dtype == np.float16:
        return (np.ascontiguousarray(values).view(np.uint16) & 0x7C00) != 0x7C00
    return np.isfinite(values)


RADAR_CHANNELS = ("VV", "VH", "VV/VH")


def _norm_from_file(path: Path, channels: int, folds: Sequence[int], names: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel, averaged over ``folds``; every fold's lists must have ``channels``
    values, finite means and finite std > 0 (a zero std would turn every sample into inf/NaN)."""
    shape = f"{{'Fold_k': {{'mean': [...], 'std': [...]}}}} for folds {list(folds)}"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: expected {shape} ({exc})") from None
    per_key: dict[str, list[np.ndarray]] = {"mean": [], "std": []}
    for f in folds:
        entry = doc.get(f"Fold_{f}") if isinstance(doc, dict) else None
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            raise DataError(f"{path}: expected {shape} (Fold_{f} is missing or lacks 'mean'/'std')")
        for key in ("mean", "std"):
            try:
                values = np.array(entry[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{path}: Fold_{f} '{key}' is not a list of numbers") from None
            if values.ndim != 1 or values.shape[0] != channels:
                raise DataError(f"{path}: Fold_{f} '{key}' has {values.size} value(s), the arrays have {channels} channels")
            bad = ~np.isfinite(values) | ((values <= 0) if key == "std" else False)
            if bad.any():
                c = int(np.flatnonzero(bad)[0])
                name = f" ({names[c]})" if c < len(names) else ""
                need = "finite and > 0" if key == "std" else "finite"
                raise DataError(f"{path}: Fold_{f} '{key}' of channel {c}{name} is {float(values[c])!r}; it must be {need}")
            per_key[key].append(values)
    return np.array(per_key["mean"]).mean(0), np.array(per_key["std"]).mean(0)


class PastisRDataset(torch.utils.data.Dataset):
    """PASTIS-R patches of the given folds as SITS samples (``docs/batch_formats.md``).

    Args:
        root: the ``PASTIS-R`` folder.
        folds: folds to read (1–5).
        radar: ``"S1A"`` (ascending, default) or ``"S1D"``.
        optical_bands: ``"rgb"`` (B4, B3, B2) or ``"all"`` (the 10 bands).
        normalize: standardise channels with the training folds' statistics (``NORM_*`` files, or
            computed from the training folds and cached when the files are absent).
        ids: optional subset of patch ids (strings or ints) within the folds.
        cache: keep decoded samples in memory (``"auto"``: when the split fits in 2 GB).
        cache_dir: where computed normalisation statistics are cached (default ``root``, or the
            user cache when ``root`` is read-only).
    """

    def __init__(self, root: Path | str, folds: Iterable[int], *, radar: str = "S1A", optical_bands: str = "rgb",
                 normalize: bool = True, ids: Iterable[Any] | None = None, cache: bool | str = "auto",
                 cache_dir: Path | None = None, labels: bool = True, norm_root: Path | None = None):
        self.root = Path(root)
        self.labels = labels  # False: an unlabeled collection (no ANNOTATIONS/), e.g. the pre-training pool
        self.norm_root = Path(norm_root) if norm_root is not None else self.root
        if radar not in ("S1A", "S1D"):
            raise ValueError(f"radar must be 'S1A' or 'S1D', got {radar!r}")
        if optical_bands not in ("rgb", "all"):
            raise ValueError(f"optical_bands must be 'rgb' or 'all', got {optical_bands!r}")
        self.radar, self.optical_bands, self.normalize = radar, optical_bands, normalize
        self.folds = tuple(sorted(set(int(f) for f in folds)))
        props = read_metadata(self.root)
        wanted = None if ids is None else {str(i) for i in ids}
        self.meta = [p for p in props if int(p["Fold"]) in self.folds and (wanted is None or str(p["ID_PATCH"]) in wanted)]
        if wanted is not None:
            unknown = wanted - {str(p["ID_PATCH"]) for p in self.meta}
            if unknown:
                raise DataError(f"{self.root / 'metadata.geojson'}: {len(unknown)} requested id(s) not in folds {self.folds}, e.g. {sorted(unknown)[:3]}")
        self.ids = [str(p["ID_PATCH"]) for p in self.meta]
        self._warned_dates: set[str] = set()
        self.nonfinite_counts: dict[str, int] = {}  # file -> NaN/inf values masked (tasks.sits.checks)
        self.cache_dir = cache_dir
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if normalize:
            for sat, channels in (("S2", 10), (radar, 3)):
                mean, std = self._norm_stats(sat, channels, props)
                self._stats[sat] = (torch.as_tensor(mean, dtype=torch.float32)[:, None, None], torch.as_tensor(std, dtype=torch.float32)[:, None, None])
        self._finite: dict[tuple[str, tuple[int, ...]], tuple[np.ndarray, int]] = {}  # file -> (dates kept, NaN/inf count)
        self._parsed_dates: dict[tuple[str, str, int], torch.Tensor] = {}
        self._cache: dict[int, dict[str, Any]] | None = None
        if cache == "auto":
            cache = self._estimated_bytes() < CACHE_LIMIT_BYTES
        if cache:
            self._cache = {}

    # -- normalisation statistics
    def _norm_stats(self, sat: str, channels: int, props: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        path = self.norm_root / f"NORM_{sat}_patch.json"
        names = S2_BANDS if sat == "S2" else RADAR_CHANNELS
        if path.is_file():
            return _norm_from_file(path, channels, TRAIN_FOLDS, names)
        cached = self._computed_norm_path(sat)
        if cached.is_file():
            return _norm_from_file(cached, channels, TRAIN_FOLDS, names)
        warnings.warn(f"{path} is missing: computing {sat} statistics from training folds {TRAIN_FOLDS} and caching them in {cached}", stacklevel=3)
        per_fold: dict[str, dict[str, list[float]]] = {}
        for fold in TRAIN_FOLDS:
            means, stds = [], []
            for p in props:
                if int(p["Fold"]) != fold:
                    continue
                arr = self._array(sat, str(p["ID_PATCH"])).astype(np.float64)
                if np.isfinite(arr).all():
                    means.append(arr.mean(axis=(0, 2, 3)))
                    stds.append(arr.std(axis=(0, 2, 3)))
                else:  # non-finite pixels are masked in samples (see __getitem__): leave them out here too
                    arr[~np.isfinite(arr)] = np.nan
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel: NaN, refused below
                        means.append(np.nanmean(arr, axis=(0, 2, 3)))
                        stds.append(np.nanstd(arr, axis=(0, 2, 3)))
            if not means:
                raise DataError(f"{self.root}: no patches in training fold {fold} to compute {sat} statistics from")
            per_fold[f"Fold_{fold}"] = {"mean": np.mean(means, 0).tolist(), "std": np.mean(stds, 0).tolist()}
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(per_fold))
        return _norm_from_file(cached, channels, TRAIN_FOLDS, names)

    def _computed_norm_path(self, sat: str) -> Path:
        base = self.cache_dir
        if base is None:
            import os

            from benchmark.data import default_data_root

            key = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
            base = self.root / ".benchmark_cache" if os.access(self.root, os.W_OK) else default_data_root() / "norm_cache" / key
        return base / f"NORM_{sat}_computed.json"

    # -- reading
    def _array(self, sat: str, pid: str) -> np.ndarray:
        arr = _load_npy(self.root / f"DATA_{sat}" / f"{sat}_{pid}.npy", ndim=4, what=sat)
        expected = 10 if sat == "S2" else 3
        if arr.shape[1] != expected:
            raise DataError(f"{self.root / f'DATA_{sat}' / f'{sat}_{pid}.npy'}: shape {arr.shape}, expected T × {expected} × H × W")
        return arr

    def _estimated_bytes(self) -> int:
        if not self.ids:
            return 0
        first = self.ids[0]
        s2 = self._array("S2", first)
        s1 = self._array(self.radar, first)
        c = 3 if self.optical_bands == "rgb" else 10
        per = 4 * (s2.shape[0] * c + s1.shape[0] * 3) * s2.shape[2] * s2.shape[3]
        return per * len(self.ids)

    def _dates(self, props: dict[str, Any], sat: str, n: int, pid: str) -> torch.Tensor:
        """Days of the ``n`` dates of ``sat`` for patch ``pid`` (parsed once per patch: callers index, never edit)."""
        if (pid, sat, n) in self._parsed_dates:
            return self._parsed_dates[pid, sat, n]
        where = f"{self.root / 'metadata.geojson'} (patch {pid}, dates-{sat})"
        days = parse_dates(props.get(f"dates-{sat}"), where)
        if days is None:
            if sat not in self._warned_dates:
                warnings.warn(f"{self.root / 'metadata.geojson'} has no dates-{sat}: using index order as dates", stacklevel=3)
                self._warned_dates.add(sat)
            days = list(range(n))
        if len(days) != n:
            raise DataError(f"{where}: {len(days)} dates but DATA_{sat}/{sat}_{pid}.npy has {n} time steps")
        self._parsed_dates[pid, sat, n] = torch.tensor(days, dtype=torch.float32)
        return self._parsed_dates[pid, sat, n]

    def _report_nonfinite(self, path: Path, bad: int, total: int, dropped: int) -> None:
        key = str(path)
        first = key not in self.nonfinite_counts
        self.nonfinite_counts[key] = bad
        if first:
            warnings.warn(nonfinite_message(key, bad, total, dropped, self.normalize), stacklevel=3)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def reads_windows(self) -> bool:
        """Whether :meth:`read` decodes only what is used (without the in-memory cache; with it,
        whole decoded samples are kept and sliced by the caller)."""
        return self._cache is None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self.read(index)
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    def read(self, index: int, *, length: int | None = None, window: WindowFn | None = None,
             with_label: bool = True) -> dict[str, Any]:
        """Sample ``index`` with ``length`` evenly spaced dates per modality and the spatial window
        ``window(label or None, (H, W))`` chooses (None: all), decoding only those.

        The arrays are memory-mapped and sliced before conversion, so a crop of a subset of dates
        costs what it keeps, not the ~26 MB of a whole decoded patch; values are those of the
        whole-patch decode, cropped and subsampled (non-finite dates are found on the whole
        series, once per file and process).
        """
        props = self.meta[index]
        pid = self.ids[index]
        if self.labels:
            target_path = self.root / "ANNOTATIONS" / f"TARGET_{pid}.npy"
            target = _load_npy(target_path, ndim=3, what="target")
            label = torch.from_numpy(integer_labels(np.asarray(target[0]), f"{target_path}: channel 0 (semantic labels)"))
            if label.min() < 0 or label.max() >= NUM_LABELS:
                raise DataError(f"{target_path}: label values must be in 0..{NUM_LABELS - 1}, found {int(label.min())}..{int(label.max())}")
            hw = (int(label.shape[0]), int(label.shape[1]))
        else:
            label, with_label = None, False
            hw = tuple(int(v) for v in self._array("S2", pid).shape[2:])
        box = None if window is None else window(label if with_label else None, hw)
        y, x, h, w = box if box is not None else (0, 0, *hw)
        sample: dict[str, Any] = {"id": pid}
        if with_label:
            sample["label"] = label[y:y + h, x:x + w] if box is not None else label
        if props.get(CENTROID_KEY) is not None:
            sample["coords"] = torch.tensor(props[CENTROID_KEY], dtype=torch.float32)
        for key, sat in (("optical", "S2"), ("radar", self.radar)):
            arr = self._array(sat, pid)
            array_path = self.root / f"DATA_{sat}" / f"{sat}_{pid}.npy"
            if arr.shape[2:] != hw:
                raise DataError(f"{array_path}: spatial size {arr.shape[2:]} differs from the label's {hw}")
            channels = list(RGB) if key == "optical" and self.optical_bands == "rgb" else list(range(arr.shape[1]))
            keep, bad, total = self._finite_dates(arr, channels, array_path)
            dates = self._dates(props, sat, arr.shape[0], pid)
            kept = np.flatnonzero(keep)
            chosen = kept if length is None else kept[even_indices(len(kept), length).numpy()]
            picked = arr[chosen, :, y:y + h, x:x + w]  # only the kept dates' window leaves the memory map
            if len(channels) != arr.shape[1]:
                picked = picked[:, channels]
            values = torch.from_numpy(np.asarray(picked, dtype=np.float32))
            finite = torch.isfinite(values) if bad else None
            if self.normalize:
                mean, std = self._stats[sat]
                if key == "optical" and self.optical_bands == "rgb":
                    mean, std = mean[list(RGB)], std[list(RGB)]
                values = (values - mean) / std
            if finite is not None:  # policy of tasks.sits.checks: 0 after normalisation; dates with no finite value dropped
                values = torch.where(finite, values, torch.zeros((), dtype=values.dtype))
                self._report_nonfinite(array_path, bad, total, int((~keep).sum()))
            sample[key] = values
            sample[f"{key}_dates"] = dates[torch.from_numpy(chosen)]
        return sample

    def _finite_dates(self, arr: np.ndarray, channels: list[int], path: Path) -> tuple[np.ndarray, int, int]:
        """(dates holding a finite value [T] bool, non-finite values, values) of ``arr[:, channels]``
        as float32; integer arrays are finite without a look, float ones are scanned once per file."""
        total = arr.shape[0] * len(channels) * arr.shape[2] * arr.shape[3]
        if np.issubdtype(arr.dtype, np.integer):
            return np.ones(arr.shape[0], dtype=bool), 0, total
        key = (str(path), tuple(channels))
        if key not in self._finite:
            series = np.asarray(arr if len(channels) == arr.shape[1] else arr[:, channels])
            if series.dtype.itemsize > 4:  # float64 beyond float32's range becomes inf when decoded
                series = series.astype(np.float32)
            finite = _finite_mask(series).reshape(arr.shape[0], -1)
            keep = finite.any(1)
            if not keep.any():
                raise DataError(f"{path}: contains NaN or inf only (no finite value)")
            self._finite[key] = (keep, int(finite.size - np.count_nonzero(finite)))
        keep, bad = self._finite[key]
        return keep, bad, total
