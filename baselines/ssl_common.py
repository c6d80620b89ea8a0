"""Machinery shared by the paper's SSL baselines: MoCo queue and momentum update, image
augmentations on normalised tensors, date sampling from padded series, and the entry skeleton
(pre-train → fine-tune → predict through ``benchmark.training``).

Randomness comes from torch's global RNG, which ``benchmark.training.fit`` seeds and checkpoints,
so pre-training is reproducible and resumable.

Pre-training budget (``BUDGET_RULE``): **equal samples seen**. Every self-supervised method
pre-trains for the same number of epochs (100 at ``paper``, as S4) over the same unlabeled pool;
the number of optimizer steps then follows from each method's batch (``benchmark.budget``). Everything
the original methods tie to their own, much longer schedules is derived at run time from the
actual stage (its ``pretrain_steps``, per-rank batch and per-rank pool), by ``moco_schedule``:

* MoCo key-encoder momentum ``m = min(profile momentum, 1 − 20 / steps)``, so the key
  encoder's averaging window ``1 / (1 − m)`` is at most 5 % of the stage's steps (at least one
  step: ``m ≥ 0``);
* queue size ``= min(profile queue_size, samples in the pool, batch · max(1, ⌊0.05 · steps⌋))``,
  so the queue holds at most one epoch of keys and fills within 5 % of the steps.

The values used are kept on the pre-trainer (``momentum``, ``queue_size``) and logged with every
step (curve columns ``momentum`` and ``queue_size``). Warm-ups are a share of the stage too
(``warmup_fraction``, at most 5 %). MoCo / InfoNCE similarities are computed in float32 with
autocast off (``similarity``, ``paired_similarity``): at τ = 0.02 bf16 logits are off by ~0.2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.budget import with_stage_steps
from benchmark.contracts import EntryMetadata, RunContext
from benchmark.training import (
    FitConfig,
    autocast_context,
    distributed_info,
    fit_in_context,
    move_to_device,
    segmentation_loss,
)

from .temporal_backbone import valid_frame_index

log = logging.getLogger(__name__)
FRAME_INDEX = "frame_index"  # batch key: the valid frames of the fine-tuned modality, computed on the host
LOCATION_ID = "location_id"  # batch key: ``location_ids`` of the batch's sample ids, computed on the host


@dataclasses.dataclass(frozen=True)
class FrameIndexCollate:
    """``collate`` that also stores ``valid_frame_index`` of ``modality``'s mask in the batch.

    Why: the collate function runs on the host (in loader workers), where the index costs nothing;
    the segmenter then selects the valid frames with a fixed gather instead of a device sync. A
    class, not a closure, so loader workers started by spawn/forkserver can pickle it.
    """

    collate: Callable[[list[Any]], Any] | None
    modality: str

    def __call__(self, items: list[Any]) -> Any:
        batch = (self.collate or torch.utils.data.default_collate)(items)
        batch[FRAME_INDEX] = valid_frame_index(batch[f"{self.modality}_mask"])
        return batch


IdLookup = tuple[str, Mapping[str, int], int | None]  # (batch key, table of str(id) -> int, default or None: required)


@dataclasses.dataclass(frozen=True)
class IdTensorsCollate:
    """``collate`` that adds the batch's ``location_ids`` under ``LOCATION_ID`` and, per lookup, the
    table's integer for each sample id.

    Why: ``torch.tensor(list, device="cuda")`` copies from pageable host memory and waits for the
    stream; built here on the host, these tensors move with the batch like the rest of it.
    """

    collate: Callable[[list[Any]], Any] | None
    lookups: tuple[IdLookup, ...] = ()

    def __call__(self, items: list[Any]) -> Any:
        batch = (self.collate or torch.utils.data.default_collate)(items)
        batch[LOCATION_ID] = location_ids(batch["id"])
        for key, table, default in self.lookups:
            batch[key] = id_lookup(batch["id"], table, default)
        return batch


def id_lookup(ids: Iterable[Any], table: Mapping[str, int], default: int | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """``table[str(id)]`` per id as int64 (``default`` for missing ids; None: a missing id is an error)."""
    try:
        values = [table[str(i)] if default is None else table.get(str(i), default) for i in ids]
    except KeyError as exc:
        raise KeyError(f"sample id {exc.args[0]!r} is not one of the pre-training set's ids") from None
    return torch.tensor(values, dtype=torch.long, device=device)


def batch_id_tensor(batch: dict[str, Any], key: str, device: torch.device, table: Mapping[str, int] | None = None,
                    default: int | None = None) -> torch.Tensor:
    """The batch's ``key`` tensor made by ``IdTensorsCollate``; built here (one blocking copy) when
    the batch did not come through it (``LOCATION_ID`` without a table)."""
    if key in batch:
        return batch[key]
    return location_ids(batch["id"], device) if table is None else id_lookup(batch["id"], table, default, device)


MODALITIES = ("radar", "optical")

# The share of a stage's steps that bounds every schedule-bound quantity: warm-up, the key
# encoder's averaging window 1 / (1 − m), and the steps the queue takes to fill.
SCHEDULE_FRACTION = 0.05
BUDGET_RULE = (
    "Equal samples seen: every self-supervised method pre-trains for the same number of epochs "
    "(100 at paper, as S4) over the same unlabeled pool; its optimizer steps follow from its batch. "
    "What the originals tie to their longer schedules is derived from the actual stage: MoCo "
    "momentum m = min(profile momentum, 1 - 20 / steps) (averaging window <= 5 % of the steps), "
    "queue = min(profile queue, pool size, batch * max(1, floor(0.05 * steps))) (at most one epoch of "
    "keys, full within 5 % of the steps), warm-up at most 5 % of the stage's steps."
)


# --------------------------------------------------------------------------- budget
def moco_schedule(steps: int, pool_size: int, batch: int, hp: dict[str, Any]) -> tuple[float, int]:
    """``(momentum, queue_size)`` for a MoCo stage of ``steps`` optimizer steps over ``pool_size``
    samples in batches of ``batch`` (all per rank), capped by the profile's ``momentum`` and
    ``queue_size`` (see ``BUDGET_RULE``)."""
    steps, pool_size, batch = int(steps), int(pool_size), int(batch)
    cap = 1.0 - 1.0 / (SCHEDULE_FRACTION * steps) if steps > 0 else 0.0  # = 1 - 20 / steps
    momentum = min(float(hp["momentum"]), max(0.0, cap))
    fill_steps = max(1, math.floor(SCHEDULE_FRACTION * steps + 1e-9))
    queue = max(1, min(int(hp["queue_size"]), pool_size, batch * fill_steps))
    return momentum, queue


def rank_pool_size(n: int) -> int:
    """Samples one rank sees per epoch (each global batch is shared out over the ranks)."""
    world = distributed_info()[1]
    return -(-int(n) // world)


def moco_hparams(hp: dict[str, Any], pool_size: int, keys_per_sample: int = 1) -> dict[str, Any]:
    """``hp`` with ``momentum`` and ``queue_size`` set by ``moco_schedule`` for the pre-training
    stage ``fit`` will run (``pretrain_steps`` after ``with_stage_steps``, per-rank batch and pool).
    ``keys_per_sample``: keys a sample pushes per step (CaCo: one per time window)."""
    cfg = FitConfig.from_hparams(hp, "pretrain")
    per_rank = cfg.batch_size // distributed_info()[1]  # batch_size is the global batch: one rank's share
    momentum, queue = moco_schedule(cfg.steps, rank_pool_size(pool_size) * keys_per_sample,
                                    per_rank * keys_per_sample, hp)
    if (momentum, queue) != (float(hp["momentum"]), int(hp["queue_size"])):
        log.info("MoCo schedule for %d steps over %d samples (batch %d): momentum %.5g (profile %s), queue %d (profile %s)",
                 cfg.steps, pool_size, cfg.batch_size, momentum, hp["momentum"], queue, hp["queue_size"])
    # forwards per optimizer step on this rank: the key encoder's update and CaCo's epoch clock count them
    return {**hp, "momentum": momentum, "queue_size": queue, "micro_batches": cfg.accumulate}


# --------------------------------------------------------------------------- fp32 similarities
def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # a device type autocast does not know: nothing to turn off
        return contextlib.nullcontext()


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [N, D] · b [M, D]ᵀ → [N, M]`` in float32 even under bf16 autocast (which would cast a
    matmul to bf16: ~3 significant digits, ~0.2 error in a logit at τ = 0.02)."""
    with _autocast_off(a.device):
        return a.float() @ b.float().T


