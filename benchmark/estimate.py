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
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import training
from .contracts import RunContext, profile_hparams
from .errors import BenchmarkError
from .estimate_data import fake_stand_ins
from .gpus import GPU

RESERVE = 0.10  # share of device memory kept free (context, fragmentation, loader buffers)
DEFAULT_UTILISATION = 0.40


@dataclass
class StepCost:
    """Memory (bytes, peak over a step) and FLOPs of one forward(+backward+optimizer) micro-step."""

    params: int = 0
    grads: int = 0
    optimizer: int = 0
    activations: int = 0  # activations + temporaries at the peak
    peak: int = 0
    flops: int = 0
    parameter_count: int = 0
    trainable_count: int = 0


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


# --------------------------------------------------------------------------- measuring a step
def _modules_of(obj: Any) -> list[nn.Module]:
    """The modules an entry holds (attributes, one level deep): what inference keeps resident."""
    if isinstance(obj, nn.Module):
        return [obj]
    found = [v for v in vars(obj).values() if isinstance(v, nn.Module)]
    return [m for m in found if not any(m is not o and any(m is s for s in o.modules()) for o in found)]


class StepMeter(TorchDispatchMode):
    """Live tensor bytes (their storages, each counted once while it lives) and FLOPs per op.

    Lighter than ``MemTracker`` + ``FlopCounterMode`` (no per-module bookkeeping on every op), and
    the same on real and fake tensors, which is what lets tests check it against real steps.
    """

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.flops, self.current, self.peak = 0, 0, 0
        self._live: dict[int, int] = {}

    def hold(self, tensors: Any) -> int:
        """Count ``tensors`` as resident from now on (weights, optimizer state, the batch)."""
        before = self.current
        for t in tree_leaves(tensors):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return self.current - before

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        size = storage.nbytes()
        self._live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func.overloadpacket not in self.registry and func is not torch.ops.prim.device.default:
            with self:  # a composite op (e.g. linear under inference_mode): count what it is made of
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        count = self.registry.get(func.overloadpacket)
        if count is not None:
            self.flops += int(count(*args, **kwargs, out_val=out))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def measure(run_step: Any, modules: list[nn.Module], optimizer: torch.optim.Optimizer | None = None,
            resident: Any = None) -> StepCost:
    """Peak memory and FLOPs of one call of ``run_step``.

    The optimizer's state is made before (one step on zero gradients: AdamW's moments exist from
    the first step on), so the measured step is a steady-state one: its backward holds the state
    alongside gradients and activations. ``resident``: tensors that live through the step (the batch).
    """
    params = list({id(p): p for m in modules for p in m.parameters()}.values())
    if optimizer is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad:  # a frozen parameter never gets a gradient, so never optimizer state
                    p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad()
    meter = StepMeter()
    with meter:
        param_bytes = meter.hold([*params, *(b for m in modules for b in m.buffers())])
        opt_bytes = meter.hold(list(optimizer.state.values())) if optimizer is not None else 0
        meter.hold(resident)
        run_step()
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad) if optimizer is not None else 0
    return StepCost(params=param_bytes, grads=grads, optimizer=opt_bytes,
                    activations=max(0, meter.peak - param_bytes - opt_bytes - grads), peak=meter.peak, flops=meter.flops,
                    parameter_count=sum(p.numel() for p in params),
                    trainable_count=sum(p.numel() for p in params if p.requires_grad))


def amp_context(enabled: bool) -> contextlib.AbstractContextManager:
    """What bf16 autocast on a GPU does to the step, emulated on the CPU (same op families)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def train_step_cost(model: nn.Module, loss_fn: Any, batch: Any, optimizer: torch.optim.Optimizer, amp: bool) -> StepCost:
    """Cost of a training micro-step as ``fit`` runs it (forward under autocast, backward, step)."""
    model.train()

    def step() -> None:
        with amp_context(amp):
            out = loss_fn(model, batch)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        optimizer.step()

    return measure(step, [training.unwrap(model)], optimizer, resident=batch)


# --------------------------------------------------------------------------- fake tensors
def _caller() -> str:
    """``file:line`` of the innermost frame outside torch: where a data-dependent read is."""
    import traceback

    for frame in reversed(traceback.extract_stack()):
        if "/torch/" in frame.filename:
            continue
        if frame.filename.endswith(("benchmark/estimate.py", "benchmark/training.py")):
            return ""  # torch's own reads under the probe (e.g. the optimizer's step count)
        return f"{Path(frame.filename).name}:{frame.lineno}"
    return ""


def worst_case_mode() -> Any:
    """A fake-tensor mode that answers data-dependent questions with the worst case.

    A fake tensor has no values, so ``.item()`` and ``nonzero`` cannot be answered. Where an
    entry still reads one (outside the training hot path, which has none), the answer is that
    of a full batch: every mask entry set (``nonzero`` returns all positions, a boolean reads
    True), integers and floats read 1. Each answered read is counted in ``mode.assumed``.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    class WorstCaseFakeMode(FakeTensorMode):
        assumed: dict[str, int]

        def dispatch(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is torch.ops.aten._local_scalar_dense.default:
                self._note()
                t = args[0]
                return True if t.dtype == torch.bool else 1.0 if t.dtype.is_floating_point else 1
            if func is torch.ops.aten.nonzero.default:
                self._note()
                t = args[0]
                meta = torch.empty((t.numel(), t.dim()), dtype=torch.int64, device="meta")
                return self.fake_tensor_converter.from_meta_and_device(self, meta, t.device)
            return super().dispatch(func, types, args, kwargs)

        def _note(self) -> None:
            where = _caller()
            if where:
                self.assumed[where] = self.assumed.get(where, 0) + 1

    mode = WorstCaseFakeMode(allow_non_fake_inputs=True)
    mode.assumed = {}
    return mode


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


_NUMPY_DTYPES = {torch.float64: np.float64, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32,
                 torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_}


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return _NUMPY_DTYPES.get(dtype, np.float32)


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


def real_batch(mode: Any, collate: Any, data: Any, n: int) -> Any:
    """A batch of ``n`` items built for real (its sizes and masks are then known: the collate's
    host-side reads are exact), then turned into fake tensors for the step."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    if mode is None:
        return collate([data[i] for i in range(n)])
    with unset_fake_temporarily():
        batch = collate([data[i] for i in range(n)])
    return _to_fake(mode, batch)


def _to_fake(mode: Any, obj: Any) -> Any:
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(obj, torch.Tensor):
        return obj if isinstance(obj, FakeTensor) else mode.from_tensor(obj)
    if isinstance(obj, dict):
        return {k: _to_fake(mode, v) for k, v in obj.items()}
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return type(obj)(_to_fake(mode, v) for v in obj)
    return obj


def run_entry(task: Any, entry_cls: type, profile: str, world_size: int = 1, fake: bool = True) -> _Probe:
    """Every stage of ``entry_cls`` on ``task``'s real-size stand-ins, measured under fake tensors
    (``fake=False``: on real tensors, the reference the tests check the fake run against)."""
    if not callable(getattr(task, "estimate_data", None)):
        raise BenchmarkError(f"task {task.spec.name!r} has no estimate_data(profile): it cannot be sized")
    hp = profile_hparams(entry_cls, profile)
    mode = worst_case_mode() if fake else None
    probe = _Probe(world_size, mode)
    with tempfile.TemporaryDirectory(prefix="estimate-") as tmp, _probing(probe), \
            fake_stand_ins(mode), mode or contextlib.nullcontext():
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
