"""Per-pixel random forest on temporal features: the classic remote-sensing crop-type baseline.

Each pixel is described by its series resampled to a fixed number of evenly spaced dates plus the
temporal mean and standard deviation of every channel (padding excluded); a scikit-learn random
forest (weighted by the task's class weights) is fitted on a seeded sample of labelled pixels.
No pre-training and no spatial context:
it is the floor that shows what the per-pixel signal alone carries.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.loading import LOADER_KEYS, EpochKeys, loader_kwargs


def pixel_features(batch: dict[str, Any], modality: str, n_dates: int) -> np.ndarray:
    """[B, H, W, F] features: ``n_dates`` evenly spaced valid dates × C, then mean and std × C."""
    x = batch[modality].float()  # [B, T, C, H, W]
    mask = batch[f"{modality}_mask"]
    feats = []
    for b in range(x.shape[0]):
        valid = x[b, mask[b]]  # [T_b, C, H, W]
        idx = torch.linspace(0, valid.shape[0] - 1, n_dates).round().long()
        series = valid[idx].flatten(0, 1)  # [n_dates * C, H, W]
        stats = torch.cat([valid.mean(0), valid.std(0, unbiased=False)])
        feats.append(torch.cat([series, stats]).permute(1, 2, 0))
    return torch.stack(feats).numpy()


class PixelRandomForest:
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="pixel_rf",
        version="1",
        family="segmentation",
        description="per-pixel random forest on resampled series + temporal mean/std (scikit-learn)",
        citation="Breiman 2001; the standard per-pixel crop-type baseline",
        inputs=("radar", "optical"),
        pretraining="none",
    )
    # trains and predicts on the host (numpy / scikit-learn): nothing for ``benchmark estimate`` to size
    host_only: ClassVar[bool] = True
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"n_dates": 4, "trees": 10, "max_pixels": 3_000, "max_depth": 12, "eval_batch_size": 8},
        "mini": {"n_dates": 8, "trees": 100, "max_pixels": 40_000, "max_depth": 20, "crop_passes": 4, "eval_batch_size": 8},
        "paper": {"n_dates": 16, "trees": 300, "max_pixels": 500_000, "max_depth": None, "eval_batch_size": 4},
    }

    def __init__(self) -> None:
        self.model: Any = None
        self.n_dates = 8
        self.num_classes = 0

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None:
        """No self-supervised stage."""

    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None:
        from sklearn.ensemble import RandomForestClassifier

        hp = ctx.hparams
        self.n_dates = int(hp["n_dates"])
        self.num_classes = int(ctx.task_info["num_classes"])
        ignore = ctx.task_info["ignore_index"]
        # Cropped training views (South Sudan at mini) show a random window per read: read them
        # ``crop_passes`` times so the forest sees about as many pixels as from whole patches;
        # an epoch-seeded view draws a new window per pass from (seed, pass, index).
        cropped = bool((ctx.task_info.get("recipe") or {}).get("train_crop"))
        passes = int(hp.get("crop_passes", 1)) if cropped else 1
        keys: Any = (EpochKeys(len(labeled), passes) if getattr(labeled, "epoch_seeded", False)
                     else [i for _ in range(passes) for i in range(len(labeled))])
        settings = {key: hp.get(key) for key in LOADER_KEYS}
        settings["pin_memory"] = False  # features are computed on the host: nothing goes to a device
        loader = torch.utils.data.DataLoader(labeled, batch_size=8, sampler=keys, collate_fn=ctx.collate,
                                             **loader_kwargs(ctx.device, **settings))
        xs, ys = [], []
        with ctx.progress(len(loader), f"features {modality}") as bar:
            for batch in loader:
                f = pixel_features(batch, modality, self.n_dates)
                y = batch["label"].numpy()
                keep = y != ignore
                xs.append(f[keep])
                ys.append(y[keep])
                bar.update(1)
        x, y = np.concatenate(xs), np.concatenate(ys)
        rng = np.random.default_rng(ctx.seed)
        if len(x) > hp["max_pixels"]:
            sel = rng.choice(len(x), int(hp["max_pixels"]), replace=False)
            x, y = x[sel], y[sel]
        weights = ctx.task_info.get("class_weights")  # the task's loss weights, as every network uses
        class_weight = None if weights is None else {k: float(w) for k, w in enumerate(weights)}
        self.model = RandomForestClassifier(n_estimators=int(hp["trees"]), max_depth=hp["max_depth"], min_samples_leaf=2,
                                            n_jobs=-1, random_state=ctx.seed, class_weight=class_weight)
        start = time.perf_counter()
        self.model.fit(x, y)
        ctx.record_fit("finetune", SimpleNamespace(steps_done=1, resumed_from=0, samples_seen=len(labeled), wall_time_s=time.perf_counter() - start))

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("finetune() must run before predict()")
        f = pixel_features(batch, modality, self.n_dates)
        b, h, w, n = f.shape
        proba = self.model.predict_proba(f.reshape(-1, n))
        full = np.full((len(proba), self.num_classes), 1e-6, dtype=np.float32)
        full[:, self.model.classes_] += proba
        logits = np.log(full).reshape(b, h, w, self.num_classes).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(logits))

    def parameter_count(self) -> int:
        """Tree nodes stand in for parameters (a forest has no weight tensors)."""
        return 0 if self.model is None else int(sum(t.tree_.node_count for t in self.model.estimators_))
