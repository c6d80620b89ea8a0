"""Samples of the task: multi-source windows (t0 − δmax, t0] of one storm, and their batches.

* Candidates: every observation time t0 of a storm; the window holds the storm's observations with
  t0 − δmax < t ≤ t0; a candidate needs at least ``min_sources`` distinct sources.
* Training (train/val splits): every candidate; up to 3 observations drawn at random per epoch, a
  pure function of (seed, window, epoch) so data-loading workers draw what one process would
  (val: drawn once, seeded by the window, so validation is repeatable); no target (the entry
  chooses what to hide).
* Evaluation (test split): the earliest eligible reference of every 6 h bin (floor of t0 to 6 h
  since the epoch) of every storm; the target is drawn once per sample among all observations of
  the window with a seed fixed by ``TARGET_SEED`` and the sample id, so it does not depend on the
  cell; the inputs are the other observations, closest to t0 first, at most ``max_sources − 1``
  of them ("max 2" counts the target). Cells of one section select the same references, hence
  score exactly the same (sample, target) pairs.

Item layout (``docs/batch_formats.md``): ``sources[key]`` (key = source name) with ``values [4, H, W]``
normalized with the source's training statistics (NaN where missing), ``coords [2, H, W]``
(lat, lon in degrees, lon in [-180, 180)), ``dt`` (hours before t0, ≥ 0), ``landmask [H, W]``,
``characs [K]``, ``avail``; plus ``target`` (key or None), ``id``, ``storm``, ``t0`` and, for
evaluation items, ``target_mean``/``target_std`` [4] (Kelvin statistics of the target source).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.loading import split_key

from .store import Store

TARGET_SEED = 123
BIN_H = 6
MAX_TRAIN_SOURCES = 3


@dataclass(frozen=True)
class Window:
    storm: str
    t0: float
    rows: tuple[int, ...]  # index rows, closest to t0 first

    @property
    def id(self) -> str:
        return f"{self.storm}@{dt.datetime.fromtimestamp(round(self.t0), tz=dt.timezone.utc):%Y%m%dT%H%M%S}"


def candidates(store: Store, split: str, window_h: float, min_sources: int) -> list[Window]:
    """Every (storm, t0) of ``split`` whose window holds at least ``min_sources`` distinct sources."""
    idx = store.index
    sel = idx[idx["split"] == split]
    out: list[Window] = []
    delta = window_h * 3600.0
    for storm, group in sel.groupby("atcf_id", sort=True):
        times = group["time"].to_numpy(dtype=np.float64)
        rows = group.index.to_numpy()
        sources = group["source"].to_numpy()
        for t0 in np.unique(times):
            inside = (times > t0 - delta) & (times <= t0)
            if len(set(sources[inside])) < min_sources:
                continue
            order = np.lexsort((sources[inside], t0 - times[inside]))  # closest first, ties by source name
            out.append(Window(str(storm), float(t0), tuple(int(r) for r in rows[inside][order])))
    return out


def one_per_bin(windows: list[Window], bin_h: float = BIN_H) -> list[Window]:
    """The earliest window of every ``bin_h`` bin of every storm."""
    seen: set[tuple[str, int]] = set()
    out = []
    for w in sorted(windows, key=lambda w: (w.storm, w.t0)):
        key = (w.storm, int(np.floor(w.t0 / (bin_h * 3600))))
        if key not in seen:
            seen.add(key)
            out.append(w)
    return out


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def choose_target(w: Window, seed: int = TARGET_SEED) -> int:
    """Index row of the target: uniform over the window's observations, fixed by the sample id."""
    rng = np.random.default_rng(_hash_int(f"{seed}:{w.id}"))
    return w.rows[int(rng.integers(len(w.rows)))]


