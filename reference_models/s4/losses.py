"""S4's pre-training losses: space-time InfoNCE on encoder features of two views, masked L1.

Views. Each modality (or, for the single-modal ablation, each augmented copy) is cut to its own
random crop with its own random flips (``ViewGeometry``): crops are the same size, offsets are
multiples of the encoder's stride (4), so every cell of the encoder output of one view maps to
exactly one cell of the original patch, and from there to a cell of the other view (or to none,
outside the overlap). A positive pair is one original (t, h, w) cell seen by both views; which
tensor position it occupies differs between the views, so a code for "where in the tensor" (or
"how far from the border") cannot find the positive: only content can.

Sampling. Contrasting all cells against all would not fit, so each step draws ``K`` encoder cells
of view a, **the same K tensor positions for every sample of the batch** (so the other samples
supply negatives at the tensor positions of one's own cells), and maps them into view b. Rows
whose cell falls outside the other view's crop, or on a date that is not valid in both views,
are dropped from the loss by a weight (no host synchronisation). Cells of the same sample within
``radius`` cells in space and ``time_radius`` in time of the anchor are not used as its negatives:
they are most likely the same parcel on an adjacent date, i.e. false negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

STRIDE = 4  # the encoder's down-sampling in space and time (two stride-2 poolings)


@dataclass
class ViewGeometry:
    """Per-sample crop offsets (pixels, multiples of STRIDE) and flips of one view; crop size."""

    oy: torch.Tensor  # [B] long
    ox: torch.Tensor  # [B] long
    fy: torch.Tensor  # [B] bool
    fx: torch.Tensor  # [B] bool
    ch: int
    cw: int

    @staticmethod
    def identity(b: int, height: int, width: int, device: torch.device | str = "cpu") -> ViewGeometry:
        zero = torch.zeros(b, dtype=torch.long, device=device)
        return ViewGeometry(zero, zero, zero.bool(), zero.bool(), height, width)


def crop_size(side: int, fraction: float) -> int:
    """The crop side for a patch side: ``fraction`` of it rounded down to a multiple of STRIDE, at
    least STRIDE and at most the largest multiple of STRIDE that fits (so every encoder cell of a
    view, flipped or not, is a whole STRIDE-pixel cell of the patch); a side below STRIDE is kept
    whole (one cell)."""
    if side < STRIDE:
        return side
    return max(STRIDE, min(STRIDE * int(fraction * side // STRIDE), STRIDE * (side // STRIDE)))


def random_geometry(b: int, height: int, width: int, fraction: float, flips: bool, device: torch.device | str) -> ViewGeometry:
    """Random crops (offsets multiples of STRIDE) and, if ``flips``, random vertical/horizontal flips."""
    ch, cw = crop_size(height, fraction), crop_size(width, fraction)

    def offsets(side: int, crop: int) -> torch.Tensor:
        n = (side - crop) // STRIDE + 1
        return torch.randint(0, n, (b,), device=device) * STRIDE

    def coin() -> torch.Tensor:
        return torch.rand(b, device=device) < 0.5 if flips else torch.zeros(b, dtype=torch.bool, device=device)

    return ViewGeometry(offsets(height, ch), offsets(width, cw), coin(), coin(), ch, cw)


def apply_geometry(x: torch.Tensor, g: ViewGeometry) -> torch.Tensor:
    """``x [B, T, C, H, W]`` → the view ``[B, T, C, ch, cw]`` (crop, then flips)."""
    b = x.shape[0]
    ar_y = torch.arange(g.ch, device=x.device)
    ar_x = torch.arange(g.cw, device=x.device)
    rows = g.oy[:, None] + torch.where(g.fy[:, None], g.ch - 1 - ar_y, ar_y)
    cols = g.ox[:, None] + torch.where(g.fx[:, None], g.cw - 1 - ar_x, ar_x)
    bi = torch.arange(b, device=x.device)[:, None, None]
    return x[bi, :, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 4, 1, 2)


def cells(side: int) -> int:
    """Encoder cells along a side of ``side`` pixels (the encoder pads to a multiple of STRIDE)."""
    return -(-side // STRIDE)


def view_to_patch(i: torch.Tensor, offset: torch.Tensor, flip: torch.Tensor, n: int) -> torch.Tensor:
    """Encoder cell ``i`` of a view (``n`` cells) → cell of the original patch."""
    return offset // STRIDE + torch.where(flip, n - 1 - i, i)


def patch_to_view(g: torch.Tensor, offset: torch.Tensor, flip: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell ``g`` of the original patch → (cell of the view, whether it lies inside the view)."""
    i = g - offset // STRIDE
    i = torch.where(flip, n - 1 - i, i)
    return i.clamp(0, n - 1), (i >= 0) & (i < n)


