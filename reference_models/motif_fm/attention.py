"""The two attentions of a MoTiF block, both through ``scaled_dot_product_attention``.

A source is a token grid ``[B, h, w, D]`` with a coordinate embedding ``[B, h, w, Dc]`` that is
never updated: coordinates enter the attention scores only, as a second (query, key) pair whose
dot product is added to the values' one with a learned weight.

* ``CrossSourceAttention``: every source's grid is cut into ``window × window`` token windows;
  queries and keys come from the window means, the value of a window is the concatenation of its
  tokens, and a window attends only to windows of *other* sources that are present in the sample
  (a missing source is masked out as a key, so its content cannot leak into the others).
* ``SourceWindowAttention``: Swin attention inside one source, with a learned relative-position
  bias; on shifted blocks the grid is rolled by half a window before attention and rolled back
  after it (the authors' code forgot the roll-back).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (written out: ``nn.RMSNorm`` needs torch 2.4)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype) * self.weight


def _heads(x: Tensor, heads: int) -> Tensor:
    """[..., L, H·d] -> [..., H, L, d]."""
    *lead, length, dim = x.shape
    return x.reshape(*lead, length, heads, dim // heads).transpose(-3, -2)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``[B, h, w, ...]`` at the bottom/right so h and w are multiples of ``multiple``."""
    h, w = x.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    pad = [0, 0] * (x.ndim - 3) + [0, pw, 0, ph]
    return F.pad(x, pad)


