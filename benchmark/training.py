"""The one training loop every entry uses (docs/entries.md).

Why one loop: seeding, batch order, checkpoint/resume, AMP, clipping, schedules and DDP are where
benchmark runs silently diverge, so they are written and tested once, here.

Resume design. The learning-rate schedule depends on the total number of steps, so a training run
is identified by its config: a checkpoint written for ``steps=1000`` is never continued with
``steps=2000`` (that is a different training, the cosine curve differs) -- it raises instead. An
*interrupted* run resumes bit-exactly: the checkpoint holds weights, optimizer, scheduler, every
rank's RNG states and losses, and the data position (epoch, batches consumed in it, and the
shuffling generator's state at the start of that epoch); the sampler skips the consumed indices
without loading them. A finished checkpoint (``done``) is reused as is: the weights and the RNG
state are restored, so code after ``fit`` sees the same state whether training ran or was reused.
Exactness holds when the dataset's own randomness (if any) uses the global RNGs with
``num_workers=0``, or comes from its (seed, epoch, index) keys (``epoch_seeded``) with any number
of workers, persistent or not; worker processes restarted mid-epoch cannot replay global streams.

GPU scale. ``batch_size`` is the global batch; ranks and micro-batches only split it
(``benchmark.batching``), each micro-batch's loss is weighted by its units
(``benchmark.accumulation``), and per-step values stay on the device between logging steps
(``benchmark.step_values``). A checkpoint written before micro-batches existed resumes exactly at
world size 1 (same order, same step), and is refused under DDP, where ``batch_size`` was per rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.profiler import record_function
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from .accumulation import LOSS_WEIGHT, MicroBatchStep
from .batching import GlobalBatchSampler
from .checkpoints import (
    CHECKPOINT_NAME,
    FORMAT,
    CheckpointError,
    atomic_save,
    get_rng_state,
    load_checkpoint,
    restore,
    seed_everything,
    set_rng_state,
)
from .curves import CURVE_NAME, CurveLog, tensorboard_wanted
from .devices import (
    autocast_context,
    distributed_info,
    is_main_process,
    move_to_device,
    setup_distributed,
    unwrap,
)
from .fit_config import _RUNTIME_FIELDS, FitConfig, FitResult
from .loading import loader_kwargs
from .step_values import PendingSteps, StepValues

if TYPE_CHECKING:
    from benchmark.contracts import RunContext

__all__ = [
    "CHECKPOINT_NAME",
    "LOSS_WEIGHT",
    "CheckpointError",
    "FitConfig",
    "FitResult",
    "autocast_context",
    "default_optimizer",
    "default_scheduler",
    "distributed_info",
    "fit",
    "fit_in_context",
    "is_main_process",
    "lr_factor",
    "move_to_device",
    "seed_everything",
    "unwrap",
]

LossOutput = Tensor | tuple[Tensor, Mapping[str, Any]]
LossFn = Callable[[nn.Module, Any], LossOutput]


# --------------------------------------------------------------------------- optimizer / schedule
def segmentation_loss(logits: Tensor, labels: Tensor, task_info: Mapping[str, Any]) -> Tensor:
    """Cross-entropy of ``logits [B, K, H, W]`` in float32 with the task's ignore index and its
    per-class weights (``task_info["class_weights"]``, None for uniform): the shared fine-tuning
    loss, so entries differ in their networks and pre-training, not in their loss.

    Same value as ``F.cross_entropy(..., weight, ignore_index)`` (Σ w·l / Σ w over labelled pixels),
    but a batch without labelled pixels gives 0 instead of NaN, with no host-device sync to check.
    """
    weights = task_info.get("class_weights")
    weight = None
    if weights is not None:
        weight = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)
        if weight.numel() != logits.shape[1]:
            raise ValueError(f"class_weights has {weight.numel()} values for {logits.shape[1]} classes")
    ignore = int(task_info["ignore_index"])
    per_pixel = nn.functional.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore, reduction="none")
    valid = labels != ignore
    if weight is None:
        norm = valid.sum()
    else:
        norm = weight[labels.clamp(0, weight.numel() - 1)].masked_fill(~valid, 0).sum()
    return per_pixel.sum() / norm.clamp_min(1e-12)


def default_optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay on weight matrices/kernels only (ndim >= 2).

    Decaying biases and norm scales pulls them towards 0, which only hurts.
    """
    decay, no_decay = [], []
    for p in unwrap(model).parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, fused=fused or None)


