"""From a task batch (per source key, NaN-padded) to the model's *slots*.

Sources are symmetric inside MoTiF (shared weights, no source index), so a batch is re-packed
per sample: slot 0 holds the sample's target, slots 1… its other available sources. A batch then
has as many slots as its richest sample has sources (≤ 3 in training) instead of the union of
the source keys over the batch (up to 11), and a slot a sample does not fill is *missing*
(``present`` False): it is masked out of the cross-source attention.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

SLOT_LAYOUT = "slot_layout"  # batch key of ``slot_layout(batch)``


@dataclass
class Slots:
    values: list[Tensor]  # [B, C, H, W] normalized, NaN where not observed (slot 0: the target)
    coords: list[Tensor]  # [B, 2, H, W] lat, lon in degrees, NaN outside the swath
    landmask: list[Tensor]  # [B, H, W]
    dt: Tensor  # [B, S] hours before t0 (NaN where missing)
    characs: Tensor  # [B, S, K]
    present: Tensor  # [B, S] bool
    keys: list[list[str]]  # batch keys of each sample, in slot order
    size: tuple[int, int]  # (H, W) of the prediction the task expects
    patch: int  # H and W of every slot are multiples of it
    extents: list[list[tuple[int, int]]] | None = None  # per sample, per slot: (H, W) of its swath, from the host

    @property
    def batch_size(self) -> int:
        return int(self.present.shape[0])

    def select(self, i: int) -> Slots:
        """Sample ``i`` alone, its slots cropped to its own sources (no padding, no missing slot)."""
        n = len(self.keys[i])
        values, coords, land = [], [], []
        for j in range(n):
            h, w = self.extents[i][j] if self.extents is not None else swath_extent(self.coords[j][i])
            patch_h, patch_w = _round(h, self.patch), _round(w, self.patch)
            values.append(self.values[j][i:i + 1, :, :patch_h, :patch_w])
            coords.append(self.coords[j][i:i + 1, :, :patch_h, :patch_w])
            land.append(self.landmask[j][i:i + 1, :patch_h, :patch_w])
        extents = None if self.extents is None else [self.extents[i]]
        return Slots(values, coords, land, self.dt[i:i + 1, :n], self.characs[i:i + 1, :n], self.present[i:i + 1, :n],
                     [self.keys[i]], self.size, self.patch, extents)

    def repeat(self, r: int) -> Slots:
        """The batch repeated ``r`` times along B (realization-major: r blocks of B samples)."""
        if r == 1:
            return self
        rep = lambda t: t.repeat(r, *([1] * (t.ndim - 1)))  # noqa: E731
        return dataclasses.replace(
            self, values=[rep(v) for v in self.values], coords=[rep(c) for c in self.coords],
            landmask=[rep(m) for m in self.landmask], dt=rep(self.dt), characs=rep(self.characs),
            present=rep(self.present), keys=self.keys * r)


def swath_extent(coords: Tensor) -> tuple[int, int]:
    """(H, W) of the smallest top-left box holding every finite pixel of ``coords [2, H, W]`` (at
    least 1 × 1). Reads the tensor: on a device it waits, so batches carry ``slot_layout`` instead."""
    ok = torch.isfinite(coords).all(0)
    rows, cols = ok.any(1).nonzero(), ok.any(0).nonzero()
    return (int(rows.max()) + 1 if len(rows) else 1, int(cols.max()) + 1 if len(cols) else 1)


def slot_layout(batch: Mapping[str, Any]) -> dict[str, Any]:
    """What packing needs to know as Python values: per source key, which samples have it and the
    (H, W) of each sample's swath, and the target size. Computed on the host batch (collate, or
    before ``sample`` moves it), so packing on the device never reads a tensor back."""
    layout: dict[str, Any] = {
        "avail": {k: [bool(a) for a in s["avail"].tolist()] for k, s in batch["sources"].items()},
        "extent": {k: [swath_extent(c) for c in s["coords"]] for k, s in batch["sources"].items()},
    }
    if "target_size" in batch:
        layout["target_size"] = (int(batch["target_size"][0]), int(batch["target_size"][1]))
    return layout


@dataclass(frozen=True)
class SlotLayoutCollate:
    """``collate`` that adds ``slot_layout`` to the batch under ``SLOT_LAYOUT`` (plain Python values
    stay on the host when the batch moves). A class, not a closure, so spawned workers can pickle it."""

    collate: Callable[[list[Any]], Any] | None

    def __call__(self, items: list[Any]) -> Any:
        batch = (self.collate or torch.utils.data.default_collate)(items)
        batch[SLOT_LAYOUT] = slot_layout(batch)
        return batch


def availability(batch: Mapping[str, Any]) -> dict[str, list[bool]]:
    """Per source key, which samples have it: from the host layout when the batch carries one, else
    one host transfer per key (not one per sample)."""
    if SLOT_LAYOUT in batch:
        return batch[SLOT_LAYOUT]["avail"]
    return {k: [bool(a) for a in s["avail"].tolist()] for k, s in batch["sources"].items()}


def available_keys(avail: Mapping[str, list[bool]], i: int) -> list[str]:
    """Source keys present in sample ``i`` (sorted, so the packing is deterministic)."""
    return sorted(k for k, a in avail.items() if a[i])


def random_targets(batch: Mapping[str, Any], generator: torch.Generator | None = None) -> list[str]:
    """One available source per sample, uniformly (the self-supervised training target)."""
    avail = availability(batch)
    targets = []
    for i in range(len(next(iter(avail.values())))):
        keys = available_keys(avail, i)
        if not keys:
            raise ValueError(f"sample {i} of the batch has no available source")
        targets.append(keys[torch.randint(len(keys), (), generator=generator).tolist()])  # a host draw, no device
    return targets


def _round(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def pack(batch: Mapping[str, Any], targets: Sequence[str], patch: int) -> Slots:
    """Slots of ``batch`` with ``targets[i]`` in slot 0; H and W of every slot are NaN-padded to a
    multiple of ``patch``."""
    sources = batch["sources"]
    avail = availability(batch)
    b = len(targets)
    order = []
    for i, t in enumerate(targets):
        if t not in sources or not avail[t][i]:
            raise ValueError(f"sample {i}: target {t!r} is not an available source of the batch")
        order.append([t] + [k for k in available_keys(avail, i) if k != t])
    n_slots = max(len(o) for o in order)
    ref = sources[targets[0]]
    device, c, k = ref["values"].device, ref["values"].shape[1], ref["characs"].shape[-1]
    values, coords, land = [], [], []
    dt = torch.full((b, n_slots), float("nan"), device=device)
    characs = torch.zeros(b, n_slots, k, device=device)
    present = torch.zeros(b, n_slots, dtype=torch.bool, device=device)
    for j in range(n_slots):
        users = [(i, o[j]) for i, o in enumerate(order) if j < len(o)]
        h = max(sources[key]["values"].shape[-2] for _, key in users)
        w = max(sources[key]["values"].shape[-1] for _, key in users)
        hp, wp = _round(h, patch), _round(w, patch)
        v = torch.full((b, c, hp, wp), float("nan"), device=device)
        xy = torch.full((b, 2, hp, wp), float("nan"), device=device)
        m = torch.full((b, hp, wp), float("nan"), device=device)
        for i, key in users:
            s = sources[key]
            hh, ww = s["values"].shape[-2:]
            v[i, :, :hh, :ww] = s["values"][i]
            xy[i, :, :hh, :ww] = s["coords"][i]
            m[i, :hh, :ww] = s["landmask"][i]
            dt[i, j] = s["dt"][i]
            characs[i, j] = s["characs"][i]
            present[i, j] = True
        values.append(v)
        coords.append(xy)
        land.append(m)
    layout = batch.get(SLOT_LAYOUT)
    if layout is not None and "target_size" in layout:
        size = layout["target_size"]
    elif "target_size" in batch:
        size = (int(batch["target_size"][0]), int(batch["target_size"][1]))
    else:  # a batch without target_size: the targets' own (padded) grid
        size = (max(sources[t]["values"].shape[-2] for t in set(targets)), max(sources[t]["values"].shape[-1] for t in set(targets)))
    if size[0] > values[0].shape[-2] or size[1] > values[0].shape[-1]:
        raise ValueError(f"target size {size} exceeds the targets' grid {tuple(values[0].shape[-2:])}")
    extents = None if layout is None else [[layout["extent"][key][i] for key in o] for i, o in enumerate(order)]
    return Slots(values, coords, land, dt, characs, present, order, size, patch, extents)
