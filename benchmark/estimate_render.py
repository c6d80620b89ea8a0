"""``python -m benchmark estimate``: its arguments, and its table / JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .contracts import PROFILES
from .estimate import DEFAULT_UTILISATION, RESERVE, EntryEstimate, StageEstimate, estimate_task
from .gpus import DEFAULT_GPU, GPUS, gpu_by_name

GIB = 2**30


def add_estimate_parser(sub: Any) -> None:
    p = sub.add_parser("estimate", help="memory, FLOPs and GPU-hours of each entry's stages at a profile's real sizes (CPU, seconds)",
                       description="Runs every stage of each entry on fake tensors of the task's real sizes: parameters, "
                                   "peak memory per device (weights, gradients, optimizer state, activations), FLOPs per "
                                   "step and per stage, GPU-hours at a stated utilisation; says which stages do not fit.")
    p.add_argument("--task", required=True)
    p.add_argument("--profile", default="paper", choices=PROFILES)
    p.add_argument("--entry", action="append", default=None, help="entry (repeatable; default: every registered entry of the family)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--gpu", default=None, help=f"GPU model: {', '.join(GPUS)} (default {DEFAULT_GPU})")
    which.add_argument("--memory-gb", type=float, default=None, help="device memory in GiB (with the default GPU's throughput)")
    p.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION, help="share of the dense bf16 peak reached (default 0.4)")
    p.add_argument("--world-size", type=int, default=1, help="devices sharing each optimizer step (default 1)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON report to this file")


def cmd_estimate(args: argparse.Namespace) -> int:
    """0 when every stage fits, 1 when one does not (so scripts can gate on it)."""
    gpu = gpu_by_name(args.gpu, args.memory_gb)
    results = estimate_task(args.task, args.profile, gpu, args.entry, args.utilisation, args.world_size)
    report = to_json(args.task, args.profile, gpu.name, results)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1) + "\n")
    if args.format == "json":
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print(render(args.task, args.profile, gpu.name, args.utilisation, results))
    return 0 if all(s.fits for r in results for s in r.stages) else 1


def to_json(task: str, profile: str, gpu: str, results: list[EntryEstimate]) -> dict[str, Any]:
    return {"task": task, "profile": profile, "gpu": gpu, "reserve": RESERVE,
            "all_fit": all(s.fits for r in results for s in r.stages),
            "entries": [{"entry": r.entry, "note": r.note, "profile_fingerprint": r.profile_fingerprint, "stages": [s.to_dict() for s in r.stages]} for r in results]}


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def _row(s: StageEstimate) -> list[str]:
    c = s.cost
    batch = f"{s.micro_batch}" if s.kind == "inference" else f"{s.micro_batch}x{s.accumulate}x{s.world_size}={s.global_batch}"
    return [s.entry, s.stage, f"{c.parameter_count / 1e6:.1f}", batch, s.precision.split()[0] + (" ckpt" if s.checkpointing else ""),
            _gib(c.params + c.grads + c.optimizer), _gib(c.activations), _gib(c.peak), f"{s.flops_per_step:.2e}",
            f"{s.steps:,}", f"{s.total_flops:.2e}", f"{s.gpu_hours:,.1f}", "yes" if s.fits else "NO: " + s.suggestion]


def render(task: str, profile: str, gpu: str, utilisation: float, results: list[EntryEstimate]) -> str:
    from tabulate import tabulate

    head = ["entry", "stage", "params (M)", "batch micro x acc x dev = global", "precision", "weights+grads+opt (GiB)",
            "activations (GiB)", "peak (GiB)", "FLOPs / step", "steps", "FLOPs total", "GPU-h", "fits"]
    rows = [_row(s) for r in results for s in r.stages]
    notes = [f"- {r.entry}: {r.note}" for r in results if r.note]
    budget = next((s.memory_budget for r in results for s in r.stages), 0)  # a host-only entry has no stage
    lines = [f"{task} @ {profile} on {gpu}: budget {_gib(budget)} GiB per device ({RESERVE:.0%} kept free), "
             f"GPU-hours at {utilisation:.0%} of the dense bf16 peak", tabulate(rows, head, tablefmt="github")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