def paired_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products ``[N]`` of ``a, b [N, D]`` in float32 (the positives' logits)."""
    with _autocast_off(a.device):
        return (a.float() * b.float()).sum(1)


# --------------------------------------------------------------------------- MoCo
@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target ← m · target + (1 − m) · online`` for parameters (as MoCo: the key encoder's
    BatchNorm keeps its own statistics)."""
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.mul_(m).add_(p_o.detach(), alpha=1.0 - m)


def make_momentum_copy(online: nn.Module) -> nn.Module:
    """A frozen copy of ``online`` (e.g. MoCo's key encoder): same weights, no gradients."""
    import copy

    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class KeyQueue(nn.Module):
    """MoCo's FIFO of L2-normalised keys ``[size, dim]`` with the location id of each key.

    Slots start empty (id −1) and are never used as negatives until filled; a query never sees a
    key of its own location as a negative (with datasets of ~100 locations the queue would
    otherwise soon hold stale copies of the positive).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        size = self.keys.shape[0]
        keys, ids = keys.detach()[-size:], ids[-size:]
        # the pointer stays on the device: reading it back each step would wait for the GPU
        pos = (self.ptr + torch.arange(len(keys), device=self.keys.device)) % size
        self.keys[pos] = keys.to(self.keys.dtype)
        self.ids[pos] = ids.to(self.ids.device)
        self.ptr.copy_((self.ptr + len(keys)) % size)

    def negative_logits(self, q: torch.Tensor, q_ids: torch.Tensor) -> torch.Tensor:
        """``q [N, D]`` (normalised) · queue → ``[N, size]`` in float32, −inf where unusable."""
        logits = similarity(q, self.keys.clone())  # a copy: push() overwrites the queue in place
        bad = (self.ids[None, :] < 0) | (self.ids[None, :] == q_ids[:, None])
        return logits.masked_fill(bad, float("-inf"))


def moco_logits(pos: torch.Tensor, neg: list[torch.Tensor], tau: float) -> torch.Tensor:
    """``[N, 1 + ΣK_i]`` float32 logits ``/ tau``, the positive first (autocast off)."""
    with _autocast_off(pos.device):
        return torch.cat([pos.float()[:, None], *(n.float() for n in neg)], 1) / tau


def info_nce(pos: torch.Tensor, neg: list[torch.Tensor], tau: float) -> torch.Tensor:
    """Cross-entropy with the positive logit first: ``pos [N]``, negatives ``[N, K_i]`` (−inf = masked).

    Give similarities computed in float32 (``similarity``, ``paired_similarity``,
    ``KeyQueue.negative_logits``): a bf16 similarity has already lost the precision.
    """
    logits = moco_logits(pos, neg, tau)
    with _autocast_off(pos.device):
        return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def mlp_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    """MoCo-v2 projection head: Linear → ReLU → Linear."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def location_ids(ids: Iterable[Any], device: torch.device | str = "cpu") -> torch.Tensor:
    """Stable int64 ids from sample ids (integers kept, other strings hashed)."""
    out = []
    for i in ids:
        s = str(i)
        out.append(int(s) if s.lstrip("-").isdigit() and len(s) < 18 else
                   int.from_bytes(hashlib.blake2b(s.encode(), digest_size=7).digest(), "big"))
    return torch.tensor(out, dtype=torch.long, device=device)


# --------------------------------------------------------------------------- dates and frames
def valid_rank(mask: torch.Tensor) -> torch.Tensor:
    """Position of each valid date among its sample's valid dates (``mask [B, T]`` → ``[B, T]``)."""
    return mask.long().cumsum(1) - 1


def sample_dates(allowed: torch.Tensor, k: int, replace: bool) -> torch.Tensor:
    """``k`` date indices per sample among ``allowed [B, T]`` (random, uniform).

    Without replacement the ``k`` are distinct when a sample has at least ``k`` allowed dates
    (otherwise they repeat); with replacement each is an independent draw.
    """
    b, t = allowed.shape
    r = torch.rand(b, t, device=allowed.device).masked_fill(~allowed, 2.0)
    order = r.argsort(1)  # allowed dates first, in random order
    n = allowed.sum(1).clamp_min(1)
    if replace:
        j = (torch.rand(b, k, device=allowed.device) * n[:, None]).long().clamp(max=t - 1)
    else:
        j = torch.arange(k, device=allowed.device)[None, :] % n[:, None]
    return order.gather(1, j)


def gather_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [B, T, ...]`` at ``idx [B]`` → ``[B, ...]`` (or ``idx [B, k]`` → ``[B, k, ...]``)."""
    rows = torch.arange(x.shape[0], device=x.device)
    return x[rows, idx] if idx.ndim == 1 else x[rows[:, None], idx]


# --------------------------------------------------------------------------- augmentations
def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (0.75, 4 / 3),
                        flip: bool = True) -> torch.Tensor:
    """Per-image random crop of ``scale`` × area and aspect ``ratio``, resized back to H × W
    (bilinear), with a random horizontal flip: torchvision's RandomResizedCrop + flip on tensors."""
    n, dev = x.shape[0], x.device
    area = torch.empty(n, device=dev).uniform_(*scale)
    logr = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    sw = (area * logr.exp()).sqrt().clamp(max=1.0)
    sh = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sw)
    cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - sh)
    sign = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=dev)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw * sign, cx, sh, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-image Gaussian blur with standard deviation ``sigma [N]`` pixels (reflect padding)."""
    n, c, h, w = x.shape
    radius = max(1, min(math.ceil(2 * max_sigma), (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k1 = torch.exp(-0.5 * (t[None, :] / sigma[:, None].to(x.dtype)) ** 2)
    k1 = k1 / k1.sum(1, keepdim=True)  # [N, k]
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    kx = k1.repeat_interleave(c, 0)[:, None, None, :]
    ky = k1.repeat_interleave(c, 0)[:, None, :, None]
    y = F.conv2d(F.conv2d(y, kx, groups=n * c), ky, groups=n * c)
    return y.reshape(n, c, h, w)


def color_augment(x: torch.Tensor, jitter: float = 0.4, p_jitter: float = 0.8, p_gray: float = 0.2,
                  p_blur: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """MoCo-v2's photometric augmentation adapted to standardised multi-band tensors.

    ColorJitter(b, c, s) becomes: brightness = gain (1 ± b), contrast = scaling of the deviation
    from the image mean (1 ± c), saturation = blend with the band mean (1 ± s); hue has no meaning
    for radar or standardised bands and is left out. Then grayscale (band mean) with ``p_gray`` and
    Gaussian blur with ``p_blur``. Every draw is per image.
    """
    n, dev = x.shape[0], x.device
    shape = (n, 1, 1, 1)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(shape, device=dev) < p).to(x.dtype)

    def factor() -> torch.Tensor:
        return torch.empty(shape, device=dev, dtype=x.dtype).uniform_(1 - jitter, 1 + jitter)

    on = coin(p_jitter)
    y = x * factor()
    mean = y.mean((1, 2, 3), keepdim=True)
    y = mean + (y - mean) * factor()
    s = factor()
    y = y.mean(1, keepdim=True) + (y - y.mean(1, keepdim=True)) * s
    x = on * y + (1 - on) * x
    g = coin(p_gray)
    x = g * x.mean(1, keepdim=True).expand_as(x) + (1 - g) * x
    if p_blur > 0:
        sigma = torch.empty(n, device=dev).uniform_(*blur_sigma)
        b = coin(p_blur)
        x = b * gaussian_blur(x, sigma, blur_sigma[1]) + (1 - b) * x
    return x


def crop_only(x: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
    """SeCo's ``preprocess``: every view gets its own random resized crop."""
    return random_resized_crop(x, tuple(hp.get("crop_scale", (0.2, 1.0))), flip=False)


