"""``benchmark estimate``: will a profile's stages fit on a GPU, and how long will they take?

Why this way: the only faithful account of an entry's step is the entry's own code, so the
estimate runs it. The entry's ``pretrain`` / ``finetune`` / ``fit`` run as in a job, on the task's
real-size stand-ins (``task.estimate_data``, ``benchmark.estimate_data``), inside a fake-tensor
mode (``torch._subclasses.fake_tensor``): every tensor has its real shape and dtype but no storage,
so a 300 M-parameter model on 11,000 tokens costs milliseconds. ``benchmark.training.fit`` is
replaced for the duration by a probe that builds one micro-batch, runs two optimizer steps under
``torch.distributed._tools.mem_tracker.MemTracker`` (parameters, gradients, optimizer state and
activations, peak over the step) and ``torch.utils.flop_counter.FlopCounterMode``, and returns.
Inference runs ``predict`` / ``sample`` on one evaluation batch the same way.

What the numbers assume: bf16 autocast when the stage's ``amp`` is on (emulated with CPU autocast,
which casts the same matmul/conv family), the profile's per-device ``micro_batch_size`` (contract:
``FitConfig``), a reserve of ``RESERVE`` of the device memory for the CUDA context, allocator
fragmentation and the data pipeline, and GPU-hours at ``utilisation`` of the dense bf16 peak.
Validated against real steps in ``tests/test_estimate.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import training
from .contracts import RunContext, profile_hparams
from .errors import BenchmarkError
from .estimate_data import fake_stand_ins
from .estimate_meter import (
    StepCost,
    _modules_of,
    _numpy_dtype,
    amp_context,
    measure,
    real_batch,
    train_step_cost,
    value_free_init,
    worst_case_mode,
)
from .gpus import GPU

RESERVE = 0.10  # share of device memory kept free (context, fragmentation, loader buffers)
DEFAULT_UTILISATION = 0.40


@dataclass
class StageEstimate:
    """One stage of one entry: its cost per step and over its budget, and whether it fits."""

    entry: str
    stage: str  # "pretrain", "finetune[radar-100]", "fit", "predict[optical-100]", ...
    kind: str  # "train" or "inference"
    micro_batch: int
    global_batch: int
    world_size: int
    accumulate: int
    steps: int  # optimizer steps (train) or evaluation batches (inference)
    precision: str
    cost: StepCost
    memory_budget: int
    gpu: str
    gpu_hours: float
    utilisation: float
    fits: bool
    suggestion: str = ""
    checkpointing: bool = False

    @property
    def flops_per_step(self) -> int:
        """An optimizer step is ``accumulate`` micro-steps on each of ``world_size`` devices."""
        return self.cost.flops * self.accumulate * self.world_size

    @property
    def total_flops(self) -> int:
        return self.flops_per_step * self.steps

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(flops_per_step=self.flops_per_step, total_flops=self.total_flops)
        return out


@dataclass
class EntryEstimate:
    entry: str
    stages: list[StageEstimate] = field(default_factory=list)
    note: str = ""  # why an entry has no GPU stages (e.g. a scikit-learn model)
    profile_fingerprint: str = ""  # of the profile estimated (a stored estimate names what it sized)


def profile_fingerprint(hparams: Any) -> str:
    """sha256 (16 hex) of a profile's hyper-parameters, as canonical JSON."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(hparams, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- running an entry
