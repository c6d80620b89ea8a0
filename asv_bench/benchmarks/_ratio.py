"""Speed ratios measured side by side: the reference and ours alternate (A B A B ...), so a machine
whose speed drifts during the measurement moves both alike; the ratio is the median of the pairs.

Both sides run on one thread (torch and BLAS pools limited to 1): with two threads on a shared
2-core VM, a neighbour taking one core halves our multi-threaded side and not the single-threaded
reference, and the ratio moved 1.7x between two runs of identical code (measured here)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_speedup(reference: Callable[[], object], ours: Callable[[], object], pairs: int = 5) -> float:
    """Median over ``pairs`` of time(reference) / time(ours), after one warm-up call of each."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            reference()
            ours()
            ratios = []
            for _ in range(pairs):
                t = time.perf_counter()
                reference()
                ref = time.perf_counter() - t
                t = time.perf_counter()
                ours()
                ratios.append(ref / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(threads)
    return statistics.median(ratios)
