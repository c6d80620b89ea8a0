"""SatMAE baseline, multi-temporal variant (Cong et al., NeurIPS 2022), adapted to SITS segmentation.

Pre-training (a masked autoencoder over frames): each sample gives ``frames`` random valid dates
(SatMAE uses 3); every frame is cut into ``patch`` × ``patch`` patches by one shared patch
embedding; the tokens of all frames are concatenated. Each token's position code is a fixed 2-D
sin-cos code of width ``dim − time_dim`` **concatenated** with a temporal code of width
``time_dim`` computed from the acquisition date. Masking is independent per token (ratio 0.75);
the encoder sees the visible tokens only; a light decoder (its own position/temporal codes,
``dec_time_dim`` wide) predicts the pixels of every patch, and the loss is the MSE on masked
patches against per-patch normalised pixels (``norm_pix_loss``).

Temporal code: SatMAE encodes (year − 2002, month − 1, hour) with three 1-D sin-cos codes. Here
dates are days since the task's reference date and the overpass hour is constant, so the code is
two 1-D sin-cos codes: the year index ``floor(d / 365.25)`` and the month-like position within
the year ``(d mod 365.25) / 30.44`` (relative to the reference date, not the calendar).

Segmentation (the S4 paper's adaptation): the series is cut into groups of ``frames`` consecutive
dates -- the temporal input size SatMAE is trained on -- and each group is encoded jointly
(padded dates' tokens are excluded from attention by a key-padding mask); the tokens of each
frame are reshaped to an ``H/patch × W/patch`` map, a ConvLSTM aggregates the maps over all dates
(state at the last valid date) and an up-sampling decoder returns ``[B, K, H, W]`` logits.
Grouping keeps attention at ``(frames · L)²`` per group instead of ``(T · L)²`` for the whole
series (T = 38–61 dates on real PASTIS-R).

Both modalities: one ViT with a patch embedding (and a pixel-prediction head) per modality;
each pre-training step reconstructs both modalities of the batch and averages the two losses.
No class token (nothing here uses it).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.budget import MINI_FINETUNE_MIN_STEPS
from benchmark.contracts import EntryMetadata, RunContext
from benchmark.training import FitConfig

from .ssl_common import MODALITIES, SegmentationBaseline, gather_frames, sample_dates
from .temporal_backbone import ConvLSTM, UpsampleDecoder

CITATION = "Cong et al., SatMAE: Pre-training Transformers for Temporal and Multi-Spectral Satellite Imagery, NeurIPS 2022"
log = logging.getLogger(__name__)
LR_REFERENCE_BATCH = 256  # lr = blr × effective batch / 256 (MAE / SatMAE)
DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12

# Profiles are data. Paper = SatMAE's ViT-L (patch 16, encoder 1024 × 24, decoder 512 × 8, 384/192
# temporal dims); fine-tuning budget = S4's. Learning rate: SatMAE's (MAE's) scaling rule
# lr = blr × effective batch / 256 with blr = 1.5e-4, applied at run time to the batch this run
# really has (``scaled_lr``): effective batch = the global ``pretrain_batch_size`` (fit splits it
# over ranks and micro-batches without changing it). At paper it is 128 → lr 7.5e-5 on any number
# of GPUs (SatMAE's own 1024 gave 6e-4). Budget: 100 epochs at batch 128 → ceil(1,460
# / 128) × 100 = 1,200 steps on PASTIS-R, ceil(554 / 128) × 100 = 500 on South Sudan; warm-up 5 %
# of each stage (60 / 25 steps; was a fixed 500, i.e. no decay at all on South Sudan).
# mini / smoke: blr chosen so that their lr is what it was (mini 1.5e-3 = 0.096 × 4 / 256, smoke
# 2e-3 = 0.256 × 2 / 256).
# mini fine-tuning lr 1e-3: at 3e-3 the segmenter stayed on one class (sorghum) on South Sudan v3
# radar 100 % in 3 of 3 seeds; 1e-3 gave 33 / 21 / 40 % mIoU (seeds 0-2), 1e-2 stayed constant.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"patch": 4, "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0, "time_dim": 6, "dec_dim": 8, "dec_depth": 1,
              "dec_heads": 2, "dec_time_dim": 4, "frames": 3, "mask_ratio": 0.75, "lstm_hidden": 8, "dec_width": 8,
              "pretrain_steps": 3, "pretrain_blr": 0.256, "finetune_steps": 4, "batch_size": 2, "lr": 2e-3,
              "eval_batch_size": 4},
    "mini": {"patch": 4, "dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2.0, "time_dim": 24, "dec_dim": 32, "dec_depth": 1,
             "dec_heads": 4, "dec_time_dim": 12, "frames": 3, "mask_ratio": 0.75, "lstm_hidden": 32, "dec_width": 16,
             "pretrain_steps": 240, "pretrain_blr": 0.096, "pretrain_weight_decay": 0.05, "finetune_epochs": 4,
             "finetune_min_steps": MINI_FINETUNE_MIN_STEPS, "batch_size": 4, "lr": 1e-3, "warmup_fraction": 0.05, "weight_decay": 1e-4,
             "eval_batch_size": 8},
    "paper": {"patch": 16, "dim": 1024, "depth": 24, "heads": 16, "mlp_ratio": 4.0, "time_dim": 384, "dec_dim": 512,
              "dec_depth": 8, "dec_heads": 16, "dec_time_dim": 192, "frames": 3, "mask_ratio": 0.75, "lstm_hidden": 128,
              "dec_width": 64, "pretrain_epochs": 100, "pretrain_batch_size": 128, "pretrain_blr": 1.5e-4,
              "pretrain_weight_decay": 0.05, "finetune_epochs": 50, "batch_size": 4, "lr": 1e-4,
              "warmup_fraction": 0.05, "weight_decay": 0.05, "eval_batch_size": 4},
}


def effective_batch(hp: dict[str, Any]) -> int:
    """Samples per optimizer step over all ranks: the pre-training ``batch_size``, which fit treats
    as the global batch (micro-batches, accumulation and world size only split it)."""
    return FitConfig.from_hparams({"steps": 0, **hp}, "pretrain").batch_size


def scaled_lr(hp: dict[str, Any]) -> float:
    """SatMAE's pre-training lr: ``pretrain_blr × effective_batch(hp) / 256``."""
    return float(hp["pretrain_blr"]) * effective_batch(hp) / LR_REFERENCE_BATCH


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin-cos code ``[..., dim]`` of real positions ``pos [...]`` (MAE's 1-D code)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, device=pos.device, dtype=torch.float64) / max(half, 1))
    angle = pos.double()[..., None] * omega
    code = torch.cat([angle.sin(), angle.cos()], -1)
    if code.shape[-1] < dim:
        code = F.pad(code, (0, dim - code.shape[-1]))
    return code.float()


def spatial_code(h: int, w: int, dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """2-D sin-cos code ``[h·w, dim]``: half of the width for the row, half for the column."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.cat([sincos_1d(yy.flatten(), dim // 2), sincos_1d(xx.flatten(), dim - dim // 2)], -1)


def temporal_code(dates: torch.Tensor, dim: int) -> torch.Tensor:
    """``dates [...]`` in days → ``[..., dim]``: sin-cos of the year index and of the month position."""
    year = torch.floor(dates.double() / DAYS_PER_YEAR)
    month = torch.remainder(dates.double(), DAYS_PER_YEAR) / DAYS_PER_MONTH
    return torch.cat([sincos_1d(year, dim // 2), sincos_1d(month, dim - dim // 2)], -1)


def position_code(dates: torch.Tensor, h: int, w: int, dim: int, time_dim: int) -> torch.Tensor:
    """``[B, F, h·w, dim]``: spatial code (``dim − time_dim``) concatenated with the temporal code."""
    b, f = dates.shape
    s = spatial_code(h, w, dim - time_dim, dates.device)[None, None].expand(b, f, -1, -1)
    t = temporal_code(dates, time_dim)[:, :, None].expand(-1, -1, h * w, -1)
    return torch.cat([s, t], -1)


def random_masking(n_tokens: int, batch: int, ratio: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random masking: ``(keep [B, n_keep] indices, masked [B, N] bool)``."""
    n_keep = max(1, int(round(n_tokens * (1 - ratio))))
    order = torch.rand(batch, n_tokens, device=device).argsort(1)
    keep = order[:, :n_keep]
    masked = torch.ones(batch, n_tokens, dtype=torch.bool, device=device)
    masked.scatter_(1, keep, False)
    return keep, masked


class Block(nn.Module):
    """Pre-norm ViT block; attention through ``F.scaled_dot_product_attention`` (fused kernels on
    CPU and CUDA, in training and inference alike)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, D]``; ``padding [B, N]`` True for tokens no one may attend to."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        allowed = None if padding is None else ~padding[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TemporalMAE(nn.Module):
    """Temporal ViT encoder with per-modality patch embeddings, and the MAE decoder."""

    def __init__(self, channels: dict[str, int], hp: dict[str, Any]):
        super().__init__()
        self.p, self.dim, self.time_dim = int(hp["patch"]), int(hp["dim"]), int(hp["time_dim"])
        self.dec_dim, self.dec_time_dim = int(hp["dec_dim"]), int(hp["dec_time_dim"])
        self.channels = dict(channels)
        self.embed = nn.ModuleDict({m: nn.Conv2d(c, self.dim, self.p, stride=self.p) for m, c in channels.items()})
        self.blocks = nn.ModuleList([Block(self.dim, int(hp["heads"]), float(hp["mlp_ratio"])) for _ in range(int(hp["depth"]))])
        self.norm = nn.LayerNorm(self.dim)
        self.dec_embed = nn.Linear(self.dim, self.dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.dec_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.dec_blocks = nn.ModuleList([Block(self.dec_dim, int(hp["dec_heads"]), float(hp["mlp_ratio"])) for _ in range(int(hp["dec_depth"]))])
        self.dec_norm = nn.LayerNorm(self.dec_dim)
        self.pred = nn.ModuleDict({m: nn.Linear(self.dec_dim, self.p * self.p * c) for m, c in channels.items()})

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % self.p, 0, (-h) % self.p))

    def tokens(self, x: torch.Tensor, dates: torch.Tensor, modality: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """``x [B, F, C, H, W]`` → embedded tokens + codes ``[B, F·L, dim]`` and the patch grid."""
        b, f = x.shape[:2]
        e = self.embed[modality](self._pad(x.flatten(0, 1)))  # [B·F, dim, h, w]
        h, w = e.shape[-2:]
        e = e.flatten(2).transpose(1, 2).reshape(b, f, h * w, self.dim)
        return (e + position_code(dates, h, w, self.dim, self.time_dim).to(e.dtype)).flatten(1, 2), (h, w)

    def encode(self, tokens: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            tokens = blk(tokens, padding)
        return self.norm(tokens)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, F, C, H, W]`` → ``[B, F·L, p·p·C]`` pixel targets (row-major patches)."""
        b, f, c = x.shape[:3]
        x = self._pad(x.flatten(0, 1))
        h, w = x.shape[-2] // self.p, x.shape[-1] // self.p
        x = x.reshape(b * f, c, h, self.p, w, self.p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, f * h * w, self.p * self.p * c)

    def reconstruction_loss(self, frames: torch.Tensor, dates: torch.Tensor, modality: str, mask_ratio: float) -> torch.Tensor:
        tok, (h, w) = self.tokens(frames, dates, modality)
        b, n, _ = tok.shape
        keep, masked = random_masking(n, b, mask_ratio, tok.device)
        latent = self.encode(torch.gather(tok, 1, keep[:, :, None].expand(-1, -1, self.dim)))
        y = self.dec_embed(latent)
        full = self.mask_token.expand(b, n, -1).clone()
        full = full.scatter(1, keep[:, :, None].expand(-1, -1, self.dec_dim), y.to(full.dtype))  # bf16 under autocast
        full = full + position_code(dates, h, w, self.dec_dim, self.dec_time_dim).flatten(1, 2).to(full.dtype)
        for blk in self.dec_blocks:
            full = blk(full)
        pred = self.pred[modality](self.dec_norm(full))
        target = self.patchify(frames)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        per_token = ((pred.float() - target.float()) ** 2).mean(-1)
        return (per_token * masked).sum() / masked.sum().clamp_min(1)


class SatMAEPretrainer(nn.Module):
    def __init__(self, mae: TemporalMAE, hp: dict[str, Any]):
        super().__init__()
        self.mae, self.frames, self.mask_ratio = mae, int(hp["frames"]), float(hp["mask_ratio"])

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses, logs = [], {}
        for modality in MODALITIES:
            if modality not in batch:
                continue
            idx = sample_dates(batch[f"{modality}_mask"].bool(), self.frames, replace=False).sort(1).values
            frames, dates = gather_frames(batch[modality], idx), gather_frames(batch[f"{modality}_dates"], idx)
            loss = self.mae.reconstruction_loss(frames, dates, modality, self.mask_ratio)
            losses.append(loss)
            logs[f"mse_{modality}"] = loss.detach()
        return torch.stack(losses).mean(), logs


class SatMAESegmenter(nn.Module):
    """Groups of ``frames`` consecutive dates encoded jointly, per-frame token maps, ConvLSTM over
    all dates, up-sampling decoder."""

    def __init__(self, mae: TemporalMAE, num_classes: int, hp: dict[str, Any]):
        super().__init__()
        self.mae, self.group = mae, int(hp["frames"])
        self.lstm = ConvLSTM(mae.dim, int(hp["lstm_hidden"]))
        self.decoder = UpsampleDecoder(int(hp["lstm_hidden"]), int(hp["dec_width"]), num_classes, mae.p)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, dates: torch.Tensor, modality: str) -> torch.Tensor:
        b, t = x.shape[:2]
        g = self.group
        pad = (-t) % g
        mask = mask.bool()
        xg = F.pad(x, (0, 0, 0, 0, 0, 0, 0, pad)).reshape(b * (t + pad) // g, g, *x.shape[2:])
        dg = F.pad(dates, (0, pad)).reshape(-1, g)
        mg = F.pad(mask, (0, pad)).reshape(-1, g)
        mg = mg | ~mg.any(1, keepdim=True)  # an all-padding group attends to itself (its output is never used)
        tok, (h, w) = self.mae.tokens(xg, dg, modality)
        z = self.mae.encode(tok, (~mg)[:, :, None].expand(-1, -1, h * w).reshape(len(mg), g * h * w))
        maps = z.reshape(b, t + pad, h, w, self.mae.dim)[:, :t].permute(0, 1, 4, 2, 3)
        return self.decoder(self.lstm(maps, mask), tuple(x.shape[-2:]))


class SatMAE(SegmentationBaseline):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="satmae", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="SatMAE temporal ViT masked autoencoder (date-based temporal codes) + ConvLSTM decoder",
        pretraining="single-modal masked autoencoding over frames (both modalities, shared ViT)",
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def build_network(self, hp: dict[str, Any]) -> nn.Module:
        return TemporalMAE(self.channels, hp)

    def pretrain_context(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> RunContext:
        """``pretrain_lr`` from ``pretrain_blr`` and the effective batch of this run (a profile
        without ``pretrain_blr`` keeps its ``pretrain_lr`` / ``lr`` as given)."""
        if "pretrain_blr" not in ctx.hparams:
            return ctx
        lr = scaled_lr(ctx.hparams)
        log.info("satmae: pre-training lr %.3g = blr %g x effective batch %d / %d", lr, ctx.hparams["pretrain_blr"],
                 effective_batch(ctx.hparams), LR_REFERENCE_BATCH)
        return dataclasses.replace(ctx, hparams={**ctx.hparams, "pretrain_lr": lr})

    def build_pretrainer(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> nn.Module:
        return SatMAEPretrainer(self.net, ctx.hparams)

    def build_segmenter(self, num_classes: int, modality: str, hp: dict[str, Any]) -> nn.Module:
        return SatMAESegmenter(self.net, num_classes, hp)

