"""A complete, minimal segmentation entry: copy this file to start your own.

It classifies each pixel from the temporal mean and standard deviation of the chosen modality
(a per-pixel linear model, no pre-training). Run it with

    python -m benchmark check-entry examples/minimal_entry.py:PixelLinear
    python -m benchmark run --task pastis_r --entry examples/minimal_entry.py:PixelLinear

or register it from your own package in ``pyproject.toml``:

    [project.entry-points."benchmark.entries"]
    pixel_linear = "my_package.my_module:PixelLinear"
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.training import FitConfig, fit, segmentation_loss


def temporal_features(batch: dict[str, Any], modality: str) -> torch.Tensor:
    """[B, 2C, H, W]: mean and std over the valid dates (padding excluded by the time mask)."""
    x = batch[modality].float()  # [B, T, C, H, W]
    mask = batch[f"{modality}_mask"].to(x.dtype)[:, :, None, None, None]
    n = mask.sum(1).clamp_min(1)
    mean = (x * mask).sum(1) / n
    std = (((x - mean[:, None]) ** 2 * mask).sum(1) / n).sqrt()
    return torch.cat([mean, std], 1)


class PixelLinear:
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="pixel_linear",
        version="1",
        family="segmentation",
        description="per-pixel linear classifier on temporal mean/std (example entry)",
        inputs=("radar", "optical"),
        pretraining="none",
    )
    # Profiles are data: every knob the entry reads from ctx.hparams, per profile.
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"steps": 80, "batch_size": 4, "lr": 0.05},
        "mini": {"steps": 200, "batch_size": 8, "lr": 0.02},
        "paper": {"steps": 2000, "batch_size": 16, "lr": 0.01},
    }

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.device = torch.device("cpu")

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None:
        """No self-supervised stage: this entry is a supervised floor."""

    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None:
        info = ctx.task_info
        channels, classes = info["channels"][modality], info["num_classes"]
        self.device = ctx.device
        self.model = nn.Conv2d(2 * channels, classes, kernel_size=1).to(ctx.device)

        def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            # the task's ignore index and class weights: entries differ in models, not in losses
            return segmentation_loss(model(temporal_features(batch, modality)), batch["label"], info)

        result = fit(self.model, loss, labeled, FitConfig.from_hparams(ctx.hparams), device=ctx.device, seed=ctx.seed,
                     checkpoint_dir=ctx.checkpoint_dir, collate_fn=ctx.collate, progress=ctx.show_progress, desc=f"finetune {modality}")
        ctx.record_fit("finetune", result)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        assert self.model is not None, "finetune() must run before predict()"
        self.model.eval()
        feats = temporal_features({k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}, modality)
        return self.model(feats).float().cpu()
