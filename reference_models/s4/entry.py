"""S4 entries: the full method, its ablations, and the supervised 3D U-Net floor.

Pre-training (on the task's unlabeled view: both modalities, no labels) optimises
``w_c · L_c + λ · L_r`` where ``L_c`` is the multi-modal space-time InfoNCE between projected
radar and optical features at the same (t, h, w) after nearest-date alignment, and ``L_r`` the
L1 reconstruction of each modality's aligned, normalised input from the other's features
(both directions, averaged). Fine-tuning trains the backbone of the inference modality plus a
fresh class head with cross-entropy; inference uses one modality only.

Variants (the paper's ablations, Fig. 5): ``s4`` (w_c = 1, λ = 1), ``s4_contrastive`` (λ = 0),
``s4_reconstruction`` (w_c = 0), ``s4_single_modal`` (InfoNCE between two augmented views of the
same modality, for each modality separately; no cross-modal term), and ``unet3d_scratch`` (no
pre-training at all: the floor every SSL method must beat).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.sits import align_modalities
from benchmark.training import autocast_context, fit_in_context, move_to_device, segmentation_loss

from .losses import masked_l1, space_time_infonce
from .unet3d import ProjectionHead, Segmenter, UNet3D

CITATION = "Shenoy et al., S4: Self-Supervised Sensing Across the Spectrum, ECCV 2024 / Remote Sensing 16(18) 3470"

# Profiles are data. Widths: paper = the U-Net-3D widths of Rustowicz et al. (base 16: 64/128/256).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"base": 2, "proj_dim": 16, "n_positions": 128, "tau": 0.5, "lambda_rec": 1.0,
              "pretrain_steps": 3, "finetune_steps": 4, "batch_size": 2, "lr": 2e-3, "eval_batch_size": 4},
    "mini": {"base": 4, "proj_dim": 32, "n_positions": 1024, "tau": 0.5, "lambda_rec": 1.0,
             "pretrain_steps": 120, "finetune_epochs": 8, "finetune_min_steps": 50, "batch_size": 4, "lr": 3e-3,
             "warmup_steps": 10, "weight_decay": 1e-4, "eval_batch_size": 8},
    "paper": {"base": 16, "proj_dim": 128, "n_positions": 4096, "tau": 0.5, "lambda_rec": 1.0,
              "pretrain_epochs": 100, "finetune_epochs": 50, "batch_size": 4, "lr": 1e-3, "warmup_steps": 500,
              "weight_decay": 1e-4, "eval_batch_size": 4},
}


class S4Pretrainer(nn.Module):
    """Holds everything pre-training optimises; ``forward(batch)`` returns ``(loss, logs)``."""

    def __init__(self, backbone: UNet3D, channels: dict[str, int], hp: dict[str, Any], w_contrastive: float, w_reconstruction: float, single_modal: bool):
        super().__init__()
        self.backbone = backbone
        self.projection = ProjectionHead(backbone.feature_dim, int(hp["proj_dim"]))
        self.reconstruct = nn.ModuleDict({f"{a}_to_{b}": nn.Conv3d(backbone.feature_dim, channels[b], 1)
                                          for a in channels for b in channels if a != b})
        self.w_c, self.w_r, self.single_modal = w_contrastive, w_reconstruction, single_modal
        self.n_positions, self.tau = int(hp["n_positions"]), float(hp["tau"])

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.single_modal:
            return self._single_modal(batch)
        xr, xo, mask = align_modalities(batch)
        fr, fo = self.backbone(xr, "radar"), self.backbone(xo, "optical")
        loss = fr.new_zeros(())
        logs: dict[str, float] = {}
        if self.w_c:
            lc = space_time_infonce(self.projection(fr), self.projection(fo), mask, self.n_positions, self.tau)
            loss = loss + self.w_c * lc
            logs["contrastive"] = float(lc.detach())
        if self.w_r:
            to_cf = lambda x: x.permute(0, 2, 1, 3, 4)  # noqa: E731 - [B, T, C, H, W] -> [B, C, T, H, W]
            lr = 0.5 * (masked_l1(self.reconstruct["radar_to_optical"](fr), to_cf(xo), mask)
                        + masked_l1(self.reconstruct["optical_to_radar"](fo), to_cf(xr), mask))
            loss = loss + self.w_r * lr
            logs["reconstruction"] = float(lr.detach())
        return loss, logs

    def _single_modal(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        losses = []
        for modality in ("radar", "optical"):
            x, mask = batch[modality], batch[f"{modality}_mask"]
            za = self.projection(self.backbone(augment(x, mask), modality))
            zb = self.projection(self.backbone(augment(x, mask), modality))
            losses.append(space_time_infonce(za, zb, mask, self.n_positions, self.tau))
        loss = torch.stack(losses).mean()
        return loss, {"contrastive": float(loss.detach())}


def augment(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A random view that keeps every (t, h, w) in place: channel gain, offset, noise, dropped dates."""
    b, t, c = x.shape[:3]
    gain = 1 + 0.1 * torch.randn(b, 1, c, 1, 1, device=x.device)
    offset = 0.1 * torch.randn(b, 1, c, 1, 1, device=x.device)
    keep = (torch.rand(b, t, 1, 1, 1, device=x.device) > 0.2) & mask[:, :, None, None, None]
    return (x * gain + offset + 0.1 * torch.randn_like(x)) * keep


