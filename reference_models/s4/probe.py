"""What S4's pre-training puts into the frozen backbone: linear probes of its features.

    python -m reference_models.s4.probe --task africa_crop_type [--entry s4 s4_contrastive ...]

For each entry (``unet3d_scratch`` = the randomly initialised backbone, no pre-training) and each
modality, the backbone is pre-trained exactly as in a benchmark job, frozen, and its time-averaged
per-pixel features on test patches are probed with 3-fold cross-validated linear models:

* ``crop_balanced_acc``: logistic regression (balanced classes) → crop type of labelled pixels;
  chance is 1 / number of classes. A pre-training that helps should raise it above random init.
* ``border_r2``: ridge regression → distance to the patch border (clipped at 8 px). Dense
  contrastive learning over positions can be solved partly by encoding *where* a pixel is (zero
  padding makes borders visible) instead of *what* it is; a high value with a low crop accuracy is
  that shortcut.

The probe is a diagnostic, not a benchmark metric: it reuses the task's views and the entries'
own ``pretrain`` so it measures the same backbones the tables fine-tune.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.contracts import RunContext
from benchmark.registry import load_entry, load_task

ENTRIES = ("unet3d_scratch", "s4", "s4_contrastive", "s4_reconstruction", "s4_single_modal")
BORDER_CLIP = 8


def border_distance(height: int, width: int) -> np.ndarray:
    """``[H, W]`` distance in pixels to the nearest patch edge."""
    hh, ww = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.minimum.reduce([hh, ww, height - 1 - hh, width - 1 - ww]).astype(np.float64)


def probe_features(features: np.ndarray, labels: np.ndarray, ignore_index: int, n_pixels: int, seed: int) -> dict[str, float]:
    """Cross-validated linear probes of ``features [B, D, H, W]`` against ``labels [B, H, W]``."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import cross_val_score

    b, d, h, w = features.shape
    x = features.transpose(0, 2, 3, 1).reshape(-1, d)
    y = labels.reshape(-1)
    border = np.minimum(np.broadcast_to(border_distance(h, w), (b, h, w)).reshape(-1), BORDER_CLIP)
    rng = np.random.default_rng(seed)
    anywhere = rng.choice(len(x), min(n_pixels, len(x)), replace=False)
    labelled = np.flatnonzero(y != ignore_index)
    labelled = rng.choice(labelled, min(n_pixels, len(labelled)), replace=False)
    r2 = cross_val_score(Ridge(alpha=1.0), x[anywhere], border[anywhere], cv=3, scoring="r2").mean()
    acc = cross_val_score(LogisticRegression(max_iter=500, class_weight="balanced"), x[labelled], y[labelled],
                          cv=3, scoring="balanced_accuracy").mean()
    return {"crop_balanced_acc": float(acc), "border_r2": float(r2)}


def run_probe(task_name: str, entries: Sequence[str], *, profile: str = "mini", data_root: Path | None = None,
              n_patches: int = 12, n_pixels: int = 6000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (entry, modality) with the probe scores."""
    task = load_task(task_name)
    data, _ = task.resolve_data(data_root, profile)
    cell = next(c for c in task.spec.cells if c.params.get("label_fraction") == 1.0)
    info = task.info(data, cell)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in entries:
            cls = load_entry(name)
            ctx = RunContext(device=torch.device("cpu"), seed=seed, profile=profile, hparams=dict(cls.profiles[profile]),
                             checkpoint_dir=Path(tmp) / name, task_info=info, collate=task.collate, show_progress=False)
            entry = cls()
            entry.pretrain(task.unlabeled(data, cell, ctx), ctx)
            backbone = entry.backbone.eval()
            test = task.labeled(data, "test", cell, ctx)
            batch = task.collate([test[i] for i in range(min(n_patches, len(test)))])
            for modality in ("radar", "optical"):
                with torch.no_grad():
                    feats = backbone(batch[modality], modality, batch[f"{modality}_mask"])
                    mask = batch[f"{modality}_mask"].to(feats.dtype)[:, None, :, None, None]
                    feats = (feats * mask).sum(2) / mask.sum(2).clamp_min(1)
                scores = probe_features(feats.numpy(), batch["label"].numpy(), int(info["ignore_index"]), n_pixels, seed)
                rows.append({"entry": name, "modality": modality, **scores, "chance_acc": 1 / int(info["num_classes"])})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from tabulate import tabulate

    p = argparse.ArgumentParser(prog="python -m reference_models.s4.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, help="a segmentation task, e.g. pastis_r or africa_crop_type")
    p.add_argument("--entry", nargs="+", default=list(ENTRIES), help="S4-family entries to probe")
    p.add_argument("--profile", default="mini")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--patches", type=int, default=12, help="test patches whose pixels are probed")
    p.add_argument("--pixels", type=int, default=6000, help="pixels sampled per probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="json: one object with the settings and a row per (entry, modality), for scripts")
    args = p.parse_args(argv)
    rows = run_probe(args.task, args.entry, profile=args.profile, data_root=args.data_root, n_patches=args.patches,
                     n_pixels=args.pixels, seed=args.seed)
    if args.format == "json":
        settings = {"task": args.task, "profile": args.profile, "seed": args.seed, "patches": args.patches,
                    "pixels": args.pixels, "border_clip": BORDER_CLIP}
        print(json.dumps({**settings, "rows": rows}, indent=1))
        return 0
    print(tabulate([[r["entry"], r["modality"], f"{r['crop_balanced_acc']:.2f}", f"{r['chance_acc']:.2f}", f"{r['border_r2']:.2f}"] for r in rows],
                   headers=["entry (frozen after pre-training)", "modality", "crop balanced acc", "chance", "border-distance R²"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
