"""Entries ``motif_fm`` (MoTiF + flow matching) and ``motif_det`` (MoTiF + mask token, MSE).

Both train one model per training window: the harness hands ``fit`` a context whose checkpoint
folder is shared by every cell with the same training window (the cell's ``shared["fit"]``), and
``benchmark.training.fit`` reuses a finished checkpoint, so the evaluation cells of one window
score the same weights.

Profiles are data. ``paper`` = the authors' configuration (values/coords/conditioning widths
512/256/512, 12 blocks, 8 heads, patch 4, cross-source window 4, intra-source window 8, MLP ×2,
AdamW 3e-4 with weight decay 0.05 on weights only, 2 warm-up epochs then cosine over 150 epochs,
gradient clipping 1.0, bf16 on CUDA). ``mini`` is sized so the whole tc_primed table trains and
samples on a 2-core CPU in minutes; ``smoke`` is for tests.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.training import autocast_context, fit_in_context, move_to_device

from .backbone import BackboneConfig, MotifBackbone
from .flow import MotifDeterministic, MotifFlowMatching
from .slots import SLOT_LAYOUT, SlotLayoutCollate, slot_layout

CITATION = ("Dauvilliers & Monteleoni, A self-supervised multi-source framework and architecture for generative "
            "cross-sensor harmonization; MoTiF: Environmental Data Science 4:e36 (2025)")

# the paper's 2 warm-up epochs of 150, as the fraction of the steps FitConfig warms up over
# global batch 16 (the paper's) as 2 windows per device, the authors' per-GPU batch on 8 x H100: 16
# whole-swath windows in one forward need > 145 GB of activations (issue 13, docs/gpu.md)
_TRAIN_PAPER = {"epochs": 150, "warmup_fraction": 2 / 150, "batch_size": 16, "micro_batch_size": 2, "lr": 3e-4,
                "weight_decay": 0.05,
                "min_lr_ratio": 1e-7 / 3e-4, "grad_clip": 1.0, "eval_batch_size": 4}
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"values_dim": 32, "coords_dim": 16, "cond_dim": 32, "blocks": 2, "heads": 2, "patch": 4,
              "cross_window": 2, "swin_window": 2, "mlp_ratio": 2.0,
              "steps": 6, "warmup_fraction": 0.05, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.05, "grad_clip": 1.0,
              "sampling_steps": 8, "sample_chunk": 10, "eval_batch_size": 8},
    # mini: values_dim must exceed channels·patch² (= 64) or the noise of x_t cannot pass through a
    # token and flow matching cannot learn its velocity (48 gave noise-like samples)
    "mini": {"values_dim": 96, "coords_dim": 32, "cond_dim": 32, "blocks": 2, "heads": 2, "patch": 4,
             "cross_window": 3, "swin_window": 3, "mlp_ratio": 2.0,
             "steps": 300, "warmup_fraction": 0.05, "batch_size": 8, "lr": 2e-3, "weight_decay": 0.05, "min_lr_ratio": 0.01,
             "grad_clip": 1.0, "sampling_steps": 24, "sample_chunk": 10, "eval_batch_size": 8},
    "paper": {"values_dim": 512, "coords_dim": 256, "cond_dim": 512, "blocks": 12, "heads": 8, "patch": 4,
              "cross_window": 4, "swin_window": 8, "mlp_ratio": 2.0, **_TRAIN_PAPER,
              "sampling_steps": 24, "sample_chunk": 10},
}


def steps_from_epochs(hp: dict[str, Any], n_train: int) -> dict[str, Any]:
    """Profiles may count training in epochs (the paper's unit); the fit loop counts steps. The
    warm-up is a fraction of those steps (``warmup_fraction``, which FitConfig applies)."""
    hp = dict(hp)
    per_epoch = max(1, n_train // int(hp.get("batch_size", 8)))  # the loop drops the last partial batch
    if "steps" not in hp and "epochs" in hp:
        hp["steps"] = int(math.ceil(float(hp["epochs"]) * per_epoch))
    return hp


class MotifFM:
    """MoTiF backbone trained with flow matching; 10 Euler-sampled realizations per sample."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="motif_fm", version="1", family="reconstruction", citation=CITATION, inputs=("pmw",),
        description="MoTiF multi-source backbone (swath geometry, cross-source + shifted-window attention), flow matching, Euler 24 steps",
        pretraining="self-supervised: reconstruct one randomly chosen source from the others (flow matching)",
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES
    deterministic: ClassVar[bool] = False

    def __init__(self) -> None:
        self.model: MotifFlowMatching | MotifDeterministic | None = None
        self.device = torch.device("cpu")
        self.hparams: dict[str, Any] = {}

    def build(self, info: dict[str, Any], hparams: dict[str, Any], device: torch.device | str = "cpu", seed: int = 0) -> torch.nn.Module:
        """The (untrained) model for a task whose ``info`` gives ``channels`` and ``characs_dim``."""
        torch.manual_seed(seed)  # the same initial weights for every cell of a seed
        self.device, self.hparams = torch.device(device), dict(hparams)
        cfg = BackboneConfig.from_hparams(self.hparams, int(info["channels"]), int(info["characs_dim"]))
        backbone = MotifBackbone(cfg, mask_token=self.deterministic)
        self.model = (MotifDeterministic(backbone) if self.deterministic else MotifFlowMatching(backbone)).to(self.device)
        return self.model

    def fit(self, train: torch.utils.data.Dataset, val: torch.utils.data.Dataset, ctx: RunContext) -> None:
        hp = steps_from_epochs(ctx.hparams, len(train))
        self.build(dict(ctx.task_info), hp, ctx.device, ctx.seed)
        fit_in_context(dataclasses.replace(ctx, hparams=hp), self.model, lambda model, batch: model(batch), train,
                       stage="fit", collate_fn=SlotLayoutCollate(ctx.collate), desc=f"fit {self.metadata.name}")
        self.model.eval()

    @torch.no_grad()
    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("fit() must run before sample()")
        self.model.eval()
        with torch.profiler.record_function("host.slot_layout"):  # read on the host batch, before it moves
            batch = move_to_device({**batch, SLOT_LAYOUT: slot_layout(batch)}, self.device)
        with autocast_context(self.device):
            out = self.model.sample(batch, n, generator, steps=int(self.hparams.get("sampling_steps", 24)),
                                    chunk=int(self.hparams.get("sample_chunk", n)))
        return out.float().cpu()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters()) if self.model is not None else 0


class MotifDet(MotifFM):
    """The deterministic variant: a learned mask token replaces the target, MSE on values."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="motif_det", version="1", family="reconstruction", citation=CITATION, inputs=("pmw",),
        description="MoTiF backbone with a learned [MASK] token for the target, MSE on values (an ensemble of one)",
        pretraining="self-supervised: reconstruct one randomly chosen source from the others (masked, MSE)",
    )
    deterministic: ClassVar[bool] = True