def to_windows(x: Tensor, window: int) -> Tensor:
    """[B, H, W, ...] (multiples of ``window``) -> [B, nH·nW, window², ...]."""
    b, h, w = x.shape[:3]
    rest = x.shape[3:]
    x = x.reshape(b, h // window, window, w // window, window, *rest)
    x = x.transpose(2, 3)
    return x.reshape(b, (h // window) * (w // window), window * window, *rest)


def from_windows(x: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of ``to_windows`` for a padded grid of size ``h × w``."""
    b = x.shape[0]
    rest = x.shape[3:]
    x = x.reshape(b, h // window, w // window, window, window, *rest)
    return x.transpose(2, 3).reshape(b, h, w, *rest)


class CrossSourceAttention(nn.Module):
    """Windowed attention across sources (same-source windows and missing sources masked out)."""

    def __init__(self, dim: int, coords_dim: int, heads: int, window: int):
        super().__init__()
        if dim % heads or coords_dim % heads:
            raise ValueError(f"dims ({dim}, {coords_dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.window = dim, heads, window
        self.qk_values = nn.Linear(dim, 2 * dim)
        self.qk_coords = nn.Linear(coords_dim, 2 * coords_dim)
        self.norm_values = RMSNorm(dim // heads)
        self.norm_coords = RMSNorm(coords_dim // heads)
        self.coords_weight = nn.Parameter(torch.ones(()))  # weight of the coordinate term in the score
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _static(self, coords: list[Tensor], token_valid: list[Tensor], present: Tensor) -> dict[str, Any]:
        """Everything that depends on coordinates, swath extents and presence only."""
        cw, heads = self.window, self.heads
        counts, means_c, key_ok, owner = [], [], [], []
        for s, (c, ok) in enumerate(zip(coords, token_valid, strict=True)):
            real = to_windows(pad_to_multiple(torch.ones_like(ok[..., None], dtype=c.dtype), cw), cw)  # 0 on window padding
            count = real.sum(2).clamp_min(1.0)  # [B, n, 1]
            counts.append(count)
            means_c.append(to_windows(pad_to_multiple(c, cw), cw).sum(2) / count)
            inside = to_windows(pad_to_multiple(ok[..., None], cw), cw)[..., 0].any(-1)  # [B, n]
            key_ok.append(inside & present[:, s, None])
            owner.append(torch.full((count.shape[1],), s, device=c.device))
        qc, kc = (self.norm_coords(_heads(t, heads)) for t in self.qk_coords(torch.cat(means_c, 1)).chunk(2, -1))
        own = torch.cat(owner)
        allowed = (own[:, None] != own[None, :])[None] & torch.cat(key_ok, 1)[:, None, :]  # [B, L, L]
        lonely = ~allowed.any(-1)  # queries with nothing to attend to (no other present source)
        allowed = allowed | lonely[..., None]
        return {"counts": counts, "qc": qc * (self.coords_weight / math.sqrt(qc.shape[-1])), "kc": kc,
                "mask": allowed[:, None], "lonely": lonely[:, None, :, None]}

    def forward(self, xs: list[Tensor], coords: list[Tensor], token_valid: list[Tensor], present: Tensor,
                cache: dict[str, Any] | None = None) -> list[Tensor]:
        """xs[s] [B, h_s, w_s, D], coords[s] [B, h_s, w_s, Dc], token_valid[s] [B, h_s, w_s] (inside the
        swath), present [B, S] (source s exists in the sample). Returns the update of each source.
        ``cache`` (sampling) keeps the coordinate/mask part between calls on the same sources."""
        st = cache.get("cross") if cache is not None else None
        if st is None:
            st = self._static(coords, token_valid, present)
            if cache is not None:
                cache["cross"] = st
        cw, heads = self.window, self.heads
        win_x = [to_windows(pad_to_multiple(x, cw), cw) for x in xs]  # [B, n, cw², D]
        mx = torch.cat([xw.sum(2) / cnt for xw, cnt in zip(win_x, st["counts"], strict=True)], 1)  # window means
        qv, kv = (self.norm_values(_heads(t, heads)) for t in self.qk_values(mx).chunk(2, -1))
        # score = qv·kv/√dv + λ·qc·kc/√dc, as one SDPA call on concatenated features (scale 1)
        q = torch.cat([qv / math.sqrt(qv.shape[-1]), st["qc"].to(qv.dtype)], -1)
        k = torch.cat([kv, st["kc"].to(kv.dtype)], -1)
        tokens = torch.cat(win_x, 1)  # [B, L, cw², D]
        b, length, n_tok, _ = tokens.shape
        v = self.value(tokens).reshape(b, length, n_tok, heads, self.dim // heads)
        v = v.permute(0, 3, 1, 2, 4).reshape(b, heads, length, n_tok * (self.dim // heads))
        out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=st["mask"], scale=1.0)
        out = out.masked_fill(st["lonely"], 0.0)
        out = out.reshape(b, heads, length, n_tok, self.dim // heads).permute(0, 2, 3, 1, 4).reshape(b, length, n_tok, self.dim)
        out = self.out(out)
        results, start = [], 0
        for x, xw in zip(xs, win_x, strict=True):
            h, w = x.shape[1:3]
            n = xw.shape[1]
            results.append(from_windows(out[:, start:start + n], cw, h + (-h % cw), w + (-w % cw))[:, :h, :w])
            start += n
        return results


def relative_position_index(window: int) -> Tensor:
    """[window², window²] index into a ((2·window − 1)²)-entry bias table."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()])  # [2, n]
    rel = pos[:, :, None] - pos[:, None, :] + window - 1
    return rel[0] * (2 * window - 1) + rel[1]


def shift_amounts(h: int, w: int, window: int, shifted: bool) -> tuple[int, int]:
    """Half a window along each dimension longer than one window (Swin: no shift inside one window)."""
    if not shifted:
        return 0, 0
    return (window // 2 if h > window else 0), (window // 2 if w > window else 0)


def swin_regions(hp: int, wp: int, sh: int, sw: int, device: torch.device | None = None) -> Tensor:
    """Region id [hp, wp] of each position of the *rolled* grid: tokens that wrapped around in the
    cyclic shift form their own region and may not attend to the others of their window."""
    rows = torch.zeros(hp, dtype=torch.long, device=device)
    cols = torch.zeros(wp, dtype=torch.long, device=device)
    if sh:
        rows[hp - sh:] = 1
    if sw:
        cols[wp - sw:] = 1
    return rows[:, None] * 2 + cols[None, :]


class SourceWindowAttention(nn.Module):
    """(Shifted-)window self-attention inside one source with coordinates in the score."""

    def __init__(self, dim: int, coords_dim: int, heads: int, window: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.heads, self.window = dim, heads, window
        self.qk_values = nn.Linear(dim, 2 * dim)
        self.qk_coords = nn.Linear(coords_dim, 2 * dim)
        self.norm_values = RMSNorm(dim // heads)
        self.norm_coords = RMSNorm(dim // heads)
        self.coords_weight = nn.Parameter(torch.ones(()))
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros(heads, (2 * window - 1) ** 2))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)

    def _static(self, coords: Tensor, shifted: bool) -> dict[str, Any]:
        b, h, w, _ = coords.shape
        ws, heads = self.window, self.heads
        sh, sw = shift_amounts(h, w, ws, shifted)
        coords = pad_to_multiple(coords, ws)
        hp, wp = coords.shape[1:3]
        real = torch.zeros(hp, wp, dtype=torch.bool, device=coords.device)
        real[:h, :w] = True
        if sh or sw:
            coords = torch.roll(coords, (-sh, -sw), (1, 2))
            real = torch.roll(real, (-sh, -sw), (0, 1))
        region = swin_regions(hp, wp, sh, sw, coords.device)
        rw = to_windows(real[None, ..., None], ws)[0, ..., 0]  # [n, ws²]
        gw = to_windows(region[None, ..., None], ws)[0, ..., 0]
        allowed = (gw[:, :, None] == gw[:, None, :]) & rw[:, None, :]
        allowed = allowed | torch.eye(ws * ws, dtype=torch.bool, device=coords.device)  # padding queries see themselves
        qc, kc = (self.norm_coords(_heads(t, heads)) for t in self.qk_coords(to_windows(coords, ws)).chunk(2, -1))
        n = rw.shape[0]
        flat = lambda t: t.reshape(b * n, *t.shape[2:])  # noqa: E731 - 4-D inputs take the fused kernels
        bias = self.bias_table[:, self.rel_index]  # [H, ws², ws²]
        mask = bias[None].masked_fill(~allowed[:, None], float("-inf"))  # [n, H, ws², ws²]
        mask = mask[None].expand(b, *mask.shape).reshape(b * n, *mask.shape[1:])
        return {"shift": (sh, sw), "qc": flat(qc * self.coords_weight), "kc": flat(kc), "mask": mask}

    def forward(self, x: Tensor, coords: Tensor, shifted: bool, cache: dict[str, Any] | None = None) -> Tensor:
        """x [B, h, w, D], coords [B, h, w, Dc] -> [B, h, w, D] (``cache``: see ``CrossSourceAttention``)."""
        st = cache.get("self") if cache is not None else None
        if st is None:
            st = self._static(coords, shifted)
            if cache is not None:
                cache["self"] = st
        b, h, w, _ = x.shape
        ws, heads = self.window, self.heads
        sh, sw = st["shift"]
        x = pad_to_multiple(x, ws)
        hp, wp = x.shape[1:3]
        if sh or sw:
            x = torch.roll(x, (-sh, -sw), (1, 2))
        xw = to_windows(x, ws)  # [B, n, ws², D]
        n = xw.shape[1]
        flat = lambda t: t.reshape(b * n, *t.shape[2:])  # noqa: E731
        qv, kv = (flat(self.norm_values(_heads(t, heads))) for t in self.qk_values(xw).chunk(2, -1))
        q = torch.cat([qv, st["qc"].to(qv.dtype)], -1)  # score = (qv·kv + λ·qc·kc)/√d + bias
        k = torch.cat([kv, st["kc"].to(kv.dtype)], -1)
        v = flat(_heads(self.value(xw), heads))  # [B·n, H, ws², d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=st["mask"].to(q.dtype), scale=1.0 / math.sqrt(qv.shape[-1]))
        out = out.reshape(b, n, heads, ws * ws, -1).transpose(-3, -2).reshape(b, n, ws * ws, self.dim)
        out = from_windows(out, ws, hp, wp)
        if sh or sw:
            out = torch.roll(out, (sh, sw), (1, 2))  # roll back: every token returns to its place
        return self.out(out[:, :h, :w])
