"""GSSL baseline: geography-aware self-supervised learning (Ayush et al., ICCV 2021), with the S4
paper's ConvLSTM decoder.

Pre-training: MoCo-v2 (MLP head, 128-d, queue, temperature 0.02) with **temporal positives** --
query and key are two different dates of the same location, each with MoCo-v2's augmentations --
plus a **geo-location pretext**: locations are clustered into classes with K-means on their
coordinates, and a classifier (ReLU → Linear) on the query's projection predicts the class
(cross-entropy added to the contrastive loss).

Coordinates. A sample may carry ``coords`` (any fixed-length float vector, e.g. the footprint
centroid in the dataset's CRS); then the classes are K-means clusters of the coordinates, as in
the paper. PASTIS-R samples carry their footprint centroid (Lambert-93 metres, from
``metadata.geojson``), so there the classes are real places. The South Sudan tiles as released
carry no coordinates; the documented fallback is K-means on the numeric tile id (non-numeric
ids: on their rank), i.e. classes are runs of neighbouring ids, which carry no geography and
reduce the pretext to predicting an arbitrary group of tiles. The choice is logged and kept on
the module (``geo_source``).

Both modalities share the trunk (modality stems), the geo classifier and the class table; each
has its own queue. Momentum and queue size follow the stage's budget
(``baselines.ssl_common.BUDGET_RULE``); the similarity logits are float32 even under autocast. Fine-tuning is the SeCo/CaCo one (``baselines.seco.ContrastiveBaseline``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.contracts import EntryMetadata, RunContext

from .seco import ContrastiveBaseline, MoCoSubspaces, contrastive_profiles
from .ssl_common import (
    LOCATION_ID,
    MODALITIES,
    batch_id_tensor,
    full_augment,
    gather_frames,
    info_nce,
    moco_hparams,
    paired_similarity,
    sample_dates,
)

log = logging.getLogger(__name__)
GEO_CLASS = "geo_class"  # batch key: each sample's geo class, from IdTensorsCollate
_WARNED: set[str] = set()  # say once per process which fallback the geo classes use

CITATION = "Ayush et al., Geography-Aware Self-Supervised Learning, ICCV 2021"

PROFILES = contrastive_profiles(
    smoke={"tau": 0.02, "geo_classes": 3, "geo_weight": 1.0},
    mini={"tau": 0.02, "geo_classes": 8, "geo_weight": 1.0},
    paper={"tau": 0.02, "geo_classes": 100, "geo_weight": 1.0, "queue_size": 65536},
)


def scan_locations(data: torch.utils.data.Dataset) -> tuple[list[str], np.ndarray | None]:
    """Ids of every sample and their ``coords`` (``None`` unless every sample has them)."""
    ids, coords = [], []
    for i in range(len(data)):
        sample = data[i]
        ids.append(str(sample["id"]))
        c = sample.get("coords")
        coords.append(None if c is None else np.asarray(torch.as_tensor(c, dtype=torch.float64).flatten()))
    if coords and all(c is not None for c in coords) and len({c.shape for c in coords}) == 1:
        return ids, np.stack(coords)
    return ids, None


def geo_classes(ids: list[str], coords: np.ndarray | None, k: int, seed: int) -> tuple[dict[str, int], str]:
    """Location class of every id: K-means on ``coords``, else on the numeric id (or its rank)."""
    from sklearn.cluster import KMeans

    if coords is not None:
        points, source = coords, "coords"
    elif all(i.lstrip("-").isdigit() for i in ids):
        points, source = np.array([[float(i)] for i in ids]), "patch-id"
    else:
        order = {i: r for r, i in enumerate(sorted(set(ids)))}
        points, source = np.array([[float(order[i])] for i in ids]), "patch-id-rank"
    n_distinct = len(np.unique(points, axis=0))
    k = max(1, min(int(k), n_distinct))
    if k == 1:
        labels = np.zeros(len(ids), dtype=np.int64)
    else:
        scale = points.std(0, keepdims=True)
        scale[scale == 0] = 1
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(points / scale)
    return {i: int(c) for i, c in zip(ids, labels, strict=True)}, source


class GSSLPretrainer(MoCoSubspaces):
    """``forward(batch) -> (loss, logs)``: temporal-positive MoCo + geo classification, both modalities."""

    def __init__(self, encoder: nn.Module, hp: dict[str, Any], classes: dict[str, int], source: str):
        super().__init__(encoder, hp, n_spaces=1)
        self.class_of, self.geo_source = classes, source
        n = max(classes.values()) + 1 if classes else 1
        self.geo_head = nn.Sequential(nn.ReLU(), nn.Linear(int(hp["emb_dim"]), n))
        self.geo_weight = float(hp["geo_weight"])
        self.id_lookups = ((GEO_CLASS, classes, 0),)  # as before: an id without a class gets class 0

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.update_key_encoder()
        ids = batch_id_tensor(batch, LOCATION_ID, self.device)
        target = batch_id_tensor(batch, GEO_CLASS, self.device, self.class_of, 0)
        losses, logs = [], self.schedule_logs()
        for modality in MODALITIES:
            if modality not in batch:
                continue
            x, mask = batch[modality], batch[f"{modality}_mask"].bool()
            t0, t1 = gather_frames(x, sample_dates(mask, 2, replace=False)).unbind(1)  # two different dates
            q_img, k_img = full_augment(t0, self.hp), full_augment(t1, self.hp)
            p_q = self.heads_q[0](self.encoder_q.embed(q_img, modality))
            z_q = F.normalize(p_q.float(), dim=1)
            z_k = self.project_keys([k_img], modality)[0][0]
            queue = self.queues[modality][0]
            # float32 similarities (autocast off): at tau = 0.02 a bf16 logit is off by up to ~0.2
            contrast = info_nce(paired_similarity(z_q, z_k), [queue.negative_logits(z_q, ids)], self.tau)
            queue.push(z_k, ids)
            geo = F.cross_entropy(self.geo_head(p_q).float(), target)
            losses.append(contrast + self.geo_weight * geo)
            logs[f"contrast_{modality}"], logs[f"geo_{modality}"] = contrast.detach(), geo.detach()
        return torch.stack(losses).mean(), logs


class GSSL(ContrastiveBaseline):
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="gssl", version="1", family="segmentation", citation=CITATION, inputs=("radar", "optical"),
        description="GSSL (MoCo-v2 with temporal positives + geo-location classes) per-date ResNet + ConvLSTM decoder",
        pretraining="single-modal temporal contrast + geo-location pretext (both modalities, shared trunk)",
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def build_pretrainer(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> nn.Module:
        ids, coords = scan_locations(unlabeled)
        classes, source = geo_classes(ids, coords, int(ctx.hparams["geo_classes"]), ctx.seed)
        if source != "coords" and source not in _WARNED:
            _WARNED.add(source)
            log.warning("gssl: the samples carry no 'coords'; geo classes are K-means clusters of the %s "
                        "(not geography on real data)", source)
        return GSSLPretrainer(self.net, moco_hparams(ctx.hparams, len(unlabeled)), classes, source)
