"""The MoTiF backbone for a flexible set of sources in swath geometry (one weight set for all sensors).

Per source (a slot, see ``slots.py``):

* values token: [channels, availability mask, land mask] patch-embedded (Conv k=s=patch), GELU,
  LayerNorm; the target's availability mask is 0 (its values are noise or a mask token);
* coordinate token: sin(lat), sin(lon), cos(lon) patch-embedded, GELU, plus a linear embedding of
  the time offset, LayerNorm; coordinates are never updated, they enter the attention scores;
* conditioning map: land mask patch-embedded (GELU) + Linear([availability flag, characteristics,
  flow time t]) (GELU), summed, LayerNorm; flag 1 / t = 1 for clean inputs, flag 0 / t for the
  target, flag −1 / t = −1 for missing slots.

Blocks of three sub-layers (cross-source windowed attention, intra-source shifted-window attention,
MLP), each wrapped in a zero-initialised adaptive LayerNorm driven by the conditioning map. The
output head (LayerNorm, ICNR-initialised conv, PixelShuffle) maps the target's tokens back to
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .attention import CrossSourceAttention, SourceWindowAttention
from .slots import Slots


@dataclass(frozen=True)
class BackboneConfig:
    channels: int
    characs_dim: int
    values_dim: int = 512
    coords_dim: int = 256
    cond_dim: int = 512
    blocks: int = 12
    heads: int = 8
    patch: int = 4
    cross_window: int = 4
    swin_window: int = 8
    mlp_ratio: float = 2.0
    dt_scale_h: float = 6.0  # time offsets enter the model in units of this many hours
    # Recompute each block's activations in the backward pass instead of keeping them (training
    # only): ~1/blocks of the activation memory for ~1/3 more compute; the numbers are the same.
    activation_checkpointing: bool = False

    @classmethod
    def from_hparams(cls, hp: dict[str, Any], channels: int, characs_dim: int) -> BackboneConfig:
        keys = ("values_dim", "coords_dim", "cond_dim", "blocks", "heads", "patch", "cross_window", "swin_window", "mlp_ratio",
                "dt_scale_h", "activation_checkpointing")
        return cls(channels=int(channels), characs_dim=int(characs_dim), **{k: hp[k] for k in keys if k in hp})


class AdaLNZero(nn.Module):
    """x + gate · f(LN(x)·(1 + scale) + shift), (shift, scale, gate) = Linear(SiLU(cond)), zero-initialised."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mod = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def params(self, cond: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.mod(F.silu(cond)).chunk(3, -1))  # shift, scale, gate

    def modulate(self, x: Tensor, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        shift, scale, gate = params
        return torch.addcmul(shift, self.norm(x), 1 + scale), gate


class MotifBlock(nn.Module):
    def __init__(self, cfg: BackboneConfig, shifted: bool):
        super().__init__()
        d, dc = cfg.values_dim, cfg.coords_dim
        self.shifted = shifted
        self.ada_cross, self.ada_self, self.ada_mlp = (AdaLNZero(d, cfg.cond_dim) for _ in range(3))
        self.cross = CrossSourceAttention(d, dc, cfg.heads, cfg.cross_window)
        self.self_attn = SourceWindowAttention(d, dc, cfg.heads, cfg.swin_window)
        hidden = int(round(d * cfg.mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, xs: list[Tensor], coords: list[Tensor], conds: list[Tensor], token_valid: list[Tensor], present: Tensor,
                cache: dict[str, list] | None = None) -> list[Tensor]:
        """``cache`` keeps the modulations of slots 1… (clean inputs: their conditioning does not
        depend on the flow time) across the steps of a sampling trajectory."""
        params = {}
        for name, ada in (("cross", self.ada_cross), ("self", self.ada_self), ("mlp", self.ada_mlp)):
            rest = cache.get(f"ada_{name}") if cache is not None else None
            if rest is None:
                rest = [ada.params(c) for c in conds[1:]]
                if cache is not None:
                    cache[f"ada_{name}"] = rest
            params[name] = [ada.params(conds[0]), *rest]
        mods = [self.ada_cross.modulate(x, p) for x, p in zip(xs, params["cross"], strict=True)]
        updates = self.cross([m[0] for m in mods], coords, token_valid, present, cache)
        xs = [x + g * u for x, (_, g), u in zip(xs, mods, updates, strict=True)]
        out = []
        for j, (x, c) in enumerate(zip(xs, coords, strict=True)):
            y, g = self.ada_self.modulate(x, params["self"][j])
            x = x + g * self.self_attn(y, c, self.shifted, None if cache is None else cache.setdefault(f"slot{j}", {}))
            y, g = self.ada_mlp.modulate(x, params["mlp"][j])
            out.append(x + g * self.mlp(y))
        return out


def icnr_(weight: Tensor, upscale: int) -> None:
    """ICNR: the conv before PixelShuffle starts as nearest-neighbour upsampling (no checkerboard)."""
    out_ch = weight.shape[0] // (upscale * upscale)
    sub = torch.empty(out_ch, *weight.shape[1:])
    nn.init.kaiming_normal_(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(upscale * upscale, dim=0))


class OutputHead(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.values_dim)
        self.conv = nn.Conv2d(cfg.values_dim, cfg.channels * cfg.patch**2, 3, padding=1, bias=False)
        icnr_(self.conv.weight, cfg.patch)
        self.shuffle = nn.PixelShuffle(cfg.patch)

    def forward(self, x: Tensor) -> Tensor:
        """[B, h, w, D] -> [B, C, h·patch, w·patch]."""
        return self.shuffle(self.conv(self.norm(x).permute(0, 3, 1, 2)))


def sincos_coords(coords: Tensor) -> Tensor:
    """[B, 2, H, W] degrees -> [B, 3, H, W] sin(lat), sin(lon), cos(lon); −1 outside the swath."""
    rad = torch.deg2rad(coords)
    out = torch.stack([torch.sin(rad[:, 0]), torch.sin(rad[:, 1]), torch.cos(rad[:, 1])], 1)
    return torch.nan_to_num(out, nan=-1.0)


@dataclass
class Context:
    """What does not change along a sampling trajectory: everything but the target's values and t."""

    values: list[Tensor]  # [B, h, w, D] value tokens (slot 0: to be replaced)
    coords: list[Tensor]  # [B, h, w, Dc]
    cond_spatial: list[Tensor]  # [B, h, w, Dcond] land-mask part of the conditioning
    token_valid: list[Tensor]  # [B, h, w] token has a pixel inside the swath
    flag: Tensor  # [B, S] 1 input, 0 target, −1 missing
    characs: Tensor  # [B, S, K]
    present: Tensor  # [B, S]
    target_land: Tensor  # [B, 1, H, W] filled land mask of the target slot
    grid: tuple[int, int]  # padded (H, W) of the target slot
    cache: dict[Any, Any] = field(default_factory=dict)  # conditioning of the clean inputs, per block


class MotifBackbone(nn.Module):
    """``context(slots)`` once, then ``forward(context, target_values, t)`` -> target prediction."""

    def __init__(self, cfg: BackboneConfig, mask_token: bool = False):
        super().__init__()
        self.cfg = cfg
        d, dc, dk, p = cfg.values_dim, cfg.coords_dim, cfg.cond_dim, cfg.patch
        self.embed_values = nn.Conv2d(cfg.channels + 2, d, p, stride=p)
        self.norm_values = nn.LayerNorm(d)
        self.embed_coords = nn.Conv2d(3, dc, p, stride=p)
        self.embed_dt = nn.Linear(1, dc)
        self.norm_coords = nn.LayerNorm(dc)
        self.cond_land = nn.Conv2d(1, dk, p, stride=p)
        self.cond_vector = nn.Linear(1 + cfg.characs_dim + 1, dk)
        self.norm_cond = nn.LayerNorm(dk)
        self.blocks = nn.ModuleList(MotifBlock(cfg, shifted=i % 2 == 1) for i in range(cfg.blocks))
        self.head = OutputHead(cfg)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02) if mask_token else None

    def _tokens(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        return F.gelu(conv(x)).permute(0, 2, 3, 1)  # [B, h, w, ·]

    def _value_tokens(self, values: Tensor, avail: Tensor, land: Tensor) -> Tensor:
        return self.norm_values(self._tokens(self.embed_values, torch.cat([values, avail, land], 1)))

    def context(self, slots: Slots) -> Context:
        p = self.cfg.patch
        n_slots = len(slots.values)
        flag = torch.where(slots.present, 1.0, -1.0)
        flag[:, 0] = torch.where(slots.present[:, 0], 0.0, -1.0)
        values, coords, cond_spatial, token_valid = [], [], [], []
        target_land = None
        for j in range(n_slots):
            v, xy = slots.values[j], slots.coords[j]
            b, _, h, w = v.shape
            land = torch.nan_to_num(slots.landmask[j], nan=0.0)[:, None]
            if j == 0:
                target_land = land
                values.append(torch.empty(0, device=v.device))  # filled per call
            else:
                avail = torch.where(torch.isfinite(v).any(1, keepdim=True), 1.0, -1.0)
                values.append(self._value_tokens(torch.nan_to_num(v, nan=0.0), avail, land))
            dt = torch.nan_to_num(slots.dt[:, j] / self.cfg.dt_scale_h, nan=-1.0)
            c = self._tokens(self.embed_coords, sincos_coords(xy)) + self.embed_dt(dt[:, None])[:, None, None, :]
            coords.append(self.norm_coords(c))
            cond_spatial.append(self._tokens(self.cond_land, land))
            inside = torch.isfinite(xy).all(1)  # [B, H, W]
            token_valid.append(inside.reshape(b, h // p, p, w // p, p).any(4).any(2))
        characs = torch.nan_to_num(slots.characs, nan=0.0)
        return Context(values, coords, cond_spatial, token_valid, flag, characs, slots.present, target_land,
                       tuple(slots.values[0].shape[-2:]))

    def forward(self, ctx: Context, target_values: Tensor | None, t: Tensor) -> Tensor:
        """target_values [B, C, H, W] on the target's padded grid (ignored with a mask token),
        t [B] the flow time of the target -> [B, C, H, W] (velocity or values)."""
        b = ctx.flag.shape[0]
        if self.mask_token is not None:
            h, w = ctx.grid
            # a product, not an expand() view of the parameter: views of a leaf confuse hooks under inference_mode
            x0 = self.mask_token * torch.ones(b, h // self.cfg.patch, w // self.cfg.patch, 1, device=self.mask_token.device)
        else:
            zeros = torch.zeros_like(target_values[:, :1])
            x0 = self._value_tokens(target_values, zeros, ctx.target_land)
        xs = [x0, *ctx.values[1:]]
        t_slots = torch.where(ctx.present, 1.0, -1.0)
        t_slots[:, 0] = torch.where(ctx.present[:, 0], t.to(t_slots.dtype), -1.0)
        vec = F.gelu(self.cond_vector(torch.cat([ctx.flag[..., None], ctx.characs, t_slots[..., None]], -1)))  # [B, S, Dk]
        conds = [self.norm_cond(ctx.cond_spatial[0] + vec[:, 0, None, None, :])]
        if "conds" not in ctx.cache:  # the inputs' conditioning does not depend on t: computed once per context
            ctx.cache["conds"] = [self.norm_cond(cs + vec[:, j, None, None, :]) for j, cs in enumerate(ctx.cond_spatial) if j]
        conds += ctx.cache["conds"]
        recompute = self.cfg.activation_checkpointing and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if recompute:  # no cache: the recomputation must run the same ops as the first pass
                xs = checkpoint(block, xs, ctx.coords, conds, ctx.token_valid, ctx.present, None, use_reentrant=False)
            else:
                xs = block(xs, ctx.coords, conds, ctx.token_valid, ctx.present, ctx.cache.setdefault(i, {}))
        return self.head(xs[0])
