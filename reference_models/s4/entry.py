"""S4 entries: the full method, its ablations, and the supervised 3D U-Net floor.

Pre-training (on the task's unlabeled view: both modalities, no labels) optimises
``w_c · L_c + λ · L_r``. Radar and optical are aligned by nearest date, then each modality gets
its own random crop and flips (the correspondence between the two views is tracked cell by cell).
``L_c`` is the multi-modal space-time InfoNCE between the projected *encoder outputs* (the
bottleneck: time and space compressed 4×) of the two views at cells that show the same place and
date (``losses``); ``L_r`` is the L1 reconstruction, by the decoder, of the other modality's
input seen through the same view (both directions, averaged). Fine-tuning trains the backbone of
the inference modality plus a fresh class head with cross-entropy; inference uses one modality.

Variants (the paper's ablations, Fig. 5): ``s4`` (w_c = 1, λ = 1), ``s4_contrastive`` (λ = 0),
``s4_reconstruction`` (w_c = 0), ``s4_single_modal`` (InfoNCE between two augmented views of the
same modality -- own crop, flips, photometry and dropped dates each -- for each modality
separately; no cross-modal term), and ``unet3d_scratch`` (no pre-training at all: the floor
every SSL method must beat). Departures from the paper are listed in ``docs/fidelity.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.budget import MINI_FINETUNE_MIN_STEPS, with_stage_steps
from benchmark.contracts import EntryMetadata, RunContext
from benchmark.sits import AlignedLengthCollate, align_modalities
from benchmark.training import autocast_context, fit_in_context, move_to_device, segmentation_loss

from .losses import (
    ViewGeometry,
    apply_geometry,
    encoder_dates,
    gather_rows,
    masked_l1,
    paired_infonce,
    random_geometry,
    sample_pairs,
)
from .unet3d import Encoded, ProjectionHead, Segmenter, UNet3D

CITATION = "Shenoy et al., S4: Self-Supervised Sensing Across the Spectrum, ECCV 2024 / Remote Sensing 16(18) 3470"

# How pre-training views are made (``losses``): crop side as a fraction of the patch, the
# neighbourhood (encoder cells) excluded from an anchor's negatives, the single-modal date dropout.
_VIEWS: dict[str, Any] = {"view_crop": 0.75, "exclude_radius": 1, "exclude_time_radius": 1, "single_modal_drop_dates": 0.2}

# Profiles are data. Widths: paper = the U-Net-3D widths of Rustowicz et al. (base 16: 64/128/256).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"base": 2, "proj_dim": 16, "n_positions": 128, "tau": 0.5, "lambda_rec": 1.0, **_VIEWS,
              "pretrain_steps": 3, "finetune_steps": 4, "batch_size": 2, "lr": 2e-3, "eval_batch_size": 4},
    "mini": {"base": 4, "proj_dim": 32, "n_positions": 1024, "tau": 0.5, "lambda_rec": 1.0, **_VIEWS,
             "pretrain_steps": 240, "finetune_epochs": 4, "finetune_min_steps": MINI_FINETUNE_MIN_STEPS, "batch_size": 4, "lr": 1e-2,
             "warmup_fraction": 0.05, "weight_decay": 1e-4, "eval_batch_size": 8},
    "paper": {"base": 16, "proj_dim": 128, "n_positions": 4096, "tau": 0.5, "lambda_rec": 1.0, **_VIEWS,
              "pretrain_epochs": 100, "finetune_epochs": 50, "batch_size": 4, "lr": 1e-3, "warmup_fraction": 0.05,
              "weight_decay": 1e-4, "eval_batch_size": 4},
}


class S4Pretrainer(nn.Module):
    """Holds everything pre-training optimises; ``forward(batch)`` returns ``(loss, logs)``."""

    def __init__(self, backbone: UNet3D, channels: dict[str, int], hp: dict[str, Any], w_contrastive: float, w_reconstruction: float, single_modal: bool):
        super().__init__()
        self.backbone = backbone
        self.projection = ProjectionHead(backbone.encoder_dim, int(hp["proj_dim"]))
        self.reconstruct = nn.ModuleDict({f"{a}_to_{b}": nn.Conv3d(backbone.feature_dim, channels[b], 1)
                                          for a in channels for b in channels if a != b})
        self.w_c, self.w_r, self.single_modal = w_contrastive, w_reconstruction, single_modal
        self.n_positions, self.tau = int(hp["n_positions"]), float(hp["tau"])
        self.view_crop = float(hp.get("view_crop", 0.75))
        self.radius, self.time_radius = int(hp.get("exclude_radius", 1)), int(hp.get("exclude_time_radius", 1))
        self.drop_dates = float(hp.get("single_modal_drop_dates", 0.2))

    def contrast(self, ea: Encoded, eb: Encoded, ga: ViewGeometry, gb: ViewGeometry, valid: torch.Tensor) -> torch.Tensor:
        """InfoNCE between the two views' encoder outputs at corresponding cells (S4's L_c)."""
        pairs = sample_pairs(ga, gb, valid, self.n_positions)
        za = self.projection(gather_rows(ea.bottleneck, pairs.index_a), pairs.weight)
        zb = self.projection(gather_rows(eb.bottleneck, pairs.index_b), pairs.weight)
        return paired_infonce(za, zb, pairs, self.tau, self.radius, self.time_radius)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.single_modal:
            return self._single_modal(batch)
        xr, xo, mask = align_modalities(batch)
        b, _, _, h, w = xr.shape
        gr = random_geometry(b, h, w, self.view_crop, True, xr.device)
        go = random_geometry(b, h, w, self.view_crop, True, xr.device)
        er = self.backbone.encode(apply_geometry(xr, gr), "radar", mask)
        eo = self.backbone.encode(apply_geometry(xo, go), "optical", mask)
        loss = xr.new_zeros(())
        logs: dict[str, torch.Tensor] = {}
        if self.w_c:
            lc = self.contrast(er, eo, gr, go, er.valid[2] & eo.valid[2])
            loss = loss + self.w_c * lc
            logs["contrastive"] = lc.detach()
        if self.w_r:  # each view reconstructs the other modality seen through its own geometry
            to_cf = lambda x: x.permute(0, 2, 1, 3, 4)  # noqa: E731 - [B, T, C, H, W] -> [B, C, T, H, W]
            lr = 0.5 * (masked_l1(self.reconstruct["radar_to_optical"](self.backbone.decode(er)), to_cf(apply_geometry(xo, gr)), mask)
                        + masked_l1(self.reconstruct["optical_to_radar"](self.backbone.decode(eo)), to_cf(apply_geometry(xr, go)), mask))
            loss = loss + self.w_r * lr
            logs["reconstruction"] = lr.detach()
        return loss, logs

    def _single_modal(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fig. 5b: two augmented views of the same series (own crop, flips, photometry and dropped
        dates each); positives only on encoder dates kept in both views."""
        losses = []
        for modality in ("radar", "optical"):
            x, mask = batch[modality], batch[f"{modality}_mask"].bool()
            b, _, _, h, w = x.shape
            ga = random_geometry(b, h, w, self.view_crop, True, x.device)
            gb = random_geometry(b, h, w, self.view_crop, True, x.device)
            keep_a, keep_b = drop_dates(mask, self.drop_dates), drop_dates(mask, self.drop_dates)
            ea = self.backbone.encode(photometric(apply_geometry(x, ga)), modality, keep_a)
            eb = self.backbone.encode(photometric(apply_geometry(x, gb)), modality, keep_b)
            losses.append(self.contrast(ea, eb, ga, gb, encoder_dates(keep_a & keep_b)))
        loss = torch.stack(losses).mean()
        return loss, {"contrastive": loss.detach()}