@dataclass
class _Probe:
    """Stands in for ``benchmark.training.fit`` while an entry's stages run under fake tensors."""

    world_size: int
    mode: Any = None  # the fake-tensor mode the entry runs under
    measuring: bool = True  # False: a stage already counted (a shared pre-training) only runs
    collate: Any = None  # the task's collate (evaluation batches)
    stages: list[dict[str, Any]] = field(default_factory=list)
    prefix: str = ""
    assumed: dict[str, int] = field(default_factory=dict)  # data-dependent reads answered as worst case

    def fit(self, model: nn.Module, loss_fn: Any, data: Any, config: training.FitConfig, *, collate_fn: Any = None,
            optimizer_factory: Any = None, desc: str = "train", checkpoint_dir: Any = None, **_: Any) -> training.FitResult:
        if not self.measuring:
            return training.FitResult(config.steps, math.nan, [], 0, 0.0, 0)
        micro, accumulate = _split(config, self.world_size, desc)
        module = training.unwrap(model)
        batch = real_batch(self.mode, collate_fn or torch.utils.data.default_collate, data, micro)
        optimizer = optimizer_factory(module) if optimizer_factory else training.default_optimizer(module, config)
        cost = train_step_cost(model, loss_fn, batch, optimizer, config.amp)
        name = Path(checkpoint_dir).name if checkpoint_dir is not None else desc  # fit_in_context's stage
        self.stages.append({"stage": f"{name}{self.prefix}", "kind": "train", "micro": micro, "global": config.batch_size,
                            "accumulate": accumulate, "steps": config.steps,
                            "amp": config.amp, "cost": cost, "checkpointing": _checkpointing(module)})
        return training.FitResult(steps_done=config.steps, final_loss=math.nan, losses=[], resumed_from=0,
                                  wall_time_s=0.0, samples_seen=0)


