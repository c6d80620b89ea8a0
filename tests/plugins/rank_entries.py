"""An entry for the torchrun harness test: a per-pixel linear model that trains under DDP, and
whose rank 0 (only) raises before training any optical cell, as a rank running out of memory would."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.training import FitConfig, fit, segmentation_loss


class RankZeroFailsOnOptical:
    metadata: ClassVar[EntryMetadata] = EntryMetadata("rank0_fails_optical", "1", "segmentation",
                                                      "pixel linear; rank 0 raises before training an optical cell")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {"steps": 6, "batch_size": 4, "lr": 0.05}}

    def __init__(self) -> None:
        self.model: nn.Module | None = None

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None:
        """No pre-training."""

    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None:
        if modality == "optical" and int(os.environ.get("RANK", "0")) == 0:
            raise RuntimeError("rank 0 failed before training (test)")
        info = ctx.task_info
        self.model = nn.Conv2d(info["channels"][modality], info["num_classes"], kernel_size=1)

        def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            return segmentation_loss(model(batch[modality].float().mean(1)), batch["label"], info)

        result = fit(self.model, loss, labeled, FitConfig.from_hparams(ctx.hparams), device=ctx.device, seed=ctx.seed,
                     checkpoint_dir=ctx.checkpoint_dir, collate_fn=ctx.collate, progress=False)
        ctx.record_fit("finetune", result)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        assert self.model is not None
        return self.model.eval()(batch[modality].float().mean(1))
