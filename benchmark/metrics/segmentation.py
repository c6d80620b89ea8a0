"""Confusion matrices and IoU for semantic segmentation.

Confusion matrices are the sufficient statistic: summing per-unit (e.g. per-patch) matrices and
then computing IoU gives the dataset-level metric, and a bootstrap only has to re-weight the
per-unit matrices. Convention: rows are the truth, columns the prediction.

Absent-class policy: a class with TP + FP + FN = 0 (absent from both truth and prediction over
the summed units) has no defined IoU; it gets NaN, ``present`` is False and it is left out of
the mean (nanmean), as in U-TAE's evaluation. A class that is predicted but never true has IoU 0
and *is* counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .crps import as_tensor

__all__ = ["confusion_matrix", "iou_from_confusion", "overall_accuracy"]


def _describe_values(values: torch.Tensor, limit: int = 10) -> str:
    uniq = torch.unique(values).tolist()
    shown = ", ".join(str(v) for v in uniq[:limit])
    return f"[{shown}{', ...' if len(uniq) > limit else ''}] ({len(uniq)} distinct)"


def confusion_matrix(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None = None,
    per_unit: bool = False,
) -> torch.Tensor:
    """Count (truth, prediction) pairs with one ``bincount``.

    Args:
        pred, target: integer tensors (or arrays) of the same shape.
        num_classes: K; valid labels are ``0..K-1``.
        ignore_index: target value whose pixels are not counted (their prediction is not
            checked either). If it lies inside ``[0, K)`` that class's row stays empty.
        per_unit: if True the first dimension indexes units (e.g. patches) and the result is
            ``[B, K, K]``; otherwise everything is summed into ``[K, K]``.

    Returns:
        int64 tensor on the device of ``pred``.

    Raises:
        ValueError: shape mismatch, target values outside ``[0, K)`` other than
            ``ignore_index``, or predictions outside ``[0, K)`` at counted pixels.
        TypeError: floating-point labels.
    """
    pred_t = as_tensor(pred)
    target_t = as_tensor(target, device=pred_t.device)
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred shape {tuple(pred_t.shape)} != target shape {tuple(target_t.shape)}")
    for name, t in (("pred", pred_t), ("target", target_t)):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must hold integer class labels, got dtype {t.dtype}")
    k = int(num_classes)
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if per_unit and pred_t.ndim == 0:
        raise ValueError("per_unit=True needs a leading unit dimension, got 0-d inputs")

    n_units = pred_t.shape[0] if per_unit else 1
    p = pred_t.reshape(n_units, -1).long()
    t = target_t.reshape(n_units, -1).long()

    counted = None if ignore_index is None else t != ignore_index
    bad_t = (t < 0) | (t >= k)
    if counted is not None:
        bad_t &= counted
    if bool(bad_t.any()):
        raise ValueError(
            f"target contains values outside [0, {k}) that are not ignore_index={ignore_index}: "
            f"{_describe_values(t[bad_t])}"
        )
    bad_p = (p < 0) | (p >= k)
    if counted is not None:
        bad_p &= counted
    if bool(bad_p.any()):
        raise ValueError(f"pred contains values outside [0, {k}): {_describe_values(p[bad_p])}")

    # Flat bin = unit * K^2 + truth * K + prediction; ignored pixels go to one extra bin that is
    # dropped, which avoids a compaction copy of the valid pixels.
    kk = k * k
    idx = t * k + p
    if per_unit:
        idx += torch.arange(n_units, device=idx.device).unsqueeze(1) * kk
    if counted is not None:
        idx = torch.where(counted, idx, n_units * kk)
    counts = torch.bincount(idx.reshape(-1), minlength=n_units * kk + 1)[: n_units * kk]
    shape = (n_units, k, k) if per_unit else (k, k)
    return counts.reshape(shape)


def _to_float_tensor(cm: Any) -> tuple[torch.Tensor, bool]:
    is_numpy = not isinstance(cm, torch.Tensor)
    t = as_tensor(np.asarray(cm) if is_numpy else cm)
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"confusion matrices must have shape [..., K, K], got {tuple(t.shape)}")
    return t.to(torch.float64), is_numpy


def iou_from_confusion(cm: Any, *, classes: Sequence[int] | None = None) -> tuple[Any, Any, Any]:
    """Per-class IoU, mean IoU and the present-class mask from confusion matrices ``[..., K, K]``.

    Batched over any leading dims (the bootstrap passes ``[R, K, K]``). IoU = TP / (TP + FP +
    FN) in float64; classes with a zero denominator are NaN and excluded from the mean
    (``present`` is False for them). ``classes`` optionally restricts the mean to a subset of
    class indices (per-class values and ``present`` still cover all K). A mean over no present
    class is NaN.

    Returns tensors for tensor input and numpy arrays for array input:
    ``(per_class [..., K], miou [...], present [..., K] bool)``.
    """
    t, is_numpy = _to_float_tensor(cm)
    tp = torch.diagonal(t, dim1=-2, dim2=-1)
    denom = t.sum(-1) + t.sum(-2) - tp  # truth row + prediction column - double-counted TP
    present = denom > 0
    iou = torch.where(present, tp / torch.where(present, denom, torch.ones_like(denom)), torch.nan)
    selected = iou if classes is None else iou[..., list(classes)]
    miou = torch.nanmean(selected, dim=-1) if selected.shape[-1] else selected.sum(-1) * torch.nan
    if is_numpy:
        return iou.numpy(), miou.numpy(), present.numpy()
    return iou, miou, present


def overall_accuracy(cm: Any) -> Any:
    """Trace / total of confusion matrices ``[..., K, K]`` (float64, NaN when empty).

    Returns a tensor for tensor input and a numpy array for array input.
    """
    t, is_numpy = _to_float_tensor(cm)
    total = t.sum((-2, -1))
    correct = torch.diagonal(t, dim1=-2, dim2=-1).sum(-1)
    acc = torch.where(total > 0, correct / torch.where(total > 0, total, torch.ones_like(total)), torch.nan)
    return acc.numpy() if is_numpy else acc
