"""Random square crops of SITS samples, split into *choosing* a window and *applying* it.

Why split: a reader that memory-maps its arrays (``tasks.pastis_r.dataset``) reads only the
chosen window of the chosen dates, so the window has to be known before the images are decoded;
it depends only on the label map and the sample's size. Choosing and applying in one go
(``tasks.sits.task.random_crop``) gives the same window from the same generator.
"""

from __future__ import annotations

from typing import Any

import torch

Window = tuple[int, int, int, int]  # y, x, height, width


def crop_window(label: torch.Tensor | None, hw: tuple[int, int], size: int, ignore_index: int,
                generator: torch.Generator | None = None) -> Window | None:
    """A random ``size × size`` window of an ``hw`` grid (None: the grid is no larger than ``size``).

    With a label, only windows holding at least one labelled pixel are drawn (as Rustowicz et al.
    keep only 32 × 32 grids with a label): an all-ignored crop would give an undefined loss.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    h, w = hw
    if h <= size and w <= size:
        return None
    ch, cw = min(size, h), min(size, w)
    if label is not None:
        valid = (label != ignore_index).to(torch.int64)
        integral = torch.nn.functional.pad(valid.cumsum(0).cumsum(1), (1, 0, 1, 0))
        counts = integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw] + integral[:-ch, :-cw]
        offsets = (counts > 0).nonzero()
        if len(offsets) == 0:  # no labelled pixel anywhere: any window (the loss ignores it)
            offsets = torch.ones_like(counts).nonzero()
    else:
        offsets = torch.ones(h - ch + 1, w - cw + 1, dtype=torch.int64).nonzero()
    y, x = offsets[int(torch.randint(len(offsets), (1,), generator=generator))].tolist()
    return y, x, ch, cw


def crop_fields(sample: dict[str, Any], hw: tuple[int, int], window: Window | None) -> dict[str, Any]:
    """``sample`` with every spatial field (last two dimensions ``hw``) cut to ``window``."""
    if window is None:
        return sample
    y, x, ch, cw = window
    out = dict(sample)
    for key, value in sample.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and tuple(value.shape[-2:]) == tuple(hw):
            out[key] = value[..., y:y + ch, x:x + cw]
    return out
