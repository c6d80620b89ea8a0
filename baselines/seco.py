"""SeCo baseline (Mañas et al., Seasonal Contrast, ICCV 2021) with the S4 paper's ConvLSTM decoder.

Pre-training (MoCo-v2 with three embedding sub-spaces), per location of the unlabeled view:
three dates t0, t1, t2 drawn at random (with replacement, as SeCo's sampler does); the query is
t0, the keys are k0 = augment(t1) (season and augmentation change: positive in sub-space 0,
invariant to everything), k1 = t2 (season change only: positive in sub-space 1) and
k2 = augment(t0) (augmentation only: positive in sub-space 2). Every view gets its own random
resized crop. Each sub-space has its own projection head (Linear-ReLU-Linear) and queue; in
sub-spaces 1 and 2 the batch's keys of the other two sub-spaces are extra negatives. Loss = sum of
the three InfoNCE terms (temperature 0.07); the key encoder follows by momentum.

Both modalities: one ResNet trunk with a radar stem and an optical stem (like S4's backbone);
each step computes the loss on the batch's radar series and on its optical series (separate
queues: a radar query is never contrasted with optical keys) and averages them, so the radar and
the optical cells both start from a pre-trained encoder.

Fine-tuning: the pre-trained per-date ResNet + a fresh ConvLSTM (state at the last valid date) +
up-sampling decoder (``baselines.temporal_backbone``), cross-entropy, the same budget as S4.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.budget import MINI_FINETUNE_MIN_STEPS
from benchmark.contracts import EntryMetadata, RunContext

from .ssl_common import (
    LOCATION_ID,
    MODALITIES,
    IdLookup,
    KeyQueue,
    SegmentationBaseline,
    batch_id_tensor,
    crop_only,
    full_augment,
    gather_frames,
    info_nce,
    make_momentum_copy,
    mlp_head,
    moco_hparams,
    momentum_update,
    paired_similarity,
    sample_dates,
    similarity,
)
from .temporal_backbone import DateEncoder, TemporalSegmenter

CITATION = "Mañas et al., Seasonal Contrast: Unsupervised Pre-Training from Uncurated Remote Sensing Data, ICCV 2021"

# Profiles are data. Fine-tuning budget = S4's (reference_models/s4/entry.py). Paper widths =
# ResNet-18; pre-training optimiser/lr = SeCo's defaults; momentum/queue_size = SeCo's defaults as
# caps, lowered at run time to the stage's budget (ssl_common.BUDGET_RULE / moco_schedule).
# Pre-training budget at paper: 100 epochs (as S4) at batch 64, not SeCo's 256 (made for 1M
# images): ceil(1,460 / 64) = 23 and ceil(554 / 64) = 9 steps per epoch give 2,300 steps on
# PASTIS-R and 900 on South Sudan (batch 256: 600 / 300), so the MoCo schedule has room: momentum
# 1 - 20 / steps = 0.9913 / 0.9778, queue = the whole pool (1,460 / 554 keys, full after 23 / 9 steps;
# CaCo: 2,920 / 1,108, two windows per location). SeCo / MoCo-v2's SGD lr 0.03 is for batch 256;
# by the linear scaling rule (Goyal et al. 2017, which MoCo follows) batch 64 takes 0.0075.
_COMMON: dict[str, dict[str, Any]] = {
    "smoke": {"widths": [4, 8], "blocks": 1, "stem_stride": 1, "lstm_hidden": 8, "emb_dim": 16, "mlp_dim": 16,
              "queue_size": 16, "momentum": 0.99, "tau": 0.07, "crop_scale": [0.2, 1.0], "blur_sigma": [0.1, 2.0],
              "pretrain_steps": 3, "finetune_steps": 4, "batch_size": 2, "lr": 2e-3, "eval_batch_size": 4},
    "mini": {"widths": [16, 32, 64], "blocks": 1, "stem_stride": 1, "lstm_hidden": 48, "emb_dim": 64, "mlp_dim": 64,
             "queue_size": 64, "momentum": 0.99, "tau": 0.07, "crop_scale": [0.2, 1.0], "blur_sigma": [0.1, 2.0],
             "pretrain_steps": 240, "pretrain_lr": 1e-3, "finetune_epochs": 4, "finetune_min_steps": MINI_FINETUNE_MIN_STEPS,
             "batch_size": 4, "lr": 1e-2, "warmup_fraction": 0.05, "weight_decay": 1e-4, "eval_batch_size": 8},
    "paper": {"widths": [64, 128, 256, 512], "blocks": 2, "stem_stride": 1, "lstm_hidden": 128, "emb_dim": 128,
              "mlp_dim": 512, "queue_size": 16384, "momentum": 0.999, "tau": 0.07, "crop_scale": [0.2, 1.0],
              "blur_sigma": [0.1, 2.0], "pretrain_epochs": 100, "pretrain_batch_size": 64, "pretrain_optimizer": "sgd",
              "pretrain_lr": 0.0075, "pretrain_weight_decay": 1e-4, "pretrain_warmup_fraction": 0.0, "finetune_epochs": 50,
              "batch_size": 4, "lr": 1e-3, "warmup_fraction": 0.05, "weight_decay": 1e-4, "eval_batch_size": 4},
}


def contrastive_profiles(**per_profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The contrastive baselines' shared profiles with per-profile overrides."""
    return {name: {**values, **per_profile.get(name, {})} for name, values in _COMMON.items()}


PROFILES = contrastive_profiles()


def build_encoder(channels: dict[str, int], hp: dict[str, Any]) -> DateEncoder:
    return DateEncoder(channels, hp["widths"], int(hp["blocks"]), int(hp["stem_stride"]))


