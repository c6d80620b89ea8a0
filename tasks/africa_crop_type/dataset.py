"""Reader of the South Sudan crop-type dataset in its SustainBench layout.

South Sudan crop types (Rustowicz et al., CVPR-W 2019; re-released by SustainBench as
``africa_crop_type_mapping`` v1.0)
------------------------------------------------------------------------------------------------

* **Source**: Sentinel-1, Sentinel-2 and PlanetScope time series over fields surveyed in South
  Sudan (2017 growing season), 10 m pixels. Originally on Radiant MLHub
  (doi:10.34911/rdnt.v6kx6n); the layout read here is SustainBench's, from its Google Drive folder
  https://drive.google.com/drive/folders/1WhVObtFOzYFiXBsbbrEGy1DUtv7ov7wF (the folder PANGAEA
  downloads too). ``python -m benchmark download africa_crop_type`` prints the steps.
* **License**: Sentinel-1/2 imagery is U.S. Public Domain per SustainBench; the labels are
  distributed under CC-BY-4.0 by Radiant Earth (check the source before redistributing).
* **Layout** (``root`` below is the ``southsudan`` folder)::

      list_eval_partition.csv        columns id, partition (0 train, 1 val, 2 test)
      npy/southsudan_{id:06d}.npz    's1' 3×64×64×T1 float (VV, VH, VH/VV; dB),
                                     's2' 10×64×64×T2 integer reflectance × 10 000
                                     (B2 blue, B3 green, B4 red, B5, B6, B7 red edge 1-3, B8 NIR,
                                     B8A red edge 4, B11, B12 SWIR), 'planet' 4×P×P×T3 (ignored);
                                     time is the LAST axis, and the real files may list it in
                                     reverse chronological order
      truth/southsudan_{id:06d}.npz  'truth' 64×64: 0 unlabelled, 1 sorghum, 2 maize, 3 rice,
                                     4 groundnut
      s1/s1_southsudan_{id:06d}.json {"dates": ["YYYY-MM-DD", ...]} in the arrays' time order
      s2/s2_southsudan_{id:06d}.json (planet/ likewise, not read)

* **Size**: 687 tiles of 64 × 64 px; frozen split 554 / 66 / 67 tiles (Rustowicz's
  ``ssudan_{train,val,test}.txt``, kept by SustainBench) [counts from the original code; verify
  on the csv]; ~65 k labelled pixels, i.e. most of every tile is unlabelled.
* **Classes** (this reader): sorghum 0, maize 1, rice 2, groundnut 3; raw 0 (unlabelled) becomes
  the ignore value 4. Labelled-pixel shares ≈ 0.68 / 0.09 / 0.07 / 0.06 (PANGAEA).

What a sample holds (``docs/batch_formats.md``): ``radar [T1, 3, H, W]`` float32 (VV, VH, VH/VV by default),
``optical [T2, 3, H, W]`` float32 (R, G, B = B4, B3, B2 by default, or the 10 bands),
``radar_dates``/``optical_dates`` float32 days since :data:`REFERENCE_DATE` (2017-01-01), sorted
ascending (the time axis is reordered by the dates files), ``label [H, W]`` int64 and ``id`` (the
six-digit tile id as a string). With ``normalize`` each band is standardised with the published
South Sudan statistics (Rustowicz ``constants.py``, identical in SustainBench).

Bad input raises :class:`benchmark.errors.DataError` naming the file and the problem. A missing
dates file is not an error: the file's time order is used, with a warning. Labels must be integers
(integral floats are accepted); NaN/inf pixels are set to 0 after normalisation and dates with no
finite value dropped, with a warning once per file and a count in ``nonfinite_counts``
(:mod:`tasks.sits.checks`; every check is listed in ``docs/data_checks.md``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.errors import DataError
from tasks.sits.checks import integer_labels, nonfinite_message

COUNTRY = "southsudan"
PARTITION_CSV = "list_eval_partition.csv"
POOL_DIR = "unlabeled_pool"  # extra unlabeled tiles in the same layout, without truth/ (tasks.sits.pool)
REFERENCE_DATE = dt.date(2017, 1, 1)  # dates are days since this day (negative before it)
PARTITIONS = {"train": 0, "val": 1, "test": 2}

CLASS_NAMES = ("sorghum", "maize", "rice", "groundnut")
NUM_CLASSES = 4
IGNORE_INDEX = 4  # raw label 0 (unlabelled) after mapping; raw 1..4 become 0..3

S1_BANDS = ("VV", "VH", "VH/VV")
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
RGB = (2, 1, 0)  # B4, B3, B2

# Published South Sudan band statistics (Rustowicz constants.py; SustainBench uses the same).
S1_MEAN = (-9.02, -15.26, 1.15)
S1_STD = (4.49, 6.68, 21.75)
S2_MEAN = (2119.15, 2061.95, 2127.71, 2277.60, 2784.21, 3088.40, 2939.33, 3308.03, 2597.14, 1834.81)
S2_STD = (2113.41, 2026.64, 2126.10, 2093.35, 2066.81, 2114.85, 2049.70, 2111.51, 1320.97, 1029.58)

DEFAULT_CACHE_BYTES = 2 << 30  # per reader; the embedded synthetic set needs a few tens of MB


def tile_name(tile_id: str | int) -> str:
    return f"{COUNTRY}_{int(tile_id):06d}"


def image_path(root: Path, tile_id: str) -> Path:
    return root / "npy" / f"{tile_name(tile_id)}.npz"


def truth_path(root: Path, tile_id: str) -> Path:
    return root / "truth" / f"{tile_name(tile_id)}.npz"


def dates_path(root: Path, sat: str, tile_id: str) -> Path:
    return root / sat / f"{sat}_{tile_name(tile_id)}.json"


def parse_date(text: Any, where: Path) -> float:
    """``YYYY-MM-DD`` (or ``YYYYMMDD``) as days since :data:`REFERENCE_DATE`."""
    s = str(text).strip()
    try:
        day = dt.date.fromisoformat(s) if "-" in s else dt.datetime.strptime(s, "%Y%m%d").date()
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a YYYY-MM-DD date") from None
    return float((day - REFERENCE_DATE).days)


def read_partitions(root: Path) -> list[tuple[str, int]]:
    """(six-digit id, partition) rows of ``list_eval_partition.csv``, in file order."""
    path = Path(root) / PARTITION_CSV
    if not path.is_file():
        raise DataError(f"missing partition file: {path}")
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the partition csv: {exc}") from None
    if not rows:
        raise DataError(f"{path}: empty file, expected a header with columns 'id' and 'partition'")
    header = [h.strip().lower() for h in rows[0]]
    if "id" not in header or "partition" not in header:
        raise DataError(f"{path}: header {rows[0]} lacks the SustainBench columns 'id' and 'partition'")
    ci, cp = header.index("id"), header.index("partition")
    out: list[tuple[str, int]] = []
    seen: dict[str, list[tuple[int, int]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            tile = f"{int(float(row[ci])):06d}"
            part = int(float(row[cp]))
        except (ValueError, IndexError):
            raise DataError(f"{path}, line {line}: expected an integer id and partition, got {row}") from None
        if part not in PARTITIONS.values():
            raise DataError(f"{path}, line {line}: partition {part} of id {tile} is not 0 (train), 1 (val) or 2 (test)")
        seen.setdefault(tile, []).append((line, part))
        out.append((tile, part))
    repeated = {t: v for t, v in seen.items() if len(v) > 1}
    if repeated:  # an id listed twice may sit in two partitions (train and test): refused, whatever the codes
        names = {code: name for name, code in PARTITIONS.items()}
        shown = ", ".join(f"{t} (lines {'/'.join(str(ln) for ln, _ in v)}: {'/'.join(names[p] for _, p in v)})" for t, v in sorted(repeated.items())[:3])
        raise DataError(f"{path}: {len(repeated)} tile id(s) listed more than once, e.g. {shown}; each tile must be in one partition")
    return out


def _partition_code(p: str | int) -> int:
    if isinstance(p, str) and p in PARTITIONS:
        return PARTITIONS[p]
    if isinstance(p, int) and p in PARTITIONS.values():
        return p
    raise ValueError(f"unknown partition {p!r}: use train/val/test or 0/1/2")


def _load_npz(path: Path, keys: Sequence[str], what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            have = list(z.files)
            missing = [k for k in keys if k not in have]
            if missing:
                raise DataError(f"{path}: no array {missing[0]!r} in the {what} file (it holds {have})")
            return {k: np.asarray(z[k]) for k in keys}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the {what} file (truncated or corrupt npz?): {exc}") from None


class SouthSudanDataset(torch.utils.data.Dataset):
    """South Sudan tiles of the given partitions (see the module docstring for the data).

    Args:
        root: the ``southsudan`` folder (holding ``list_eval_partition.csv``).
        partitions: names (``"train"``, ``"val"``, ``"test"``) or codes (0, 1, 2) to include.
        optical_bands: ``"rgb"`` (B4, B3, B2) or ``"all"`` (the 10 bands in file order).
        radar_bands: indices into (VV, VH, VH/VV).
        normalize: standardise each band with the published South Sudan statistics.
        ids: restrict to these tile ids (in this order); each must be in ``partitions``.
        cache: keep decoded samples in memory so epochs never re-read files (``True``: up to
            2 GiB per reader; an int sets the budget in bytes; ``False``: no cache).
    """

    def __init__(
        self,
        root: str | Path,
        partitions: Iterable[str | int] | str | int,
        *,
        optical_bands: str = "rgb",
        radar_bands: Sequence[int] = (0, 1, 2),
        normalize: bool = True,
        ids: Sequence[str | int] | None = None,
        cache: bool | int = True,
        labels: bool = True,
    ) -> None:
        self.root = Path(root)
        self.labels = labels  # False: an unlabeled collection (no truth/), e.g. the pre-training pool
        if isinstance(partitions, (str, int)):
            partitions = [partitions]
        codes = {_partition_code(p) for p in partitions}
        if optical_bands not in ("rgb", "all"):
            raise ValueError(f"optical_bands must be 'rgb' or 'all', got {optical_bands!r}")
        self.optical_index = list(RGB) if optical_bands == "rgb" else list(range(len(S2_BANDS)))
        self.radar_index = [int(b) for b in radar_bands]
        if not self.radar_index or any(b not in range(len(S1_BANDS)) for b in self.radar_index):
            raise ValueError(f"radar_bands must index {S1_BANDS}, got {tuple(radar_bands)}")
        self.normalize = normalize
        self.optical_band_names = tuple(S2_BANDS[i] for i in self.optical_index)
        self.radar_band_names = tuple(S1_BANDS[i] for i in self.radar_index)
        self._stats = {
            "optical": self._stat(S2_MEAN, S2_STD, self.optical_index),
            "radar": self._stat(S1_MEAN, S1_STD, self.radar_index),
        }

        table = read_partitions(self.root)
        in_parts = [t for t, p in table if p in codes]
        if ids is None:
            self.ids = in_parts
        else:
            wanted = [f"{int(i):06d}" for i in ids]
            allowed = set(in_parts)
            unknown = [i for i in wanted if i not in allowed]
            if unknown:
                raise DataError(f"{self.root / PARTITION_CSV}: {len(unknown)} requested id(s) not in partitions {sorted(codes)}, e.g. {unknown[:3]}")
            self.ids = wanted
        missing = [p for t in self.ids for p in (image_path(self.root, t), *((truth_path(self.root, t),) if labels else ()))
                   if not p.is_file()]
        if missing:
            raise DataError(f"{self.root / PARTITION_CSV} lists tiles without files: {len(missing)} missing, e.g. {', '.join(map(str, missing[:3]))}")

        budget = DEFAULT_CACHE_BYTES if cache is True else int(cache or 0)
        self._cache_budget = budget
        self._cache_bytes = 0
        self._cache: dict[int, dict[str, Any]] = {}
        self._warned_dates: set[str] = set()
        self.nonfinite_counts: dict[str, int] = {}  # "<file>: '<array>'" -> NaN/inf values masked (tasks.sits.checks)

    @staticmethod
    def _stat(mean: Sequence[float], std: Sequence[float], index: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-band statistics shaped for C × H × W × T arrays."""
        m = np.array([mean[i] for i in index], dtype=np.float32)[:, None, None, None]
        s = np.array([std[i] for i in index], dtype=np.float32)[:, None, None, None]
        return m, s

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self.ids)
        if not 0 <= i < len(self.ids):
            raise IndexError(f"index {i} out of range for {len(self.ids)} tiles")
        sample = self._cache.get(i)
        if sample is None:
            sample = self._load(self.ids[i])
            size = sum(v.numel() * v.element_size() for v in sample.values() if isinstance(v, torch.Tensor))
            if self._cache_bytes + size <= self._cache_budget:
                self._cache[i] = sample
                self._cache_bytes += size
        return dict(sample)

    def _report_nonfinite(self, where: str, bad: int, total: int, dropped: int) -> None:
        first = where not in self.nonfinite_counts
        self.nonfinite_counts[where] = bad
        if first:
            warnings.warn(nonfinite_message(where, bad, total, dropped, self.normalize), stacklevel=5)

    # -- reading one tile
    def _dates(self, sat: str, tile: str, n: int, npz: Path) -> np.ndarray | None:
        path = dates_path(self.root, sat, tile)
        if not path.is_file():
            if sat not in self._warned_dates:
                warnings.warn(f"missing dates file {path}: using the time order of {npz.name} as is (further missing {sat} dates files are not reported)", stacklevel=4)
                self._warned_dates.add(sat)
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the dates file: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("dates"), list):
            raise DataError(f'{path}: expected {{"dates": ["YYYY-MM-DD", ...]}}')
        days = np.array([parse_date(d, path) for d in doc["dates"]], dtype=np.float64)
        if len(days) != n:
            raise DataError(f"{path}: {len(days)} dates but '{sat}' in {npz} has {n} time steps")
        return days

    def _series(self, arr: np.ndarray, sat: str, tile: str, npz: Path, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """C×H×W×T array → [T, C, H, W] float32 sorted by date, and its dates [T]."""
        if arr.ndim != 4:
            raise DataError(f"{npz}: '{sat}' has shape {arr.shape}, expected C × H × W × T (4 dimensions)")
        if tuple(arr.shape[1:3]) != hw:
            other = f"the label {truth_path(self.root, tile)}" if self.labels else "'s2'"
            raise DataError(f"{npz}: '{sat}' is {arr.shape[1]}×{arr.shape[2]} px but {other} is {hw[0]}×{hw[1]}")
        if arr.shape[3] == 0:
            raise DataError(f"{npz}: '{sat}' has no time steps")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise DataError(f"{npz}: '{sat}' has dtype {arr.dtype}, expected integers or floats")
        if sat == "s2":
            if arr.shape[0] < len(S2_BANDS):
                raise DataError(f"{npz}: 's2' has {arr.shape[0]} bands, expected at least the {len(S2_BANDS)} of {S2_BANDS}")
            x = arr[self.optical_index]
        else:
            if arr.shape[0] < 2:
                raise DataError(f"{npz}: 's1' has {arr.shape[0]} bands, expected VV, VH (and VH/VV)")
            x = arr[:3].astype(np.float32)
            if x.shape[0] == 2:  # derive the ratio channel the release computes from the dB bands
                with np.errstate(divide="ignore", invalid="ignore"):
                    x = np.concatenate([x, x[1:2] / x[0:1]])
            x = x[self.radar_index]
        x = np.asarray(x, dtype=np.float32)
        finite = np.isfinite(x)
        clean = bool(finite.all())
        if not clean and not finite.any():
            raise DataError(f"{npz}: '{sat}' contains NaN or inf only (no finite value)")
        if self.normalize:  # in numpy: tiny element-wise torch ops contend for threads in loader workers
            mean, std = self._stats["optical" if sat == "s2" else "radar"]
            x = (x - mean) / std
        days = self._dates(sat, tile, arr.shape[3], npz)
        if days is None:
            days = np.arange(arr.shape[3], dtype=np.float64)
        order = np.argsort(days, kind="stable")
        if not clean:  # policy of tasks.sits.checks: 0 after normalisation; dates with no finite value dropped
            x = np.where(finite, x, np.float32(0))
            keep = finite.any(axis=(0, 1, 2))  # per date (time is the last axis)
            order = order[keep[order]]
            self._report_nonfinite(f"{npz}: '{sat}'", int((~finite).sum()), finite.size, int((~keep).sum()))
        series = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 0, 1, 2)[order]))
        return series, torch.from_numpy(days[order].astype(np.float32))

    def _label(self, tile: str) -> torch.Tensor:
        path = truth_path(self.root, tile)
        raw = _load_npz(path, ("truth",), "label")["truth"]
        if raw.ndim != 2:
            raise DataError(f"{path}: 'truth' has shape {raw.shape}, expected H × W")
        values = integer_labels(raw, f"{path}: 'truth'")
        bad = np.unique(values[(values < 0) | (values > NUM_CLASSES)])
        if bad.size:
            raise DataError(f"{path}: label values {bad[:10].tolist()} out of range (expected 0 unlabelled, 1..4 = {', '.join(CLASS_NAMES)})")
        label = np.where(values == 0, IGNORE_INDEX, values - 1)
        return torch.from_numpy(label)

    def _load(self, tile: str) -> dict[str, Any]:
        label = self._label(tile) if self.labels else None
        npz = image_path(self.root, tile)
        arrays = _load_npz(npz, ("s1", "s2"), "image")
        s2 = arrays["s2"]
        hw = tuple(label.shape) if label is not None else (tuple(s2.shape[1:3]) if s2.ndim == 4 else ())
        radar, radar_dates = self._series(arrays["s1"], "s1", tile, npz, hw)
        optical, optical_dates = self._series(s2, "s2", tile, npz, hw)
        sample = {"radar": radar, "radar_dates": radar_dates, "optical": optical, "optical_dates": optical_dates, "id": tile}
        if label is not None:
            sample["label"] = label
        return sample
