"""Throughput measurement: warm-up, device synchronisation, median over timed batches.

The harness times the calls it makes anyway (``predict``/``sample`` over the test set) instead of
running extra passes, and reads training throughput from the ``FitResult``s an entry reports.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | str) -> tuple[float, str]:
    """Peak memory and what it measures: CUDA allocator peak, or the process's peak RSS on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return rss * scale / 2**20, "process_peak_rss"


def parameter_count(obj: Any) -> int | None:
    """Parameters of an entry: its own ``parameter_count()`` or every ``nn.Module`` attribute."""
    if callable(getattr(obj, "parameter_count", None)):
        return int(obj.parameter_count())
    if isinstance(obj, torch.nn.Module):
        return sum(p.numel() for p in obj.parameters())
    seen: set[int] = set()
    total = 0
    found = False
    for value in vars(obj).values():
        if isinstance(value, torch.nn.Module):
            found = True
            for p in value.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total if found else None


def count_flops(fn: Callable[[], Any]) -> int | None:
    """FLOPs of one call via ``torch.utils.flop_counter`` (None when it cannot count, or counts 0)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        flops = int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - counting is best effort, never fails a job
        return None
    return flops or None


@dataclass
class Timer:
    """Collects per-batch (samples, seconds); the first ``warmup`` batches are not counted."""

    device: torch.device
    warmup: int = 1
    samples: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def time(self, fn: Callable[[], Any], n_samples: int) -> Any:
        synchronize(self.device)
        start = time.perf_counter()
        out = fn()
        synchronize(self.device)
        self.samples.append(n_samples)
        self.seconds.append(time.perf_counter() - start)
        return out

    def samples_per_second(self) -> float | None:
        pairs = list(zip(self.samples, self.seconds, strict=True))
        timed = pairs[self.warmup :] if len(pairs) > self.warmup else pairs
        rates = [n / s for n, s in timed if s > 0]
        return statistics.median(rates) if rates else None


def train_throughput(fit_log: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Samples/s per training stage from what entries recorded (stages reused from a checkpoint excluded)."""
    out: dict[str, Any] = {}
    for stage, info in fit_log.items():
        trained = info["steps"] - info["resumed_from"]
        if trained > 0 and info["seconds"] > 0:
            out[stage] = info["samples"] / info["seconds"]
    return out


def timed_iter(iterable: Iterable[Any]) -> Iterable[tuple[Any, float]]:
    """Yield items with the time spent producing each (data loading cost)."""
    it = iter(iterable)
    while True:
        start = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        yield item, time.perf_counter() - start