def cap(windows: list[Window], n: int | None) -> list[Window]:
    """A deterministic subset of at most ``n`` windows (smallest id hashes), in the original order."""
    if n is None or len(windows) <= n:
        return windows
    keep = set(sorted(range(len(windows)), key=lambda i: _hash_int(f"cap:{windows[i].id}"))[:n])
    return [w for i, w in enumerate(windows) if i in keep]


def _crop_box(arr: np.ndarray, centre: tuple[float, float], size: int | None) -> tuple[slice, slice]:
    """Drop all-NaN border rows/columns, then (if larger than ``size``) a window centred on the storm."""
    valid = np.isfinite(arr[:4]).any(0)
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if size is None or (r1 - r0 <= size and c1 - c0 <= size):
        return slice(r0, r1), slice(c0, c1)
    lat, lon = arr[4, r0:r1, c0:c1], arr[5, r0:r1, c0:c1]
    dlon = (lon - centre[1] + 180) % 360 - 180
    dist = (lat - centre[0]) ** 2 + (dlon * np.cos(np.radians(centre[0]))) ** 2
    ci, cj = np.unravel_index(np.nanargmin(np.where(np.isfinite(dist), dist, np.inf)), dist.shape)

    def span(c: int, lo: int, hi: int) -> slice:
        if hi - lo <= size:
            return slice(lo, hi)
        start = int(np.clip(lo + c - size // 2, lo, hi - size))
        return slice(start, start + size)

    return span(int(ci), int(r0), int(r1)), span(int(cj), int(c0), int(c1))


def source_item(store: Store, row: int, t0: float, crop: int | None) -> dict[str, torch.Tensor]:
    rec = store.index.loc[row]
    arr = store.array(row)
    rs, cs = _crop_box(arr, (float(rec["storm_lat"]), float(rec["storm_lon"])), crop)
    mean, std = store.norm(rec["source"])
    values = (np.asarray(arr[:4, rs, cs]) - mean[:, None, None]) / std[:, None, None]
    return {
        "values": torch.from_numpy(np.array(values, dtype=np.float32)),
        "coords": torch.from_numpy(np.array(arr[4:6, rs, cs], dtype=np.float32)),
        "dt": torch.tensor((t0 - float(rec["time"])) / 3600.0, dtype=torch.float32),
        "landmask": torch.from_numpy(np.array(arr[6, rs, cs], dtype=np.float32)),
        "characs": torch.tensor(store.characs[rec["source"]], dtype=torch.float32),
        "avail": torch.tensor(True),
    }


def make_item(store: Store, w: Window, rows: list[int], crop: int | None, window_h: float, target_row: int | None = None) -> dict[str, Any]:
    sources: dict[str, dict[str, torch.Tensor]] = {}
    target = None
    for row in rows:
        name = store.index.at[row, "source"]
        key, k = name, 1
        while key in sources:  # repeated source in one window (only without thinning)
            key, k = f"{name}#{k}", k + 1
        sources[key] = source_item(store, row, w.t0, crop)
        if row == target_row:
            target = key
    item: dict[str, Any] = {"sources": sources, "target": target, "id": w.id, "storm": w.storm, "t0": w.t0,
                            "window_h": float(window_h), "n_available": len(w.rows)}
    if target_row is not None:
        mean, std = store.norm(store.index.at[target_row, "source"])
        item["target_mean"], item["target_std"] = torch.from_numpy(mean.copy()), torch.from_numpy(std.copy())
    return item


class TrainWindows(torch.utils.data.Dataset):
    """Training windows: up to 3 observations at random (redrawn every epoch unless ``fixed``).

    Epoch-seeded (``benchmark.loading``): the subset read for key ``(epoch, i)`` is a pure function
    of (seed, window id, epoch), so worker processes, persistent or re-forked each epoch, draw
    exactly what a single process would; ``windows[i]`` is epoch 0.
    """

    epoch_seeded = True

    def __init__(self, store: Store, windows: list[Window], window_h: float, crop: int | None, seed: int, fixed: bool = False,
                 max_sources: int = MAX_TRAIN_SOURCES):
        self.store, self.windows, self.window_h, self.crop = store, windows, window_h, crop
        self.seed, self.fixed, self.max_sources = seed, fixed, max_sources

    def __len__(self) -> int:
        return len(self.windows)

    def draw(self, epoch: int, i: int) -> list[int]:
        """Store rows of window ``i`` read at ``epoch`` (the same at every epoch when ``fixed``)."""
        w = self.windows[i]
        stream = [self.seed, _hash_int(w.id) % 2**32] + ([] if self.fixed else [epoch])
        chosen = set(np.random.default_rng(stream).permutation(len(w.rows))[: self.max_sources].tolist())
        return [r for j, r in enumerate(w.rows) if j in chosen]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = split_key(key)
        return make_item(self.store, self.windows[i], self.draw(epoch, i), self.crop, self.window_h)


class EvalWindows(torch.utils.data.Dataset):
    """Evaluation samples: fixed target, inputs closest to t0 first, capped by ``max_sources``."""

    def __init__(self, store: Store, windows: list[Window], window_h: float, crop: int | None, max_sources: int | None):
        self.store, self.windows, self.window_h, self.crop = store, windows, window_h, crop
        self.plan = []
        for w in windows:
            target = choose_target(w)
            others = [r for r in w.rows if r != target]
            if max_sources is not None:
                others = others[: max_sources - 1]
            self.plan.append((target, others))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        target, others = self.plan[i]
        return make_item(self.store, self.windows[i], [target, *others], self.crop, self.window_h, target_row=target)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch windows: per source key, NaN-pad H and W to the batch maximum; absent sources are
    all-NaN with ``avail`` False. ``target_size`` = (H, W) of ``task.target(batch)``: the largest
    padded size among the target keys of the batch."""
    keys = sorted({k for it in items for k in it["sources"]})
    b = len(items)
    sources: dict[str, dict[str, torch.Tensor]] = {}
    for key in keys:
        present = [it["sources"][key] for it in items if key in it["sources"]]
        h = max(s["values"].shape[-2] for s in present)
        w = max(s["values"].shape[-1] for s in present)
        c, k = present[0]["values"].shape[0], present[0]["characs"].shape[0]
        out = {"values": torch.full((b, c, h, w), float("nan")), "coords": torch.full((b, 2, h, w), float("nan")),
               "landmask": torch.full((b, h, w), float("nan")), "dt": torch.full((b,), float("nan")),
               "characs": torch.full((b, k), float("nan")), "avail": torch.zeros(b, dtype=torch.bool)}
        for i, it in enumerate(items):
            s = it["sources"].get(key)
            if s is None:
                continue
            hh, ww = s["values"].shape[-2:]
            out["values"][i, :, :hh, :ww] = s["values"]
            out["coords"][i, :, :hh, :ww] = s["coords"]
            out["landmask"][i, :hh, :ww] = s["landmask"]
            out["dt"][i], out["characs"][i], out["avail"][i] = s["dt"], s["characs"], True
        sources[key] = out
    batch: dict[str, Any] = {"sources": sources, "target": [it["target"] for it in items], "id": [it["id"] for it in items],
                             "storm": [it["storm"] for it in items], "t0": torch.tensor([it["t0"] for it in items], dtype=torch.float64),
                             "window_h": torch.tensor([it["window_h"] for it in items]),
                             "n_available": torch.tensor([it["n_available"] for it in items])}
    if all("target_mean" in it for it in items):
        batch["target_mean"] = torch.stack([it["target_mean"] for it in items])
        batch["target_std"] = torch.stack([it["target_std"] for it in items])
    targets = {t for t in batch["target"] if t is not None}
    if targets:
        batch["target_size"] = torch.tensor([max(sources[t]["values"].shape[-2] for t in targets),
                                             max(sources[t]["values"].shape[-1] for t in targets)])
    return batch