def full_augment(x: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
    """Photometric augmentation + flip, then the random resized crop (SeCo's ``augment`` → ``preprocess``)."""
    x = color_augment(x, blur_sigma=tuple(hp.get("blur_sigma", (0.1, 2.0))))
    return random_resized_crop(x, tuple(hp.get("crop_scale", (0.2, 1.0))), flip=True)


# --------------------------------------------------------------------------- entry skeleton
def steps_per_epoch(hp: dict[str, Any], stage: str, n: int) -> int:
    """Optimizer steps in one pass over ``n`` samples as ``benchmark.training.fit`` makes them
    (global batches of ``batch_size``, whatever the world size)."""
    cfg = FitConfig.from_hparams(hp, stage)
    drop = cfg.drop_last and n >= cfg.batch_size
    return max(1, n // cfg.batch_size if drop else -(-n // cfg.batch_size))


def dataset_ids(data: torch.utils.data.Dataset) -> list[str]:
    """The ``id`` of every sample, in dataset order (reads each sample once)."""
    return [str(data[i]["id"]) for i in range(len(data))]


class SegmentationBaseline:
    """Entry skeleton: subclasses build the pre-trained network, the pre-training module and the
    segmenter; this class runs them through ``benchmark.training`` and predicts.

    ``segmenter(x, mask, dates, modality)`` maps one modality's padded series to logits.
    """

    metadata: ClassVar[EntryMetadata]
    profiles: ClassVar[dict[str, dict[str, Any]]]

    def __init__(self) -> None:
        self.net: nn.Module | None = None
        self.segmenter: nn.Module | None = None
        self.device = torch.device("cpu")
        self.channels: dict[str, int] = {}

    # -- what a baseline provides
    def build_network(self, hp: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def build_pretrainer(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> nn.Module:
        raise NotImplementedError

    def build_segmenter(self, num_classes: int, modality: str, hp: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    # -- the protocol
    def _build(self, ctx: RunContext) -> None:
        torch.manual_seed(ctx.seed)  # identical initial weights for every cell of a seed
        self.device = ctx.device
        self.channels = dict(ctx.task_info["channels"])
        self.net = self.build_network(ctx.hparams).to(ctx.device)

    def _pretrain_optimizer(self, hp: dict[str, Any]) -> Any:
        """SGD with momentum 0.9 when the profile says so (the contrastive papers' optimiser);
        otherwise ``None``: the fit loop's AdamW."""
        if hp.get("pretrain_optimizer", "adamw") != "sgd":
            return None
        cfg = FitConfig.from_hparams(hp, "pretrain")

        def factory(model: nn.Module) -> torch.optim.Optimizer:
            params = [p for p in model.parameters() if p.requires_grad]
            return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)

        return factory

    def pretrain_context(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> RunContext:
        """Hook: the pre-training context once ``pretrain_steps`` is known (``with_stage_steps`` has
        run); a baseline derives schedule-bound hyper-parameters here (SatMAE: its lr)."""
        return ctx

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None:
        self._build(ctx)
        ctx = self.pretrain_context(unlabeled, with_stage_steps(ctx, "pretrain", len(unlabeled)))
        model = self.build_pretrainer(unlabeled, ctx).to(ctx.device)
        kwargs = {}
        factory = self._pretrain_optimizer(ctx.hparams)
        if factory is not None:
            kwargs["optimizer_factory"] = factory
        lookups = getattr(model, "id_lookups", None)  # pre-trainers that read sample ids get them as tensors
        collate = ctx.collate if lookups is None else IdTensorsCollate(ctx.collate, tuple(lookups))
        fit_in_context(ctx, model, lambda m, b: m(b), unlabeled, stage="pretrain", collate_fn=collate,
                       desc=f"pretrain {self.metadata.name}", **kwargs)

    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None:
        if self.net is None:  # pretrain() always runs first in a job; this keeps direct use safe
            self._build(ctx)
        info = ctx.task_info
        torch.manual_seed(ctx.seed + 1)  # the fresh decoder/head start identically in every cell
        self.segmenter = self.build_segmenter(int(info["num_classes"]), modality, ctx.hparams).to(ctx.device)

        def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            extra = {"frame_index": batch[FRAME_INDEX]} if FRAME_INDEX in batch else {}
            logits = model(batch[modality], batch[f"{modality}_mask"], batch[f"{modality}_dates"], modality, **extra)
            return segmentation_loss(logits, batch["label"], info)

        collate = FrameIndexCollate(ctx.collate, modality) if getattr(self.segmenter, "takes_frame_index", False) else ctx.collate
        fit_in_context(with_stage_steps(ctx, "finetune", len(labeled)), self.segmenter, loss, labeled, stage="finetune",
                       collate_fn=collate, desc=f"finetune {self.metadata.name} {modality}")

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        if self.segmenter is None:
            raise RuntimeError("finetune() must run before predict()")
        self.segmenter.eval()
        extra = {}
        if getattr(self.segmenter, "takes_frame_index", False):  # from the host mask, before it moves
            with torch.profiler.record_function("host.frame_index"):  # host tensors: no device to wait for
                extra["frame_index"] = move_to_device(valid_frame_index(batch[f"{modality}_mask"]), self.device)
        x, mask, dates = (move_to_device(batch[k], self.device) for k in (modality, f"{modality}_mask", f"{modality}_dates"))
        with autocast_context(self.device):
            logits = self.segmenter(x, mask, dates, modality, **extra)
        return logits.float().cpu()

    def parameter_count(self) -> int:
        """Parameters used at inference (the segmenter, or the pre-trained network before fine-tuning)."""
        module = self.segmenter or self.net
        return sum(p.numel() for p in module.parameters()) if module is not None else 0