class S4Entry:
    """The full S4 method (contrastive + reconstruction pre-training)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
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

    def _steps(self, ctx: RunContext, stage: str, n: int) -> RunContext:
        """Profiles may give epochs (the paper's unit; at least ``<stage>_min_steps`` so a 10 % label
        set still gets a useful number of updates); the fit loop counts steps."""
        hp = dict(ctx.hparams)
        if f"{stage}_steps" not in hp and f"{stage}_epochs" in hp:
            per_epoch = max(1, -(-n // int(hp["batch_size"])))
            hp[f"{stage}_steps"] = max(int(hp.get(f"{stage}_min_steps", 1)), int(hp[f"{stage}_epochs"]) * per_epoch)
        return dataclasses.replace(ctx, hparams=hp)

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None:
        self._build(ctx)
        if not self.pretrains:
            return
        w_r = float(ctx.hparams["lambda_rec"]) if self.w_reconstruction is None else self.w_reconstruction
        model = S4Pretrainer(self.backbone, self.channels, ctx.hparams, self.w_contrastive, w_r, self.single_modal).to(ctx.device)
        fit_in_context(self._steps(ctx, "pretrain", len(unlabeled)), model, lambda m, b: m(b), unlabeled, stage="pretrain",
                       collate_fn=ctx.collate, desc=f"pretrain {self.metadata.name}")

    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None:
        if self.backbone is None:  # pretrain() always runs first in a job; this keeps direct use safe
            self._build(ctx)
        info = ctx.task_info
        self.segmenter = Segmenter(self.backbone, int(info["num_classes"])).to(ctx.device)

        def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            return segmentation_loss(model(batch[modality], batch[f"{modality}_mask"], modality), batch["label"], info)

        fit_in_context(self._steps(ctx, "finetune", len(labeled)), self.segmenter, loss, labeled, stage="finetune",
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
        name="s4_contrastive", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="S4 ablation (Fig. 5a, L_c): multi-modal space-time InfoNCE only", pretraining="multi-modal contrastive")
    w_reconstruction: ClassVar[float | None] = 0.0


class S4Reconstruction(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4_reconstruction", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="S4 ablation (Fig. 5a, L_r): cross-modal L1 reconstruction only", pretraining="cross-modal reconstruction")
    w_contrastive: ClassVar[float] = 0.0


class S4SingleModal(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="s4_single_modal", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="S4 ablation (Fig. 5b): InfoNCE between two augmented views of the same modality",
        pretraining="single-modal contrastive (augmented views)")
    single_modal: ClassVar[bool] = True
    w_reconstruction: ClassVar[float | None] = 0.0


class UNet3DScratch(S4Entry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="unet3d_scratch", version="1", family="segmentation", inputs=("radar", "optical"),
        citation="Rustowicz et al., Semantic segmentation of crop type in Africa, CVPR-W 2019",
        description="the same 3D U-Net trained from scratch on the labels (the floor for every SSL method)",
        pretraining="none")
    pretrains: ClassVar[bool] = False
