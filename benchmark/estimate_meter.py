"""How ``benchmark estimate`` measures a step: live tensor bytes and FLOPs, op by op, on real or
fake tensors; and the fake-tensor mode it runs entries under.

Why a meter of its own: ``MemTracker`` and ``FlopCounterMode`` keep per-module statistics on every
op (minutes for a 70-date U-Net step under fake tensors) and ``MemTracker`` cannot follow a frozen
parameter; bytes of live storages and ``torch.utils.flop_counter``'s formulas are all the estimate
needs, and they are the same whether the tensors are real or fake (``tests/test_estimate.py``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import training


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
        if "/torch/" in frame.filename or frame.filename.endswith("benchmark/estimate_meter.py"):
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
            self.reads += 1
            if self.reads > MAX_ASSUMED_READS:  # a loop that waits for a value to change never ends on fake tensors
                raise RuntimeError(f"estimate: more than {MAX_ASSUMED_READS} data-dependent reads answered "
                                   f"(last at {where or 'torch'}): a loop on tensor values cannot be sized on fake tensors")

    mode = WorstCaseFakeMode(allow_non_fake_inputs=True)
    mode.assumed, mode.reads = {}, 0
    return mode


MAX_ASSUMED_READS = 100_000


@contextlib.contextmanager
def value_free_init() -> Iterator[None]:
    """``nn.init.trunc_normal_`` without its rejection loop (``while mask.any()``: answered True
    on fake tensors, it never ends); initial values do not matter to memory or FLOPs."""

    def trunc_normal(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return tensor.normal_(mean, std, generator=generator).clamp_(a, b)

    saved = torch.nn.init.trunc_normal_
    torch.nn.init.trunc_normal_ = trunc_normal
    try:
        yield
    finally:
        torch.nn.init.trunc_normal_ = saved


_NUMPY_DTYPES = {torch.float64: np.float64, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32,
                 torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_}


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return _NUMPY_DTYPES.get(dtype, np.float32)


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