class MoCoSubspaces(nn.Module):
    """Query/key encoders, ``n`` projection heads and one queue per (modality, sub-space).

    ``hp["momentum"]`` and ``hp["queue_size"]`` are used as given; the entries pass them through
    ``ssl_common.moco_hparams`` first (the stage's budget). The values used are kept as
    ``momentum`` / ``queue_size`` and logged with every step.
    """

    id_lookups: tuple[IdLookup, ...] = ()  # sample-id tables the collate turns into tensors (IdTensorsCollate)

    def __init__(self, encoder: DateEncoder, hp: dict[str, Any], n_spaces: int, modalities: tuple[str, ...] = MODALITIES):
        super().__init__()
        dim, mlp, emb = encoder.out_dim, int(hp["mlp_dim"]), int(hp["emb_dim"])
        self.encoder_q = encoder
        self.heads_q = nn.ModuleList([mlp_head(dim, mlp, emb) for _ in range(n_spaces)])
        self.encoder_k = make_momentum_copy(encoder)
        self.heads_k = make_momentum_copy(self.heads_q)
        self.queue_size = int(hp["queue_size"])
        self.queues = nn.ModuleDict({m: nn.ModuleList([KeyQueue(self.queue_size, emb) for _ in range(n_spaces)])
                                     for m in modalities})
        self.momentum, self.tau, self.hp = float(hp["momentum"]), float(hp["tau"]), hp
        # Under gradient accumulation a forward is one of ``micro_batches`` per optimizer step, and
        # the query encoder does not change between them: m^(1/k) applied k times towards the same
        # weights is exactly one update with m, so the key encoder follows the optimizer steps.
        self.micro_batches = max(1, int(hp.get("micro_batches", 1)))
        self.forward_momentum = self.momentum ** (1.0 / self.micro_batches)

    def schedule_logs(self) -> dict[str, float]:
        """The MoCo schedule in use, for the step logs (curve columns)."""
        return {"momentum": self.momentum, "queue_size": float(self.queue_size)}

    @property
    def device(self) -> torch.device:
        return self.heads_q[0][0].weight.device

    def update_key_encoder(self) -> None:
        momentum_update(self.encoder_q, self.encoder_k, self.forward_momentum)
        momentum_update(self.heads_q, self.heads_k, self.forward_momentum)

    def project_keys(self, images: list[torch.Tensor], modality: str) -> list[list[torch.Tensor]]:
        """``z[i][j]``: key image ``j`` in sub-space ``i`` (normalised, no gradient)."""
        with torch.no_grad():
            v = [self.encoder_k.embed(img, modality) for img in images]
            return [[F.normalize(head(vj).float(), dim=1) for vj in v] for head in self.heads_k]


class SeCoPretrainer(MoCoSubspaces):
    """``forward(batch) -> (loss, logs)``: SeCo's three-sub-space loss on both modalities."""

    def __init__(self, encoder: DateEncoder, hp: dict[str, Any]):
        super().__init__(encoder, hp, n_spaces=3)

    def views(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t0, t1, t2 = gather_frames(x, sample_dates(mask.bool(), 3, replace=True)).unbind(1)
        return crop_only(t0, self.hp), [full_augment(t1, self.hp), crop_only(t2, self.hp), full_augment(t0, self.hp)]

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.update_key_encoder()
        ids = batch_id_tensor(batch, LOCATION_ID, self.device)
        losses, logs = [], self.schedule_logs()
        for modality in MODALITIES:
            if modality not in batch:
                continue
            q, keys = self.views(batch[modality], batch[f"{modality}_mask"])
            loss = seco_loss(self, q, keys, ids, modality)
            losses.append(loss)
            logs[f"loss_{modality}"] = loss.detach()
        return torch.stack(losses).mean(), logs


def seco_loss(model: MoCoSubspaces, q: torch.Tensor, keys: list[torch.Tensor], ids: torch.Tensor, modality: str) -> torch.Tensor:
    """Sum over sub-spaces of InfoNCE(query, positive key ``i``; queue ``i`` + other keys if ``i > 0``).

    Embeddings are normalised and compared in float32 (``similarity``), also under bf16 autocast.
    """
    v_q = model.encoder_q.embed(q, modality)
    z_k = model.project_keys(keys, modality)
    total = v_q.new_zeros((), dtype=torch.float32)
    for i, head in enumerate(model.heads_q):
        z_q = F.normalize(head(v_q).float(), dim=1)
        pos = paired_similarity(z_q, z_k[i][i])
        neg = [model.queues[modality][i].negative_logits(z_q, ids)]
        if i > 0:  # sub-space 0 is invariant to everything; the others must tell the other changes apart
            neg += [similarity(z_q, z_k[i][j]) for j in range(len(keys)) if j != i]
        total = total + info_nce(pos, neg, model.tau)
        model.queues[modality][i].push(z_k[i][i], ids)
    return total


class ContrastiveBaseline(SegmentationBaseline):
    """Shared by SeCo, GSSL and CaCo: a per-date ResNet pre-trained by a MoCo variant, fine-tuned
    with the ConvLSTM decoder."""

    def build_network(self, hp: dict[str, Any]) -> nn.Module:
        return build_encoder(self.channels, hp)

    def build_segmenter(self, num_classes: int, modality: str, hp: dict[str, Any]) -> nn.Module:
        return TemporalSegmenter(self.net, num_classes, int(hp["lstm_hidden"]))


class SeCo(ContrastiveBaseline):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="seco", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="SeCo (MoCo-v2, 3 sub-spaces, seasonal positives) per-date ResNet + ConvLSTM decoder",
        pretraining="single-modal seasonal contrast (both modalities, shared trunk)",
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def build_pretrainer(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> nn.Module:
        return SeCoPretrainer(self.net, moco_hparams(ctx.hparams, len(unlabeled)))