@dataclass
class PairedCells:
    """Rows of the contrastive loss: flat indices into each view's encoder grid ``[B, T, h, w]``,
    the row's weight (1 = usable), and its sample / original (t, y, x) cell for the exclusions."""

    index_a: torch.Tensor
    index_b: torch.Tensor
    weight: torch.Tensor
    sample: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor


def sample_pairs(ga: ViewGeometry, gb: ViewGeometry, valid: torch.Tensor, n_positions: int) -> PairedCells:
    """``K = n_positions // B`` cells of view a, shared by the batch, and their cells in view b.

    ``valid [B, Tc]``: encoder-resolution dates valid in both views.
    """
    b, tc = valid.shape
    ha, wa, hb, wb = cells(ga.ch), cells(ga.cw), cells(gb.ch), cells(gb.cw)
    total = tc * ha * wa
    k = max(1, min(total, n_positions // b))
    flat = torch.randperm(total, device=valid.device)[:k]  # the same cells for every sample
    t, rest = flat // (ha * wa), flat % (ha * wa)
    ia, ja = rest // wa, rest % wa
    expand = lambda v: v[None, :].expand(b, k)  # noqa: E731
    t, ia, ja = expand(t), expand(ia), expand(ja)
    col = lambda v: v[:, None]  # noqa: E731
    gy = view_to_patch(ia, col(ga.oy), col(ga.fy), ha)
    gx = view_to_patch(ja, col(ga.ox), col(ga.fx), wa)
    ib, in_y = patch_to_view(gy, col(gb.oy), col(gb.fy), hb)
    jb, in_x = patch_to_view(gx, col(gb.ox), col(gb.fx), wb)
    samples = torch.arange(b, device=valid.device)[:, None].expand(b, k)
    weight = in_y & in_x & valid.gather(1, t)
    index_a = ((samples * tc + t) * ha + ia) * wa + ja
    index_b = ((samples * tc + t) * hb + ib) * wb + jb
    return PairedCells(index_a.reshape(-1), index_b.reshape(-1), weight.reshape(-1), samples.reshape(-1),
                       t.reshape(-1), gy.reshape(-1), gx.reshape(-1))


def gather_rows(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``z [B, D, T, h, w]`` → ``[N, D]`` rows at flat ``[B, T, h, w]`` indices."""
    return z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1])[index]


def false_negatives(p: PairedCells, radius: int, time_radius: int) -> torch.Tensor:
    """``[N, N]``: True where column j is in the anchor i's own neighbourhood (same sample, within
    ``radius`` cells in space and ``time_radius`` in time) but is not its positive."""
    near = ((p.sample[:, None] == p.sample[None, :]) & ((p.t[:, None] - p.t[None, :]).abs() <= time_radius)
            & ((p.y[:, None] - p.y[None, :]).abs() <= radius) & ((p.x[:, None] - p.x[None, :]).abs() <= radius))
    return near & ~torch.eye(len(p.sample), dtype=torch.bool, device=near.device)


def paired_infonce(a: torch.Tensor, b: torch.Tensor, p: PairedCells, tau: float, radius: int = 1, time_radius: int = 1) -> torch.Tensor:
    """Symmetric InfoNCE between projected rows ``a, b [N, D]`` (row i of ``a`` ↔ row i of ``b``),
    cosine similarity / ``tau`` in float32; unusable rows and false negatives are masked."""
    a = F.normalize(a.float(), dim=1)
    b = F.normalize(b.float(), dim=1)
    with torch.autocast(device_type=a.device.type, enabled=False):
        logits = a @ b.T / tau
    w = p.weight
    blocked = false_negatives(p, radius, time_radius) | ~(w[:, None] & w[None, :])
    blocked = blocked & ~torch.eye(len(w), dtype=torch.bool, device=w.device)
    logits = logits.masked_fill(blocked, float("-inf"))
    target = torch.arange(len(w), device=w.device)
    per_row = 0.5 * (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none"))
    per_row = torch.where(w, per_row, torch.zeros((), device=w.device))  # an unusable row adds nothing, not even a NaN
    return per_row.sum() / w.sum().clamp_min(1)


def encoder_dates(mask: torch.Tensor) -> torch.Tensor:
    """Dates ``mask [B, T]`` at the encoder's time resolution: a cell is valid if any of its
    STRIDE dates is (the encoder pads the series to a multiple of STRIDE)."""
    t = mask.shape[1]
    padded = F.pad(mask.float(), (0, (-t) % STRIDE))
    return padded.reshape(mask.shape[0], -1, STRIDE).amax(2).bool()


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over valid dates. ``pred/target [B, C, T, H, W]``, ``mask [B, T]``."""
    m = mask.to(pred.dtype)[:, None, :, None, None]
    denom = (m.sum() * pred.shape[1] * pred.shape[3] * pred.shape[4]).clamp_min(1)
    return ((pred - target).abs() * m).sum() / denom