def photometric(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel gain and offset plus pixel noise (on normalised inputs)."""
    b, _, c = x.shape[:3]
    gain = 1 + 0.1 * torch.randn(b, 1, c, 1, 1, device=x.device)
    offset = 0.1 * torch.randn(b, 1, c, 1, 1, device=x.device)
    return x * gain + offset + 0.1 * torch.randn_like(x)


def drop_dates(mask: torch.Tensor, p: float) -> torch.Tensor:
    """``mask`` with each valid date dropped with probability ``p``; a sample keeps at least its
    first valid date. Dropped dates are re-filled by the backbone from the nearest kept date."""
    keep = mask & (torch.rand(mask.shape, device=mask.device) >= p)
    first = torch.zeros_like(mask).scatter_(1, mask.int().argmax(1, keepdim=True), True) & mask
    return keep | (first & ~keep.any(1, keepdim=True))


class S4Entry:
    """The full S4 method (contrastive + reconstruction pre-training)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4", version="2", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="3D U-Net pre-trained with multi-modal space-time InfoNCE + cross-modal L1 reconstruction",
        pretraining="multi-modal contrastive + cross-modal reconstruction",
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES
    w_contrastive: ClassVar[float] = 1.0
    w_reconstruction: ClassVar[float | None] = None  # None: the profile's lambda_rec
    single_modal: ClassVar[bool] = False
    pretrains: ClassVar[bool] = True

    def __init__(self) -> None:
        self.backbone: UNet3D | None = None
        self.segmenter: Segmenter | None = None
        self.device = torch.device("cpu")

    def _build(self, ctx: RunContext) -> None:
        torch.manual_seed(ctx.seed)  # identical initial weights for every cell of a seed
        self.device = ctx.device
        self.channels = dict(ctx.task_info["channels"])
        self.backbone = UNet3D(self.channels, int(ctx.hparams["base"])).to(ctx.device)

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None:
        self._build(ctx)
        if not self.pretrains:
            return
        w_r = float(ctx.hparams["lambda_rec"]) if self.w_reconstruction is None else self.w_reconstruction
        model = S4Pretrainer(self.backbone, self.channels, ctx.hparams, self.w_contrastive, w_r, self.single_modal).to(ctx.device)
        collate = ctx.collate if self.single_modal else AlignedLengthCollate(ctx.collate)  # no device sync to align
        fit_in_context(with_stage_steps(ctx, "pretrain", len(unlabeled)), model, lambda m, b: m(b), unlabeled, stage="pretrain",
                       collate_fn=collate, desc=f"pretrain {self.metadata.name}")

    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None:
        if self.backbone is None:  # pretrain() always runs first in a job; this keeps direct use safe
            self._build(ctx)
        info = ctx.task_info
        self.segmenter = Segmenter(self.backbone, int(info["num_classes"])).to(ctx.device)

        def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            return segmentation_loss(model(batch[modality], batch[f"{modality}_mask"], modality), batch["label"], info)

        fit_in_context(with_stage_steps(ctx, "finetune", len(labeled)), self.segmenter, loss, labeled, stage="finetune",
                       collate_fn=ctx.collate, desc=f"finetune {self.metadata.name} {modality}")

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        if self.segmenter is None:
            raise RuntimeError("finetune() must run before predict()")
        self.segmenter.eval()
        x = move_to_device(batch[modality], self.device)
        mask = move_to_device(batch[f"{modality}_mask"], self.device)
        with autocast_context(self.device):
            logits = self.segmenter(x, mask, modality)
        return logits.float().cpu()

    def parameter_count(self) -> int:
        """Parameters used at inference (backbone incl. both stems, and the class head)."""
        modules = [m for m in (self.segmenter or self.backbone,) if m is not None]
        return sum(p.numel() for m in modules for p in m.parameters())


class S4Contrastive(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4_contrastive", version="2", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="S4 ablation (Fig. 5a, L_c): multi-modal space-time InfoNCE only", pretraining="multi-modal contrastive")
    w_reconstruction: ClassVar[float | None] = 0.0


class S4Reconstruction(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4_reconstruction", version="2", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="S4 ablation (Fig. 5a, L_r): cross-modal L1 reconstruction only", pretraining="cross-modal reconstruction")
    w_contrastive: ClassVar[float] = 0.0


class S4SingleModal(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4_single_modal", version="2", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="S4 ablation (Fig. 5b): InfoNCE between two augmented views of the same modality",
        pretraining="single-modal contrastive (augmented views)")
    single_modal: ClassVar[bool] = True
    w_reconstruction: ClassVar[float | None] = 0.0


class UNet3DScratch(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="unet3d_scratch", version="2", family="segmentation", inputs=("radar", "optical"),
        citation="Rustowicz et al., Semantic segmentation of crop type in Africa, CVPR-W 2019",
        description="the same 3D U-Net trained from scratch on the labels (the floor for every SSL method)",
        pretraining="none")
    pretrains: ClassVar[bool] = False
