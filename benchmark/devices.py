"""Where ``fit`` runs: the process group under ``torchrun``, devices, wrappers and autocast.

Why apart from the loop: the config (``benchmark.fit_config``) needs the world size to check that
the global batch splits, the harness needs rank 0 to write alone, and entries need the same
``move_to_device`` / ``autocast_context`` in their own evaluation code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["autocast_context", "distributed_info", "is_main_process", "move_to_device", "setup_distributed", "unwrap"]


# --------------------------------------------------------------------------- devices / DDP
def distributed_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank): from the process group, else torchrun's env, else (0, 1, 0)."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank))
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        return int(os.environ.get("RANK", 0)), world, int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def is_main_process() -> bool:
    """True on rank 0 (and always in a single process): the one that writes files and shows bars."""
    return distributed_info()[0] == 0


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join torchrun's process group when launched under it; never needed for one process."""
    already = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if already else int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, device
    if not already:
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            # Running N independent copies that all write the same checkpoint would be worse.
            raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank, world, local_rank = distributed_info()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return rank, world, device


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or ``torch.compile``) wrapper, whose state_dict has clean keys."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile wrapper
            model = model._orig_mod
        else:
            return model


def move_to_device(obj: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Recursively move tensors inside dicts/lists/tuples (namedtuples too); leave the rest as is."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        moved = {k: move_to_device(v, device, non_blocking) for k, v in obj.items()}
        try:
            return type(obj)(moved)
        except TypeError:
            return moved
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(move_to_device(v, device, non_blocking) for v in obj)
    return obj


def autocast_context(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaler needed); a no-op elsewhere so CPU runs stay fp32."""
    device = torch.device(device)
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