def lr_factor(step: int, config: FitConfig) -> float:
    """Multiplier of ``config.lr`` used by the optimizer step with 0-based index ``step``.

    Linear warm-up reaches the full rate at step ``warmup - 1`` (``config.warmup``: ``warmup_steps``,
    or ``warmup_fraction`` of ``steps``); cosine then decays towards ``min_lr_ratio`` over the
    remaining steps (the last step is just above the floor, not wasted).
    """
    warmup = config.warmup
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def default_scheduler(optimizer: torch.optim.Optimizer, config: FitConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Warm-up + cosine (or constant) as a LambdaLR, whose state_dict is plain numbers."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))


def _load_checkpoint(path: Path, config: FitConfig, run: Mapping[str, Any]) -> dict[str, Any]:
    """``benchmark.checkpoints.load_checkpoint`` with this module's runtime (non-identifying) fields."""
    return load_checkpoint(path, config, run, _RUNTIME_FIELDS)


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _assert_replicas_in_sync(module: nn.Module, device: torch.device) -> None:
    """DDP only syncs gradients of graphs built through ``wrapper(...)``: catch silent divergence."""
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float64, device=device)
        for p in module.parameters():
            total += p.detach().double().sum()
    t = torch.stack([total, -total])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    hi, lo = t[0].item(), -t[1].item()
    if abs(hi - lo) > 1e-9 * max(1.0, abs(hi)):
        raise RuntimeError(
            "DDP replicas diverged: loss_fn must run the model through the wrapper it receives "
            "(model(...)), not unwrap(model).method(...), or gradients are not averaged"
        )


def _clip_and_measure(params: list[Tensor], max_norm: float | None) -> Tensor | float:
    """Global gradient norm (clipped to ``max_norm`` if set) as a device tensor: read when logged."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is not None:
        return nn.utils.clip_grad_norm_(grads, max_norm)  # no error_if_nonfinite: that would read the norm
    return torch.linalg.vector_norm(torch.stack([p.grad.detach().norm().float() for p in grads]))


def _range(name: str) -> contextlib.AbstractContextManager:
    """A profiler range, opened only while a profiler records (a range costs ~30 µs per step otherwise)."""
    return record_function(name) if torch._C._autograd._profiler_enabled() else contextlib.nullcontext()


def _reads_host_step_counters(optimizer: torch.optim.Optimizer) -> bool:
    """True for torch's Adam/AdamW without ``fused``/``capturable``: they keep each parameter's step
    count as a *host* tensor and ``.item()`` it every step, which costs nothing on a GPU (fit marks
    that step ``host.*`` so sync counts skip it; the default optimizer is fused on CUDA anyway)."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and not any(
        g.get("fused") or g.get("capturable") or g.get("differentiable") for g in optimizer.param_groups)


