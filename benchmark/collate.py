"""Batch collation for the sample formats of DESIGN.md §3 (shared by tasks and the mock tasks).

SITS samples have different numbers of dates: time is zero-padded to the longest series of the
batch and ``<modality>_mask [B, T]`` says which dates are real. Multi-source windows have
different sets of sources: an absent source is NaN-filled with ``avail`` False.
"""

from __future__ import annotations

from typing import Any

import torch

SITS_MODALITIES = ("radar", "optical")


def sits_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack SITS samples, zero-padding time and adding ``<modality>_mask`` [B, T]."""
    out: dict[str, Any] = {}
    for mod in SITS_MODALITIES:
        if mod not in items[0]:
            continue
        t_max = max(it[mod].shape[0] for it in items)
        series, dates, masks = [], [], []
        for it in items:
            t = it[mod].shape[0]
            pad = t_max - t
            series.append(torch.cat([it[mod], it[mod].new_zeros((pad, *it[mod].shape[1:]))]))
            dates.append(torch.cat([it[f"{mod}_dates"], it[f"{mod}_dates"].new_zeros(pad)]))
            masks.append(torch.arange(t_max) < t)
        out[mod], out[f"{mod}_dates"], out[f"{mod}_mask"] = torch.stack(series), torch.stack(dates), torch.stack(masks)
    for key in items[0]:
        if key in out or key.endswith("_dates") or key in SITS_MODALITIES:
            continue
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


def window_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch multi-source windows: per source key, stacked fields; absent sources are NaN, avail False."""
    keys = sorted({k for it in items for k in it["sources"]})
    sources: dict[str, dict[str, torch.Tensor]] = {}
    for key in keys:
        ref = next(it["sources"][key] for it in items if key in it["sources"])
        fields: dict[str, list[torch.Tensor]] = {f: [] for f in ref}
        for it in items:
            src = it["sources"].get(key)
            for f, v in ref.items():
                if src is not None:
                    fields[f].append(src[f])
                elif f == "avail":
                    fields[f].append(torch.tensor(False))
                else:
                    fields[f].append(torch.full_like(v, float("nan")) if v.is_floating_point() else torch.zeros_like(v))
        sources[key] = {f: torch.stack(v) for f, v in fields.items()}
    out: dict[str, Any] = {"sources": sources}
    for key in items[0]:
        if key != "sources":
            values = [it[key] for it in items]
            out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
