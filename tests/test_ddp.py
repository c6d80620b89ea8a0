"""``fit`` under DDP: two CPU processes with gloo, as torchrun would start them.

Each worker sets torchrun's environment variables and calls ``fit`` (which joins the process
group itself), trains uninterrupted, then trains again with a crash after a checkpoint and
resumes; then trains with micro-batches and gradient accumulation on a loss whose samples hold
unequal numbers of units; finally a loss that bypasses the DDP wrapper must be caught. Both ranks
must end with identical weights, the resumed run must equal the uninterrupted one, and the
accumulated run must equal one process training on the same global batches.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from benchmark.curves import CURVE_NAME, read_curve
from benchmark.training import (
    CHECKPOINT_NAME,
    FitConfig,
    distributed_info,
    fit,
    is_main_process,
    unwrap,
)

WORLD = 2
STEPS = 8
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")


class Regression(Dataset):
    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x.sum(1, keepdim=True) - 1.0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def noisy_mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    x = x + 0.05 * torch.randn_like(x)  # per-rank RNG stream: resume must restore every rank's state
    return nn.functional.mse_loss(model(x), y)


class Units(Regression):
    """Each sample holds 1-4 target units (the rest masked): a mean over units, not samples."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(i)
        mask = torch.arange(4) <= i % 4
        return x, y.expand(4) * torch.linspace(0.5, 2.0, 4), mask


def unit_mse(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x, y, mask = batch
    err = (model(x) - y) ** 2
    units = mask.sum()
    return (err * mask).sum() / units, {"loss_weight": units}


ACCUMULATED = FitConfig(steps=6, batch_size=8, micro_batch_size=2, lr=5e-2, warmup_steps=2)  # 2 micro-batches × 2 ranks


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


class Crash(Exception):
    pass


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    root = Path(out)
    cfg = FitConfig(steps=STEPS, batch_size=4, lr=5e-2, warmup_steps=2)
    try:
        init = {k: v.clone() for k, v in make_model().state_dict().items()}
        straight = make_model()
        r1 = fit(straight, noisy_mse, Regression(), cfg, device="cpu", seed=1, progress=False,
                 checkpoint_dir=root / "straight")
        assert dist.is_initialized() and distributed_info()[:2] == (rank, WORLD)

        def crash(step: int, loss: float, logs: dict[str, float]) -> None:
            if step == 5:
                raise Crash

        interrupted = dataclasses.replace(cfg, checkpoint_every=3)
        try:
            fit(make_model(), noisy_mse, Regression(), interrupted, device="cpu", seed=1, progress=False,
                checkpoint_dir=root / "resumed", on_step=crash)
            raise AssertionError("the crash did not happen")
        except Crash:
            pass
        resumed = make_model()
        r2 = fit(resumed, noisy_mse, Regression(), interrupted, device="cpu", seed=1, progress=False,
                 checkpoint_dir=root / "resumed")
        accumulated = make_model()
        r3 = fit(accumulated, unit_mse, Units(), ACCUMULATED, device="cpu", seed=1, progress=False)
        diverged = ""
        try:  # bypassing the DDP wrapper skips gradient averaging: fit must notice, on every rank
            fit(make_model(), lambda m, b: noisy_mse(unwrap(m), b), Regression(), cfg, device="cpu",
                seed=1, progress=False)
        except RuntimeError as exc:
            diverged = str(exc)
        torch.save({"diverged": diverged, "init": init, "straight": straight.state_dict(), "resumed": resumed.state_dict(),
                    "accumulated": accumulated.state_dict(), "shape": (r3.world_size, r3.micro_batch_size, r3.accumulate,
                                                                      r3.global_batch_size), "losses": (r1.losses, r2.losses), "resumed_from": r2.resumed_from,
                    "samples": r1.samples_seen, "main": is_main_process()}, root / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_agree_and_resume_exactly(tmp_path: Path) -> None:
    ctx = mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):  # raises ProcessRaisedException if a worker failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers hung")

    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    for name in r0["straight"]:
        assert torch.equal(r0["straight"][name], r1["straight"][name]), name  # replicas agree
        assert torch.equal(r0["resumed"][name], r0["straight"][name]), name  # resume is exact
        assert torch.equal(r1["resumed"][name], r1["straight"][name]), name
    assert any(not torch.equal(r0["init"][k], r0["straight"][k]) for k in r0["init"])
    assert r0["losses"][0] == r0["losses"][1] and r1["losses"][0] == r1["losses"][1]
    assert r0["losses"][0] != r1["losses"][0]  # each rank saw its own shard
    assert r0["resumed_from"] == r1["resumed_from"] == 3
    assert r0["samples"] == STEPS * 4  # batch_size is the global batch: 2 samples per rank and step
    assert r0["shape"] == r1["shape"] == (WORLD, 2, 2, 8)
    single = make_model()  # one process, the whole global batch of 8 in one forward: the plain global mean
    fit(single, unit_mse, Units(), dataclasses.replace(ACCUMULATED, micro_batch_size=0), device="cpu", seed=1,
        progress=False)
    for name, value in single.state_dict().items():
        assert torch.equal(r0["accumulated"][name], r1["accumulated"][name]), name
        torch.testing.assert_close(r0["accumulated"][name], value, rtol=1e-5, atol=1e-6)
    assert r0["main"] and not r1["main"]
    assert "diverged" in r0["diverged"] and "diverged" in r1["diverged"]
    for sub in ("straight", "resumed"):  # rank 0 alone wrote, atomically: its checkpoint and its curve, one line per step
        assert sorted(p.name for p in (tmp_path / sub).iterdir()) == [CHECKPOINT_NAME, CURVE_NAME]
        assert [r["step"] for r in read_curve(tmp_path / sub / CURVE_NAME)] == list(range(1, STEPS + 1))
        assert torch.load(tmp_path / sub / CHECKPOINT_NAME, weights_only=True)["done"] is True