# --------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: Dataset,
    config: FitConfig,
    *,
    device: torch.device | str,
    seed: int,
    checkpoint_dir: Path | str | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    scheduler_factory: Callable[[torch.optim.Optimizer, FitConfig], Any] | None = None,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[int, float, dict[str, float]], None] | None = None,
    batch_to_device: Callable[[Any, torch.device], Any] | None = None,
    curve: CurveLog | None = None,
) -> FitResult:
    """Train ``model`` in place for ``config.steps`` optimizer steps; resume or reuse a checkpoint.

    ``loss_fn(model, batch)`` gets the (possibly DDP-wrapped or compiled) model and one micro-batch
    on ``device`` and returns a scalar loss or ``(loss, logs)``; ``logs["loss_weight"]`` (never
    logged) says how many units the loss averages over (``benchmark.accumulation``).
    ``optimizer_factory`` receives the unwrapped model; ``scheduler_factory(optimizer, config)``
    may return None. Each step's loss, gradient norm and logs stay on the device until a logging
    step (every ``config.log_interval(device)`` steps, checkpoint steps and the last step) reads
    them in one go: then every pending step gets its ``curve`` row (loss, lr, grad norm,
    throughput, logs; written by rank 0, by default ``checkpoint_dir/curve.jsonl``) and its
    ``on_step(step, loss, logs)`` call, in order, after that step's checkpoint. A non-finite loss
    or gradient norm is raised on that read, so it may be detected up to ``log_every - 1`` steps
    late (the step it names is exact; the checkpoint on disk predates it).
    The model is put in train mode for the loop and given back in the mode it came in (freeze
    submodules inside ``loss_fn`` if some must stay in eval mode).
    Under ``torchrun`` (WORLD_SIZE > 1) it joins the process group, wraps the model in DDP and
    shards each global batch; the group is left for the launcher to destroy.
    """
    start_time = time.perf_counter()
    if isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
        raise TypeError("fit needs a map-style Dataset with __len__ (its order is seeded and resumable)")
    if len(data) == 0:
        raise ValueError(f"{desc}: the training dataset is empty")
    rank, world, device = setup_distributed(torch.device(device))
    split = config.split(world)
    shape = {"world_size": world, "micro_batch_size": split.micro_batch, "accumulate": split.accumulate,
             "global_batch_size": split.global_batch}
    seed_everything(seed + 7919 * rank)  # distinct noise per rank; rank 0 == single process
    was_training = model.training
    module = unwrap(model).to(device)
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if curve is None and checkpoint_dir is not None:
        curve = CurveLog(Path(checkpoint_dir) / CURVE_NAME, tensorboard=tensorboard_wanted())  # a checkpointed stage leaves its curve
    run: dict[str, Any] = {"seed": int(seed), "world_size": world, "dataset_len": len(data)}
    if world > 1:  # batch_size was per rank before it was global: such DDP checkpoints are refused
        run["global_batch"] = True
    ckpt = _load_checkpoint(path, config, run) if path is not None and path.exists() else None

    step, losses, logs = 0, [], {}
    if ckpt is not None:
        restore(path, "model", lambda: module.load_state_dict(ckpt["model"]))
        if len(ckpt["ranks"]) != world:
            raise CheckpointError(f"checkpoint {path} holds {len(ckpt['ranks'])} ranks, this run has {world}")
        step, losses = int(ckpt["step"]), [float(x) for x in ckpt["ranks"][rank]["losses"]]
        if ckpt["done"]:
            set_rng_state(ckpt["ranks"][rank]["rng"], device)
            reused = str(curve.path) if curve is not None and curve.path.is_file() else None
            return FitResult(step, losses[-1] if losses else math.nan, losses, step,
                             time.perf_counter() - start_time, 0, curve_file=reused, **shape)
    resumed_from = step
    if curve is not None and rank != 0:
        curve = None
    if curve is not None:
        curve.start(resumed_from)

    optimizer = optimizer_factory(module) if optimizer_factory else default_optimizer(module, config)
    scheduler = scheduler_factory(optimizer, config) if scheduler_factory else default_scheduler(optimizer, config)
    if ckpt is not None:
        restore(path, "optimizer", lambda: optimizer.load_state_dict(ckpt["optimizer"]))
        if scheduler is not None and ckpt["scheduler"] is not None:
            restore(path, "scheduler", lambda: scheduler.load_state_dict(ckpt["scheduler"]))

    sampler = GlobalBatchSampler(len(data), seed * 1_000_003 + 17, split, rank, config.drop_last,
                                 epoch_seeded=getattr(data, "epoch_seeded", False) is True)
    loader_gen = torch.Generator()  # private: DataLoader draws worker seeds from it, not the global RNG
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate_fn, generator=loader_gen,
                        **loader_kwargs(device, config.num_workers, config.pin_memory, config.persistent_workers,
                                        config.prefetch_factor))
    epoch, consumed = 0, 0  # consumed: optimizer steps (global batches) done in this epoch
    if ckpt is not None:
        epoch, consumed = int(ckpt["data"]["epoch"]), int(ckpt["data"]["batch"])
        sampler.generator.set_state(ckpt["data"]["generator"])
        set_rng_state(ckpt["ranks"][rank]["rng"], device)  # last: nothing may draw from the RNGs before step 1
    ckpt = None  # free the CPU copy of the weights

    ddp = None
    wrapped: nn.Module = module
    if world > 1:
        wrapped = ddp = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.ddp_find_unused_parameters)
    if config.compile:
        wrapped = torch.compile(wrapped)
    to_device = batch_to_device or (lambda b, d: move_to_device(b, d, non_blocking=d.type == "cuda"))
    trainable = [p for p in module.parameters() if p.requires_grad]
    run_step = MicroBatchStep(wrapped, ddp, loss_fn, trainable, world, device,
                              lambda: autocast_context(device, config.amp), to_device, desc)
    log_every = config.log_interval(device)
    host_counters = _reads_host_step_counters(optimizer)
    pending = PendingSteps()

    def save(done: bool) -> None:
        ranks = _gather({"rng": get_rng_state(device), "losses": list(losses)}, world)
        if world > 1:
            _assert_replicas_in_sync(module, device)
        if curve is not None:
            curve.flush()  # the curve on disk reaches at least the checkpoint's step
        if rank == 0 and path is not None:
            atomic_save({
                "format": FORMAT, "done": done, "step": step, "config": dataclasses.asdict(config),
                "run": run, "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "data": {"epoch": epoch, "batch": consumed, "generator": sampler.epoch_start_state},
                "ranks": ranks, "torch_version": str(torch.__version__),
            }, path)
        if world > 1:
            dist.barrier()

    window_start = time.perf_counter()

    def publish() -> list[StepValues]:
        """Read the pending steps (one host sync), check them, and give them to losses, curve and bar."""
        nonlocal logs, window_start
        with _range("fit.log"):
            drained = pending.drain()
            if world > 1 and drained[0].step == 1:
                _assert_replicas_in_sync(module, device)
        now = time.perf_counter()
        rate = sum(s.samples for s in drained) / max(now - window_start, 1e-9)  # the window's mean
        window_start = now
        for s in drained:
            if world == 1 and not math.isfinite(s.loss):  # under DDP one rank raising would hang the others
                raise FloatingPointError(f"{desc}: loss is {s.loss} at step {s.step}")
            if not math.isfinite(s.grad_norm):  # identical on all ranks after all-reduce
                raise FloatingPointError(f"{desc}: gradient norm is {s.grad_norm} at step {s.step} (loss {s.loss})")
            losses.append(s.loss)
            logs = s.as_logs()
            if curve is not None:
                curve.add(s.step, {"loss": s.loss, **logs, "samples": s.samples_so_far, "elapsed_s": s.elapsed_s,
                                   "samples_per_s": rate})
        bar.set_postfix(loss=f"{drained[-1].loss:.4g}", lr=f"{drained[-1].lr:.3g}", refresh=False)
        return drained

    samples = 0
    bar = tqdm(total=config.steps, initial=step, desc=desc, leave=False, dynamic_ncols=True,
               disable=not progress or rank != 0)
    try:
        module.train()
        while step < config.steps:
            sampler.start_epoch(epoch, consumed)
            loader_gen.manual_seed(seed * 1_000_003 + 7919 * rank + epoch)
            batches = iter(loader)
            for plan in sampler.steps:
                with _range("fit.data"):  # outside fit.step: a dataset's own reads are not the loop's
                    micro_batches = [next(batches) for _ in plan.micro_batches]
                lr = optimizer.param_groups[0]["lr"]
                with _range("fit.step"):
                    optimizer.zero_grad(set_to_none=True)
                    loss, user_logs = run_step(micro_batches, plan)
                    grad_norm = _clip_and_measure(trainable, config.grad_clip)
                    with _range("host.optimizer_step") if host_counters else contextlib.nullcontext():
                        optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                consumed, step, samples = consumed + 1, step + 1, samples + plan.global_samples
                pending.add(StepValues(step, loss, grad_norm, lr, plan.global_samples, dict(user_logs),
                                       samples_so_far=samples, elapsed_s=time.perf_counter() - start_time))
                bar.update(1)
                checkpoint_now = bool(path is not None and config.checkpoint_every
                                      and step % config.checkpoint_every == 0 and step < config.steps)
                if step % log_every == 0 or step >= config.steps or checkpoint_now or (world > 1 and step == 1):
                    drained = publish()
                    if checkpoint_now:
                        save(done=False)
                    if on_step is not None:
                        for s in drained:
                            on_step(s.step, s.loss, s.as_logs())
                if step >= config.steps:
                    break
            else:
                epoch, consumed = epoch + 1, 0
        if path is not None:
            save(done=True)
        elif world > 1:
            _assert_replicas_in_sync(module, device)
    finally:
        bar.close()
        if curve is not None:
            curve.close()
        model.train(was_training)
    return FitResult(step, losses[-1] if losses else math.nan, losses, resumed_from, time.perf_counter() - start_time,
                     samples, logs, str(curve.path) if curve is not None else None, **shape)


def fit_in_context(ctx: RunContext, model: nn.Module, loss_fn: LossFn, data: Dataset, *, stage: str = "train",
                   prefix: str | None = None, **kwargs: Any) -> FitResult:
    """``fit`` wired to a ``RunContext``: config from ``ctx.hparams`` (``<stage>_*`` keys first),
    checkpoint in ``ctx.checkpoint_dir/<stage>``, progress per ``ctx``, result recorded for throughput."""
    config = FitConfig.from_hparams(ctx.hparams, stage if prefix is None else prefix)
    kwargs.setdefault("progress", ctx.show_progress)
    kwargs.setdefault("desc", stage)
    result = fit(model, loss_fn, data, config, device=ctx.device, seed=ctx.seed,
                 checkpoint_dir=ctx.checkpoint_dir / stage, **kwargs)
    ctx.record_fit(stage, result)
    return result
