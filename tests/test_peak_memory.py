"""Per-job CPU peak memory: the RSS high-water mark since ``reset_peak_memory``, not the process's.

``benchmark.throughput`` resets the high-water mark with ``/proc/self/clear_refs`` ("5") and reads
``VmHWM``; where that is unavailable it falls back to ``ru_maxrss`` under the name
``process_peak_rss``.
"""

from __future__ import annotations

import mmap
import os
import resource
import sys

import numpy as np
import pytest

from benchmark import throughput
from benchmark.throughput import JOB_PEAK_RSS, PROCESS_PEAK_RSS, peak_memory_mb, reset_peak_memory

MB = 2**20


def _can_reset() -> bool:
    return sys.platform.startswith("linux") and os.access(throughput.CLEAR_REFS, os.W_OK) and throughput._vmhwm_mb() is not None


def _touch(mb: int) -> np.ndarray:
    """``mb`` MiB of newly resident memory: fresh anonymous pages, one byte written per page. (A
    heap block could reuse pages an earlier test freed but the allocator kept resident, which
    raises no high-water mark: after the whole suite, np.ones(80 MiB) did not.) ``del`` unmaps."""
    pages = mmap.mmap(-1, mb * MB)
    block = np.frombuffer(pages, dtype=np.uint8)
    block[:: mmap.PAGESIZE] = 1
    return block


@pytest.mark.skipif(not _can_reset(), reason="needs Linux /proc/self/clear_refs and VmHWM")
def test_second_job_does_not_inherit_the_first_peak():
    reset_peak_memory("cpu")
    big = _touch(300)
    first, kind1 = peak_memory_mb("cpu")
    del big
    reset_peak_memory("cpu")  # the next job starts
    small = _touch(50)
    second, kind2 = peak_memory_mb("cpu")
    del small
    assert kind1 == kind2 == JOB_PEAK_RSS
    assert first - second > 200, (first, second)  # ~250 MB apart; without the reset both would read the 300 MB peak


@pytest.mark.skipif(not _can_reset(), reason="needs Linux /proc/self/clear_refs and VmHWM")
def test_peak_covers_the_allocation_after_reset():
    reset_peak_memory("cpu")
    before, _ = peak_memory_mb("cpu")
    block = _touch(80)
    after, kind = peak_memory_mb("cpu")
    del block
    assert kind == JOB_PEAK_RSS and after - before > 70


def test_fallback_when_the_reset_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    reset_peak_memory("cpu")
    value, kind = peak_memory_mb("cpu")
    assert kind == PROCESS_PEAK_RSS
    scale = 1 if sys.platform == "darwin" else 1024
    assert value == pytest.approx(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB, rel=0.05)


@pytest.mark.skipif(not _can_reset(), reason="needs Linux /proc/self/clear_refs")
def test_fallback_when_vmhwm_is_unreadable(tmp_path, monkeypatch):
    reset_peak_memory("cpu")
    monkeypatch.setattr(throughput, "PROC_STATUS", tmp_path / "status")
    assert peak_memory_mb("cpu")[1] == PROCESS_PEAK_RSS


@pytest.mark.skipif(not _can_reset(), reason="needs Linux /proc/self/clear_refs")
def test_a_reset_in_another_process_does_not_count(monkeypatch):
    reset_peak_memory("cpu")
    monkeypatch.setattr(throughput, "_reset_in", os.getpid() + 1)  # what a forked child inherits from its parent
    assert peak_memory_mb("cpu")[1] == PROCESS_PEAK_RSS
    reset_peak_memory("cpu")
    assert peak_memory_mb("cpu")[1] == JOB_PEAK_RSS
