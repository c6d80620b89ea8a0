"""Checkpoint files and random state of ``benchmark.training.fit``.

Why apart from the loop: what a checkpoint holds and how it is read safely (``weights_only``,
atomic writes, refusal of another run's file) is the resume contract; the loop only decides when
to write one. RNG states are stored as tensors and numbers so safe loading accepts them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "CheckpointError",
    "atomic_save",
    "get_rng_state",
    "load_checkpoint",
    "restore",
    "seed_everything",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, truncated, or written by a different run."""


# --------------------------------------------------------------------------- RNG state
def seed_everything(seed: int) -> None:
    """Seed torch, Python and NumPy's global generators (jobs and training stages both use it)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def get_rng_state(device: torch.device) -> dict[str, Any]:
    """All global RNG states, as tensors/numbers only so ``weights_only`` loading accepts them.

    On CUDA only this rank's device is saved: touching every GPU would open a context on each.
    """
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- checkpoints
def atomic_save(obj: Any, path: Path) -> None:
    """Temp file in the same folder + fsync + os.replace: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path, config: Any, run: Mapping[str, Any], runtime_fields: frozenset[str]) -> dict[str, Any]:
    """Read safely (``weights_only``) and refuse a checkpoint from a different run.

    ``config`` is the run's config dataclass; its fields other than ``runtime_fields``, and every
    key of ``run``, must match the checkpoint's.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt ({exc}); delete it") from exc
        detail = next((ln for ln in str(exc).splitlines() if "WeightsUnpickler" in ln), str(exc)[:300])
        raise CheckpointError(
            f"checkpoint {path} holds objects that safe loading (weights_only=True) refuses: "
            f"{detail.strip()}. Only tensors, numbers, strings, lists and dicts belong in a checkpoint."
        ) from exc
    except Exception as exc:  # zip/EOF errors vary with the kind of damage
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}. It is corrupt or truncated "
            "(or not written by benchmark.training); delete it to train from scratch."
        ) from exc
    needed = {"format", "done", "step", "config", "run", "model", "optimizer", "scheduler", "data", "ranks"}
    if not isinstance(ckpt, dict) or not needed <= ckpt.keys() or ckpt["format"] != FORMAT:
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not a benchmark.training checkpoint (format {FORMAT}); found {have}")
    # A config field added after the checkpoint was written (e.g. warmup_fraction) counts as its
    # default there: such a run computed what the default computes now.
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    saved_config = {**defaults, **ckpt["config"]} if isinstance(ckpt["config"], dict) else ckpt["config"]
    diffs = [
        f"{k}: checkpoint {saved.get(k, '<missing>')!r} != now {v!r}"
        for saved, now in ((saved_config, dataclasses.asdict(config)), (ckpt["run"], run))
        for k, v in now.items()
        if k not in runtime_fields and saved.get(k, "<missing>") != v
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different training run ({'; '.join(diffs)}); continuing it "
            "would not reproduce this run. Delete it or use another checkpoint_dir."
        )
    return ckpt


def restore(path: Path, what: str, load: Callable[[], Any]) -> None:
    try:
        load()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: its {what} state does not fit this run: {exc}") from exc
