"""Throughput measurement: warm-up, device synchronisation, median over timed batches.

The harness times the calls it makes anyway (``predict``/``sample`` over the test set) instead of
running extra passes, and reads training throughput from the ``FitResult``s an entry reports.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# CPU peak memory. Linux keeps a resettable RSS high-water mark per process: writing "5" to
# /proc/self/clear_refs (kernel >= 4.0) sets it to the current RSS, and /proc/self/status reports it
# as VmHWM. So a job resets it before its work and reads VmHWM at the end: its own peak, even when
# several jobs run one after another in one process (``--in-process``). The figure includes what the
# process already held when the job started (interpreter, torch, loaded data), not the memory of
# DataLoader worker processes. Where the reset is unavailable (macOS, Windows, a /proc that refuses
# the write) the figure is ``ru_maxrss``, the peak of the whole process since it started, and is
# named so. (On Linux a reset lowers ``ru_maxrss`` as well, which the kernel derives from the same
# high-water mark while no thread has exited; the fallback is used only where no reset succeeded.)
CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_STATUS = Path("/proc/self/status")
JOB_PEAK_RSS = "job_peak_rss_vmhwm"  # VmHWM since reset_peak_memory reset it (clear_refs "5")
PROCESS_PEAK_RSS = "process_peak_rss"  # ru_maxrss: the process's peak since it started
_reset_in: int | None = None  # pid of the process whose high-water mark was reset (a fork inherits this module)


def _vmhwm_mb() -> float | None:
    """VmHWM (peak RSS) of /proc/self/status in MiB, None where unreadable."""
    try:
        m = re.search(r"^VmHWM:\s*(\d+)\s*kB", PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS; False where that is unavailable."""
    global _reset_in
    try:
        with CLEAR_REFS.open("w") as fh:
            fh.write("5")
    except OSError:
        _reset_in = None
        return False
    _reset_in = os.getpid()
    return True


def peak_rss_mb() -> tuple[float, str]:
    """CPU peak memory in MiB and how it was measured: the high-water mark since the last
    :func:`reset_peak_rss` of this process (``job_peak_rss_vmhwm``), else ``ru_maxrss`` (``process_peak_rss``)."""
    if _reset_in == os.getpid():
        hwm = _vmhwm_mb()
        if hwm is not None:
            return hwm, JOB_PEAK_RSS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return rss * scale / 2**20, PROCESS_PEAK_RSS


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a job's peak-memory window: the CUDA allocator's peak and the process's RSS high-water mark."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()


def peak_memory_mb(device: torch.device | str) -> tuple[float, str]:
    """Peak memory since :func:`reset_peak_memory` and what it measures: the CUDA allocator peak
    (``cuda_max_allocated``), or on CPU the job's RSS high-water mark (``job_peak_rss_vmhwm``),
    falling back to the process's peak RSS (``process_peak_rss``) where it cannot be reset."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return peak_rss_mb()


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
