"""Batch collation for the batch formats of ``docs/batch_formats.md`` (shared by tasks and the mock tasks).

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


def _pad_hw(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pad the last two dims to ``h × w``: NaN for floating tensors (not observed), 0 otherwise."""
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    fill = float("nan") if x.is_floating_point() else 0
    return torch.nn.functional.pad(x, (0, pw, 0, ph), value=fill)


def window_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch multi-source windows: per source key, fields stacked with H and W NaN-padded to the
    largest of the batch; a source absent from a sample is all NaN with ``avail`` False."""
    keys = sorted({k for it in items for k in it["sources"]})
    sources: dict[str, dict[str, torch.Tensor]] = {}
    for key in keys:
        present = [it["sources"][key] for it in items if key in it["sources"]]
        ref = present[0]
        spatial = [f for f, v in ref.items() if v.ndim >= 2]
        h = max(s[f].shape[-2] for s in present for f in spatial) if spatial else 0
        w = max(s[f].shape[-1] for s in present for f in spatial) if spatial else 0
        fields: dict[str, list[torch.Tensor]] = {f: [] for f in ref}
        for it in items:
            src = it["sources"].get(key)
            for f, v in ref.items():
                if src is not None:
                    value = src[f]
                elif f == "avail":
                    value = torch.tensor(False)
                else:
                    value = torch.full_like(v, float("nan")) if v.is_floating_point() else torch.zeros_like(v)
                fields[f].append(_pad_hw(value, h, w) if f in spatial else value)
        sources[key] = {f: torch.stack(v) for f, v in fields.items()}
    out: dict[str, Any] = {"sources": sources}
    for key in items[0]:
        if key != "sources":
            values = [it[key] for it in items]
            out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