def _split(config: training.FitConfig, world: int, stage: str) -> tuple[int, int]:
    """(micro batch, accumulation) as ``fit`` splits the global batch over ``world`` devices."""
    if hasattr(config, "split"):
        try:
            split = config.split(world)
        except ValueError as exc:
            raise BenchmarkError(f"{stage}: {exc}") from None
        return split.micro_batch, split.accumulate
    micro = max(1, config.batch_size // world)
    return micro, config.batch_size // (micro * world)


def _checkpointing(module: nn.Module) -> bool:
    return any(bool(getattr(m, "activation_checkpointing", False)) for m in module.modules())


@contextlib.contextmanager
def _probing(probe: _Probe) -> Iterator[None]:
    """``fit`` replaced by the probe; ``Module.to(device)`` a no-op (every tensor is a CPU fake
    already, and moving fake parameters trips torch's parameter swap)."""
    original_fit, original_to = training.fit, nn.Module.to

    def to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        # a layout change (channels_last) changes neither bytes nor FLOPs
        moves_only = all(isinstance(a, torch.device | str) for a in args) and set(kwargs) <= {"device", "non_blocking", "memory_format"}
        return module if moves_only else original_to(module, *args, **kwargs)

    from torch._subclasses.fake_tensor import FakeTensor

    def deepcopy(tensor: torch.Tensor, memo: dict[int, Any]) -> torch.Tensor:
        """A fake tensor's copy (torch's deep copy goes through its storage, which has no data)."""
        if id(tensor) not in memo:
            out = tensor.detach().clone()
            memo[id(tensor)] = nn.Parameter(out, tensor.requires_grad) if isinstance(tensor, nn.Parameter) \
                else out.requires_grad_(tensor.requires_grad)
        return memo[id(tensor)]

    def numpy(tensor: torch.Tensor, *_: Any, **__: Any) -> np.ndarray:
        """Host code reading a fake tensor's values (e.g. scanning sample metadata) reads zeros."""
        if probe.mode is not None:
            probe.mode.assumed["numpy() of a fake tensor"] = probe.mode.assumed.get("numpy() of a fake tensor", 0) + 1
        return np.zeros(tuple(tensor.shape), dtype=_numpy_dtype(tensor.dtype))

    patched = {"__deepcopy__": deepcopy, "numpy": numpy, "__array__": numpy}
    saved = {k: vars(FakeTensor).get(k) for k in patched}
    training.fit, nn.Module.to = probe.fit, to  # type: ignore[method-assign]
    for k, v in patched.items():
        setattr(FakeTensor, k, v)
    try:
        yield
    finally:
        training.fit, nn.Module.to = original_fit, original_to  # type: ignore[method-assign]
        for k, v in saved.items():
            if v is None:
                delattr(FakeTensor, k)
            else:
                setattr(FakeTensor, k, v)


def _inference(probe: _Probe, entry: Any, data: Any, batch_size: int, call: Any, stage: str, amp: bool) -> None:
    """Cost of one evaluation batch (``inference_mode``, as the protocols run it)."""
    n = len(data)
    batch = real_batch(probe.mode, probe.collate, data, min(batch_size, n))

    def step() -> None:
        with torch.inference_mode(), amp_context(amp):
            call(batch)

    cost = measure(step, _modules_of(entry), resident=batch)
    probe.stages.append({"stage": stage, "kind": "inference", "micro": batch_size, "global": batch_size, "accumulate": 1,
                         "steps": math.ceil(n / batch_size), "amp": amp, "cost": cost, "checkpointing": False})


def run_entry(task: Any, entry_cls: type, profile: str, world_size: int = 1, fake: bool = True) -> _Probe:
    """Every stage of ``entry_cls`` on ``task``'s real-size stand-ins, measured under fake tensors
    (``fake=False``: on real tensors, the reference the tests check the fake run against)."""
    if not callable(getattr(task, "estimate_data", None)):
        raise BenchmarkError(f"task {task.spec.name!r} has no estimate_data(profile): it cannot be sized")
    hp = profile_hparams(entry_cls, profile)
    mode = worst_case_mode() if fake else None
    probe = _Probe(world_size, mode)
    with tempfile.TemporaryDirectory(prefix="estimate-") as tmp, _probing(probe), \
            fake_stand_ins(mode), value_free_init(), mode or contextlib.nullcontext():
        data = task.estimate_data(profile)
        probe.collate = data.collate
        amp = bool(training.FitConfig.from_hparams({"steps": 0, **hp}).amp)
        for k, cell in enumerate(data.cells):
            ctx = RunContext(device=torch.device("cpu"), seed=0, profile=profile, hparams=dict(hp), checkpoint_dir=Path(tmp),
                             cell=dict(cell.params), task_info=dict(data.task_info), collate=data.collate, show_progress=False)
            if task.spec.family == "segmentation":
                _segmentation_stages(probe, entry_cls(), data, cell, ctx, amp, first=k == 0)
            else:
                _reconstruction_stages(probe, entry_cls(), data, ctx, amp, int(task.spec.metric.ensemble_size or 1))
    probe.assumed = dict(mode.assumed) if mode is not None else {}
    return probe


def _segmentation_stages(probe: _Probe, entry: Any, data: Any, cell: Any, ctx: RunContext, amp: bool, first: bool) -> None:
    """Pre-training (counted for the first cell only: the cells share it), fine-tuning, predict."""
    modality = cell.params["modality"]
    probe.prefix, probe.measuring = "", first
    entry.pretrain(data.splits["unlabeled"], ctx.stage("pretrain"))
    probe.prefix, probe.measuring = f"[{cell.name}]", True
    entry.finetune(data.splits["train"], modality, ctx.stage("finetune"))

    def predict(batch: dict[str, Any]) -> Any:
        return entry.predict({k: v for k, v in batch.items() if k != "label"}, modality)

    _inference(probe, entry, data.splits["test"], int(ctx.hparams.get("eval_batch_size", 4)), predict, f"predict[{cell.name}]", amp)


def _reconstruction_stages(probe: _Probe, entry: Any, data: Any, ctx: RunContext, amp: bool, members: int) -> None:
    """Fitting, then sampling ``members`` ensemble members per test window (target hidden)."""
    probe.prefix, probe.measuring = "", True
    entry.fit(data.splits["train"], data.splits["val"], ctx.stage("fit"))
    hide = data.inputs or (lambda b: b)

    def sample(batch: dict[str, Any]) -> Any:
        return entry.sample(hide(batch), members, torch.Generator().manual_seed(0))

    _inference(probe, entry, data.splits["test"], int(ctx.hparams.get("eval_batch_size", 8)), sample, "sample", amp)


def _suggest(stage: dict[str, Any], budget: int, world_size: int) -> str:
    """The largest micro-batch that fits, and the accumulation that keeps the global batch."""
    cost: StepCost = stage["cost"]
    fixed = cost.params + cost.grads + cost.optimizer
    per_sample = max(1, cost.activations // max(1, stage["micro"]))
    room = (budget - fixed) // per_sample
    if room < 1:
        return "does not fit even at micro batch 1: enable activation_checkpointing, or use a larger GPU / shard the model"
    if stage["kind"] == "inference":
        return f"eval_batch_size <= {int(room)}"
    per_rank = stage["global"] // world_size
    micro = max(m for m in range(1, per_rank + 1) if per_rank % m == 0 and m <= room)
    return (f"micro_batch_size {micro} (accumulate {per_rank // micro} x {world_size} device(s) = global batch "
            f"{stage['global']})")


def estimate_entry(task: Any, name: str, entry_cls: type, profile: str, gpu: GPU, utilisation: float = DEFAULT_UTILISATION,
                   world_size: int = 1) -> EntryEstimate:
    """Stage estimates of one entry (an entry without torch stages says so in ``note``)."""
    out = EntryEstimate(name, profile_fingerprint=profile_fingerprint(profile_hparams(entry_cls, profile)))
    if getattr(entry_cls, "host_only", False):
        out.note = "runs on the host (host_only): no GPU stage to size"
        return out
    probe = run_entry(task, entry_cls, profile, world_size)
    stages = probe.stages
    if probe.assumed:
        out.note = "data-dependent reads answered as a full batch: " + ", ".join(f"{k} ({n}x)" for k, n in sorted(probe.assumed.items()))
    if not stages:
        out.note = "no stage trains through benchmark.training.fit: nothing to size"
    budget = int(gpu.memory_bytes * (1 - RESERVE))
    for s in stages:
        cost: StepCost = s["cost"]
        world = world_size if s["kind"] == "train" else 1
        est = StageEstimate(entry=name, stage=s["stage"], kind=s["kind"], micro_batch=s["micro"], global_batch=s["global"],
                            world_size=world, accumulate=s["accumulate"], steps=s["steps"],
                            precision="bf16 autocast" if s["amp"] else "fp32", cost=cost, memory_budget=budget, gpu=gpu.name,
                            gpu_hours=0.0, utilisation=utilisation, fits=cost.peak <= budget, checkpointing=s["checkpointing"])
        est.gpu_hours = est.total_flops / (gpu.peak_bf16_tflops * 1e12 * utilisation) / 3600
        if not est.fits:
            est.suggestion = _suggest(s, budget, world_size)
        out.stages.append(est)
    return out


def estimate_task(task_name: str, profile: str, gpu: GPU, entries: list[str] | None = None,
                  utilisation: float = DEFAULT_UTILISATION, world_size: int = 1) -> list[EntryEstimate]:
    """Every (named) registered entry of the task's family, found through ``benchmark.registry``."""
    from . import registry

    if not 0 < utilisation <= 1:
        raise BenchmarkError(f"--utilisation must be in (0, 1], got {utilisation}")
    if world_size < 1:
        raise BenchmarkError(f"--world-size must be >= 1, got {world_size}")
    task = registry.load_task(task_name)
    names = entries or registry.entries_of_family(task.spec.family)
    results = []
    for name in names:
        resolved = registry.resolve_entry(name)
        if resolved.cls.metadata.family != task.spec.family:
            raise BenchmarkError(f"entry {name!r} is a {resolved.cls.metadata.family} entry; task {task_name!r} is {task.spec.family}")
        results.append(estimate_entry(task, resolved.name, resolved.cls, profile, gpu, utilisation, world_size))
    return results
