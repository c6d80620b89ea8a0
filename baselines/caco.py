"""CaCo baseline: change-aware contrastive learning (Mall et al., CVPR 2023), with the S4 paper's
ConvLSTM decoder.

CaCo is SeCo (three sub-spaces, momentum encoder, queues) plus change awareness. Each location
yields two samples from two time windows, next to each other in the batch; every sample draws its
three dates (without replacement) inside its own window. Per (location, window), with the key
encoder and the temporal sub-space 1, CaCo tracks the long-term distance (query vs. the other
window's query) and the short-term distance (query vs. its same-window key k1), as running
averages; after each epoch it fits a 2-component Gaussian mixture to the ratio long/short and
calls the higher-mean component "changed". In every sub-space the other window's keys are extra
negatives, but a sample's own long-term counterpart stays a negative only if its location is
judged changed (otherwise that logit is masked); until the first judgement none is.

Adaptation to SITS (the original windows are years apart): the two windows are the first and the
second half of each series' valid dates (early vs. late season). The queue is shared by both
windows (CaCo splits it by window parity), so it counts two keys per location when its size follows
the stage's budget (``baselines.ssl_common.BUDGET_RULE``). Both modalities share the trunk
(modality stems); the distances, mixtures and queues are per modality. Fine-tuning is the SeCo one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.contracts import EntryMetadata, RunContext

from .seco import CITATION as SECO_CITATION
from .seco import ContrastiveBaseline, MoCoSubspaces, contrastive_profiles
from .ssl_common import (
    LOCATION_ID,
    MODALITIES,
    batch_id_tensor,
    crop_only,
    dataset_ids,
    full_augment,
    gather_frames,
    info_nce,
    moco_hparams,
    paired_similarity,
    sample_dates,
    similarity,
    steps_per_epoch,
    valid_rank,
)

CITATION = "Mall et al., Change-Aware Sampling and Contrastive Learning for Satellite Images, CVPR 2023; " + SECO_CITATION
LOCATION_INDEX = "location_index"  # batch key: each sample's row in the change-state buffers, from IdTensorsCollate
EPOCH_END_RANGE = "host.epoch_end"  # profiler range of the once-per-epoch host work (tests/test_host_syncs.py)
RUNNING_FACTOR = 4.0  # running average: new = (4 · old + value) / 5, as CaCo's dataset bookkeeping

PROFILES = contrastive_profiles()


def season_windows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second half of each sample's valid dates (``mask [B, T]``); a one-date series
    uses its only date for both."""
    mask = mask.bool()
    rank = valid_rank(mask)
    half = ((mask.sum(1) + 1) // 2)[:, None]
    early, late = mask & (rank < half), mask & (rank >= half)
    late = torch.where(late.any(1, keepdim=True), late, early)
    return early, late


def judge_change(ratio: torch.Tensor, seen: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """2-component Gaussian mixture on the seen ratios: 1 = changed (higher-mean component),
    0 = unchanged, −1 = never seen (or too few values to fit a mixture)."""
    out = torch.full_like(seen, -1, dtype=torch.long)
    values = ratio[seen].double().cpu().numpy()
    if len(values) < 4 or values.std() == 0:
        return out
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=2, random_state=seed).fit(values[:, None])
    labels = torch.as_tensor(gmm.predict(values[:, None]), dtype=torch.long)
    if gmm.means_[0, 0] > gmm.means_[1, 0]:
        labels = 1 - labels
    out[seen] = labels.to(out.device)
    return out


def caco_negatives(z_q: torch.Tensor, z_pos: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """Logits of the other window's keys ``[2B, 2B]``; rows/columns interleave (location, window).

    Same-window columns are masked, and a row's own long-term counterpart (column ``n ^ 1``) is
    masked unless ``changed[n]``.
    """
    n = len(z_q)
    idx = torch.arange(n, device=z_q.device)
    same_window = (idx[:, None] % 2) == (idx[None, :] % 2)
    counterpart = idx[None, :] == (idx[:, None] ^ 1)
    masked = same_window | (counterpart & ~changed.bool()[:, None])
    return similarity(z_q, z_pos).masked_fill(masked, float("-inf"))  # float32, autocast off


class CaCoPretrainer(MoCoSubspaces):
    """``forward(batch) -> (loss, logs)``; the change state lives in buffers (checkpointed)."""

    def __init__(self, encoder: nn.Module, hp: dict[str, Any], ids: list[str], epoch_steps: int, seed: int = 0):
        super().__init__(encoder, hp, n_spaces=3)
        self.index_of = {i: k for k, i in enumerate(ids)}
        shape = (len(MODALITIES), 2 * len(ids))
        for name in ("long_term", "short_term", "ratio"):
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("seen", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("changed", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.epoch_steps, self.seed = max(1, int(epoch_steps)), seed
        self.id_lookups = ((LOCATION_INDEX, self.index_of, None),)  # every id must be a pre-training location
        self.host_steps = 0  # ``steps`` mirrored on the host: the epoch test never waits for the device
        self._forward_in_step = 0  # forwards of the current optimizer step so far (host, 0..micro_batches-1)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.host_steps = int(self.steps)  # once per load (resume), not per step
        self._forward_in_step = 0  # checkpoints are written between optimizer steps

    def _advance_clock(self) -> None:
        """Count one training forward; on the first forward of an optimizer step that begins an
        epoch after the first, judge change (``end_of_epoch``). ``steps`` counts optimizer steps,
        not forwards, so a run resumed with another ``micro_batch_size`` keeps its epoch ends."""
        first = self._forward_in_step == 0
        self._forward_in_step = (self._forward_in_step + 1) % self.micro_batches
        if not first:
            return
        if self.host_steps > 0 and self.host_steps % self.epoch_steps == 0:
            # the mixture is fitted by scikit-learn on the host: one device read per epoch, marked
            with torch.profiler.record_function(EPOCH_END_RANGE):
                self.end_of_epoch()
        self.steps += 1
        self.host_steps += 1

    def end_of_epoch(self) -> None:
        for m in range(len(MODALITIES)):
            self.changed[m] = judge_change(self.ratio[m], self.seen[m], self.seed)

    @torch.no_grad()
    def track(self, m: int, entries: torch.Tensor, q: torch.Tensor, k1: torch.Tensor, modality: str) -> None:
        head = self.heads_k[1]
        lq = F.normalize(head(self.encoder_k.embed(q, modality)).float(), dim=1)
        lk = F.normalize(head(self.encoder_k.embed(k1, modality)).float(), dim=1)
        partner = torch.arange(len(lq), device=lq.device) ^ 1
        short = (lq - lk).norm(dim=1)
        long = (lq - lq[partner]).norm(dim=1)
        seen = self.seen[m, entries]
        for name, value in (("short_term", short), ("long_term", long), ("ratio", long / (short + 1e-4))):
            buf = getattr(self, name)
            old = buf[m, entries]
            buf[m, entries] = torch.where(seen, (RUNNING_FACTOR * old + value) / (RUNNING_FACTOR + 1), value)
        self.seen[m, entries] = True

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.training:
            self._advance_clock()
        self.update_key_encoder()
        dev = self.device
        ids = batch_id_tensor(batch, LOCATION_ID, dev).repeat_interleave(2)
        loc = batch_id_tensor(batch, LOCATION_INDEX, dev, self.index_of)
        entries = (2 * loc[:, None] + torch.arange(2, device=dev)).flatten()  # (location, window) interleaved
        losses, logs = [], self.schedule_logs()
        for m, modality in enumerate(MODALITIES):
            if modality not in batch:
                continue
            x = batch[modality]
            frames = torch.stack([gather_frames(x, sample_dates(w, 3, replace=False)) for w in season_windows(batch[f"{modality}_mask"])], 1)
            t0, t1, t2 = frames.flatten(0, 1).unbind(1)  # [2B, ...] each, rows = (location, window)
            q = crop_only(t0, self.hp)
            keys = [full_augment(t1, self.hp), crop_only(t2, self.hp), full_augment(t0, self.hp)]
            self.track(m, entries, q, keys[1], modality)
            loss = self.loss(q, keys, ids, self.changed[m, entries] == 1, modality)
            losses.append(loss)
            logs[f"loss_{modality}"] = loss.detach()
            logs[f"changed_{modality}"] = (self.changed[m] == 1).float().mean()
        return torch.stack(losses).mean(), logs

    def loss(self, q: torch.Tensor, keys: list[torch.Tensor], ids: torch.Tensor, changed: torch.Tensor, modality: str) -> torch.Tensor:
        v_q = self.encoder_q.embed(q, modality)
        z_k = self.project_keys(keys, modality)
        total = v_q.new_zeros((), dtype=torch.float32)
        for i, head in enumerate(self.heads_q):
            z_q = F.normalize(head(v_q).float(), dim=1)
            pos = paired_similarity(z_q, z_k[i][i])
            neg = [self.queues[modality][i].negative_logits(z_q, ids), caco_negatives(z_q, z_k[i][i], changed)]
            neg += [similarity(z_q, z_k[i][j]) for j in range(len(keys)) if j != i and i > 0]
            total = total + info_nce(pos, neg, self.tau)
            self.queues[modality][i].push(z_k[i][i], ids)
        return total


class CaCo(ContrastiveBaseline):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="caco", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="CaCo (SeCo + change-aware long-term negatives, GMM per epoch) per-date ResNet + ConvLSTM decoder",
        pretraining="single-modal change-aware contrast (both modalities, shared trunk)",
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def build_pretrainer(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> nn.Module:
        ids = dataset_ids(unlabeled)
        # every location gives one sample (and pushes one key) per time window: 2 keys per sample
        hp = moco_hparams(ctx.hparams, len(unlabeled), keys_per_sample=2)
        return CaCoPretrainer(self.net, hp, ids, steps_per_epoch(ctx.hparams, "pretrain", len(unlabeled)), ctx.seed)
