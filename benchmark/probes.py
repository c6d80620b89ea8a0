"""The hidden-truth probe every job runs on its first test batch.

The entry predicts the batch twice as given, then once after the harness changed the truth it
holds in its own batch (labels moved to another class; hidden target values replaced) and never
gave the entry. An honest entry cannot tell the difference; predictions that change mean the entry
reached the harness's batch some other way (the interpreter's heap, say), and the job fails.
Predictions that differ between the two identical calls make the probe inconclusive (recorded).
Cost: two or three extra calls on one batch per job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .errors import EntryOutputError

PASSED = "passed"


class HiddenTruthUsed(EntryOutputError):
    """The entry's predictions depend on truth the harness never gave it."""


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a.float()), torch.nan_to_num(b.float())))


def probe(call: Callable[[], torch.Tensor], perturb: Callable[[], Callable[[], None]], what: str,
          first: torch.Tensor | None = None) -> str:
    """``call()`` predicts from a fresh copy of the harness's batch; ``perturb()`` changes the
    hidden truth in that batch and returns the function that restores it. ``first``: the output
    of an identical call made already (saves one call)."""
    a = call() if first is None else first
    if not _same(a, call()):
        return "inconclusive: two identical calls gave different predictions"
    restore = perturb()
    try:
        changed = not _same(a, call())
    finally:
        restore()
    if changed:
        raise HiddenTruthUsed(f"predictions change when the harness changes the {what} it never gave the entry: "
                              "the entry reads the harness's data some other way (e.g. the interpreter's heap)")
    return PASSED


def perturb_labels(batch: dict[str, Any], num_classes: int, ignore_index: int) -> Callable[[], None]:
    """Move every labelled pixel of ``batch["label"]`` to the next class; returns the undo."""
    old = batch["label"]
    batch["label"] = torch.where(old == ignore_index, old, (old + 1) % num_classes)
    return lambda: batch.__setitem__("label", old)


def perturb_targets(batch: dict[str, Any]) -> Callable[[], None]:
    """Replace the hidden target values of a reconstruction batch (negated, shifted); returns the undo."""
    saved: dict[str, torch.Tensor] = {}
    for i, key in enumerate(batch["target"]):
        if key is None:
            continue
        src = batch["sources"][key]
        if key not in saved:
            saved[key] = src["values"]
            src["values"] = src["values"].clone()
        v = src["values"][i]
        src["values"][i] = torch.where(torch.isfinite(v), 1.0 - 2.0 * v, v)

    def restore() -> None:
        for key, values in saved.items():
            batch["sources"][key]["values"] = values

    return restore
