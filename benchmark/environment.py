"""Where a job ran: code revision, libraries, machine, accelerator, threads, load.

Every record stores this, so a table can say when it mixes commits, machines or thread counts
(``benchmark.tables``), and a wall time always travels with the load it was measured under.
The thread choice lives here too: on a CPU shared with other work, OpenMP threads beyond the
free cores thrash (a 6x slowdown of the README's job was measured on a loaded 2-core machine),
so unless told otherwise a run uses only the cores the load average leaves free.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__


@cache
def git_revision() -> str:
    """Harness git sha (``+dirty`` when the work tree has changes), or ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which cgroups and Slurm set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_times() -> tuple[int, int] | None:
    """(all, idle) jiffies of the machine from ``/proc/stat`` (Linux), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields), fields[3] + fields[4]) if len(fields) >= 5 else None


def busy_cores(sample_s: float = 0.5) -> float | None:
    """Cores the machine keeps busy now: its non-idle share of CPU time over ``sample_s`` seconds
    times its core count (None where ``/proc/stat`` is missing). Unlike the 1-minute load average,
    this does not still count a run that ended seconds ago, which made a run started right after
    another one take a single core."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(sample_s)
    after = _cpu_times()
    if after is None or after[0] <= before[0]:
        return None
    total, idle = after[0] - before[0], after[1] - before[1]
    return round((os.cpu_count() or 1) * (total - idle) / total, 2)


def auto_threads(jobs_at_once: int = 1) -> tuple[int, str]:
    """Intra-op threads per job and why: the :func:`free_cores`, shared by the jobs running at
    once, at least 1."""
    free, where = free_cores()
    threads = max(1, free // max(1, jobs_at_once))
    return threads, f"auto: {where}, {jobs_at_once} job(s) at once"


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole cores the cgroup-v2 CPU quota allows (``cpu.max`` = "quota period", rounded up, at
    least 1), or None without a quota ("max") or a readable file."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def free_cores() -> tuple[int, str]:
    """The usable cores that other work leaves free (at least 1), and a phrase saying why: the
    :func:`busy_cores` of a half-second sample, or the 1-minute load average where that is
    unavailable. When the process is confined to some of the machine's cores (Slurm, cgroups,
    taskset), those cores are its own and the machine-wide load says nothing about them, so all of
    them count."""
    cores = usable_cores()
    if cores < (os.cpu_count() or cores):
        return cores, f"{cores} of {os.cpu_count()} cores (confined)"
    quota = cgroup_cpu_quota()
    if quota is not None and quota < cores:  # docker --cpus, a Kubernetes limit: the quota is this process's share
        return quota, f"{quota} of {cores} cores (cgroup CPU quota)"
    busy = busy_cores()
    if busy is not None:
        return max(1, cores - int(round(busy))), f"{cores} usable core(s), {busy:g} busy"
    load = load_average()
    free = cores if load is None else max(1, cores - int(round(load)))
    return free, f"{cores} usable core(s), load {load if load is not None else '?'}"


def _versions() -> dict[str, str]:
    import torch

    versions = {"benchmark": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for mod, dist in (("sklearn", "scikit-learn"), ("pandas", "pandas"), ("xarray", "xarray")):
        try:  # the installed distribution's version: importing them would cost ~2 s per job process
            versions[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def environment(device: str, probe_device: bool = True) -> dict[str, Any]:
    """Library versions and machine facts stored in every record. ``probe_device=False`` never
    touches CUDA (the harness process must not initialise it before forking jobs)."""
    import torch

    gpus: list[str] = []
    dev_name = cpu_model()
    if probe_device and device.startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(torch.device(device))
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    cudnn = torch.backends.cudnn.version() if probe_device and torch.backends.cudnn.is_available() else None
    return {
        "git_sha": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": device,
        "device_name": dev_name,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "load_avg_1m": load_average(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "gpus": gpus,
        "world_size": int(os.environ.get("WORLD_SIZE", "1") or 1),
        "versions": _versions(),
    }
