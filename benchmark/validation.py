"""What the harness checks about an entry's outputs before scoring them.

Outputs become plain NumPy arrays with their own memory (:func:`plain_numpy`) in the job's
process, before anything else touches them: a ``torch.Tensor`` subclass with its own
``__torch_function__``, or a tensor sharing memory with the entry's buffers, cannot reach what the
harness does with the values. The checks then run on those arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import EntryOutputError


def plain_numpy(name: str, out: object) -> np.ndarray:
    """``out`` (an entry's torch.Tensor) as a fresh dense NumPy array (float16/bfloat16 as float32)."""
    if not isinstance(out, torch.Tensor):
        raise EntryOutputError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    with torch._C.DisableTorchFunctionSubclass():
        t = torch.Tensor.detach(out)
        if t.layout != torch.strided or t.device.type == "meta":
            raise EntryOutputError(f"{name} must return a dense tensor with data, got layout {t.layout} on {t.device}")
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        try:
            return np.array(t.cpu().numpy(), copy=True)
        except (TypeError, RuntimeError) as exc:
            raise EntryOutputError(f"{name} returned a tensor that cannot be read as numbers ({exc})") from None


def check_tensor(name: str, out: np.ndarray, shape: Sequence[int], *, floating: bool = True, finite: bool = True) -> np.ndarray:
    """Raise ``EntryOutputError`` saying exactly what is wrong with ``out``."""
    if not isinstance(out, np.ndarray):
        raise EntryOutputError(f"{name} must return an array, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise EntryOutputError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    if floating and out.dtype.kind != "f":
        raise EntryOutputError(f"{name} returned dtype {out.dtype}, expected a floating dtype")
    if finite:
        bad = int((~np.isfinite(out)).sum())
        if bad:
            raise EntryOutputError(f"{name} returned {bad} non-finite value(s) (NaN or inf) out of {out.size}")
    return out


def check_logits(out: np.ndarray, batch_size: int, num_classes: int, height: int, width: int) -> np.ndarray:
    return check_tensor("predict", out, (batch_size, num_classes, height, width))


def check_samples(out: np.ndarray, n: int, target_shape: Sequence[int]) -> np.ndarray:
    return check_tensor("sample", out, (n, *target_shape))
