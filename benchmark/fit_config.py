"""What ``fit`` trains and how: ``FitConfig`` (from a profile's hyper-parameters) and ``FitResult``.

Why apart from the loop: profiles, the ``estimate`` command and checkpoints read configs without
training; which fields identify a run (and so a checkpoint) and which are runtime settings is
decided here, once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .batching import BatchSplit
from .devices import distributed_info

__all__ = ["CUDA_LOG_EVERY", "SCHEDULES", "FitConfig", "FitResult"]

# Fields that change how a run executes but not what it computes: they may differ on resume.
# ``micro_batch_size`` and ``compile`` change float rounding only (the global batch, its samples
# and its loss weighting stay), so a run may resume on a smaller GPU with a smaller micro-batch.
_RUNTIME_FIELDS = frozenset({"num_workers", "checkpoint_every", "ddp_find_unused_parameters", "micro_batch_size",
                             "log_every", "pin_memory", "persistent_workers", "prefetch_factor", "compile"})
_INT_FIELDS = ("steps", "batch_size", "warmup_steps", "checkpoint_every", "micro_batch_size", "log_every")
_OPTIONAL_INT_FIELDS = ("num_workers", "prefetch_factor")
_FLOAT_FIELDS = ("lr", "weight_decay", "warmup_fraction", "min_lr_ratio")
SCHEDULES = ("cosine", "constant")
CUDA_LOG_EVERY = 50  # log_every=0 on an accelerator: one host read per 50 steps



# --------------------------------------------------------------------------- config / result
@dataclass
class FitConfig:
    """What is trained and how; every field except the runtime ones identifies the run.

    ``batch_size`` is the global batch of one optimizer step (the paper's), over all ranks and
    micro-batches; ``micro_batch_size`` (0 = ``batch_size // world size``) is what one forward on
    one device holds, and the accumulation is derived from both. Runtime fields: ``log_every``
    (host reads of loss/logs every N steps; 0 = every step on CPU, ``CUDA_LOG_EVERY`` elsewhere),
    the loader settings (``None`` = ``benchmark.loading.loader_kwargs`` device defaults) and
    ``compile`` (``torch.compile`` the model).
    """

    steps: int
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_fraction: float = 0.0  # warm-up as a share of ``steps`` (exclusive with ``warmup_steps``)
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    num_workers: int | None = None
    checkpoint_every: int = 0
    amp: bool = True
    drop_last: bool = True
    ddp_find_unused_parameters: bool = False
    micro_batch_size: int = 0
    log_every: int = 0
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    prefetch_factor: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        # Profiles are data (often YAML/JSON): coerce 1e3 -> 1000 but refuse 2.5 steps.
        for name in _INT_FIELDS + _OPTIONAL_INT_FIELDS:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_INT_FIELDS:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
                raise ValueError(f"FitConfig.{name} must be an integer, got {value!r}")
            setattr(self, name, int(value))
        for name in _FLOAT_FIELDS:
            setattr(self, name, float(getattr(self, name)))
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)
            if self.grad_clip <= 0:
                raise ValueError(f"FitConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        self.amp, self.drop_last, self.compile = bool(self.amp), bool(self.drop_last), bool(self.compile)
        self.ddp_find_unused_parameters = bool(self.ddp_find_unused_parameters)
        for name in ("pin_memory", "persistent_workers"):
            if getattr(self, name) is not None:
                setattr(self, name, bool(getattr(self, name)))
        checks = {
            "steps": self.steps >= 0,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr >= 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "warmup_fraction": 0.0 <= self.warmup_fraction <= 1.0,
            "min_lr_ratio": 0.0 <= self.min_lr_ratio <= 1.0,
            "num_workers": self.num_workers is None or self.num_workers >= 0,
            "checkpoint_every": self.checkpoint_every >= 0,
            "schedule": self.schedule in SCHEDULES,
            "micro_batch_size": self.micro_batch_size >= 0,
            "log_every": self.log_every >= 0,
            "prefetch_factor": self.prefetch_factor is None or self.prefetch_factor >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid FitConfig: " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))
        if self.warmup_steps and self.warmup_fraction:
            raise ValueError(
                f"FitConfig: give either warmup_steps ({self.warmup_steps}) or warmup_fraction "
                f"({self.warmup_fraction}), not both: set the other to 0 (for one stage: "
                "<stage>_warmup_steps: 0 or <stage>_warmup_fraction: 0)"
            )
        self.split()  # a global batch this process's world cannot split is refused now, not mid-run

    def split(self, world_size: int | None = None) -> BatchSplit:
        """How ``batch_size`` splits over ``world_size`` ranks (default: this process's world)."""
        world = distributed_info()[1] if world_size is None else world_size
        return BatchSplit.of(self.batch_size, self.micro_batch_size, world)

    @property
    def accumulate(self) -> int:
        """Micro-batches per rank and optimizer step at this process's world size."""
        return self.split().accumulate

    def log_interval(self, device: torch.device | str) -> int:
        """``log_every``, with 0 resolved per device (host reads cost nothing on a CPU)."""
        if self.log_every:
            return self.log_every
        return 1 if torch.device(device).type == "cpu" else CUDA_LOG_EVERY

    @property
    def warmup(self) -> int:
        """Warm-up steps in effect: ``warmup_steps`` if set, else ``floor(warmup_fraction · steps)``."""
        if self.warmup_steps:
            return self.warmup_steps
        return math.floor(self.warmup_fraction * self.steps + 1e-9)  # 0.05 · 700 is 35, not 34.999...

    @classmethod
    def from_hparams(cls, hp: Mapping[str, Any], prefix: str = "") -> FitConfig:
        """Pick this config's keys from a profile dict; ``<prefix>_<key>`` beats plain ``<key>``.

        ``prefix`` may be given as ``"pretrain"`` or ``"pretrain_"``; unknown keys are ignored
        because the same dict also holds the model's hyper-parameters. Each field is picked on its
        own, so ``pretrain_warmup_fraction`` and a plain ``warmup_fraction`` can live side by side;
        ``warmup_steps`` and ``warmup_fraction`` conflict only when both picked values are non-zero
        (e.g. ``pretrain_warmup_steps: 0`` with a plain ``warmup_fraction`` is fine and gives the
        fraction).
        """
        if prefix and not prefix.endswith("_"):
            prefix += "_"
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            for key in (prefix + f.name, f.name):
                if key in hp:
                    kwargs[f.name] = hp[key]
                    break
        if "steps" not in kwargs:
            raise KeyError(f"hyper-parameters define neither {prefix}steps nor steps (keys: {sorted(hp)})")
        return cls(**kwargs)


@dataclass
class FitResult:
    """Outcome of one ``fit`` call; ``samples_seen``/``wall_time_s`` is this call's throughput."""

    steps_done: int
    final_loss: float
    losses: list[float]  # per step since step 1 (rank-local), including steps before a resume
    resumed_from: int  # 0 = fresh; == steps_done when a finished checkpoint was reused
    wall_time_s: float
    samples_seen: int  # samples trained on in this call, summed over ranks
    final_logs: dict[str, float] = field(default_factory=dict)
    curve_file: str | None = None  # the stage's curve (benchmark.curves), when one was written
    world_size: int = 1
    micro_batch_size: int = 0  # samples per forward per device
    accumulate: int = 1  # micro-batches per rank and optimizer step
    global_batch_size: int = 0  # samples per optimizer step over all ranks (the config's batch_size)
