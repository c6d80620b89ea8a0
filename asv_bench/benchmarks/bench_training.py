"""What ``benchmark.training.fit`` costs per step over a bare training loop on the same model and data.

Why: fit does more than forward/backward/step (global-batch plan, loss weighting, deferred
logging, curve rows, profiler ranges when profiling); that must stay small next to a step, or
every entry pays for it. The bare loop is the minimum: the same batches from a DataLoader, AdamW,
clipping, ``loss.item()`` every step. A ratio near 1 means fit adds (almost) nothing; at
``log_every`` 50 fit reads the device once per 50 steps, which on a CPU changes little.
"""

from __future__ import annotations

from typing import Any

from ._ratio import paired_speedup

STEPS, BATCH, DIM = 60, 16, 32


def _data() -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(256, DIM, generator=g), torch.randn(256, 1, generator=g))


def _model() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 64), nn.GELU(), nn.Linear(64, 1))


def _mse(model: Any, batch: Any) -> Any:
    import torch

    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def bare_loop() -> None:
    import torch

    model, data = _model(), _data()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True)
    step = 0
    while step < STEPS:
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = _mse(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss.item()
            step += 1
            if step == STEPS:
                break


def fit_loop(log_every: int = 1, micro_batch_size: int = 0) -> None:
    from benchmark.training import FitConfig, fit

    config = FitConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, log_every=log_every, micro_batch_size=micro_batch_size)
    fit(_model(), _mse, _data(), config, device="cpu", seed=0, progress=False)


def track_fit_vs_bare_loop(log_every: int) -> float:
    """time(bare loop) / time(fit): 1 = fit costs nothing over the bare loop."""
    return paired_speedup(bare_loop, lambda: fit_loop(log_every))


track_fit_vs_bare_loop.params = [1, 50]
track_fit_vs_bare_loop.param_names = ["log_every"]
track_fit_vs_bare_loop.unit = "ratio"


def track_accumulation_vs_whole_batch() -> float:
    """time(whole batch) / time(4 micro-batches of 4, accumulated): what splitting a batch costs
    when the model is too small to fill the device (on a GPU it buys the memory to run at all)."""
    return paired_speedup(lambda: fit_loop(50), lambda: fit_loop(50, micro_batch_size=BATCH // 4))


track_accumulation_vs_whole_batch.unit = "ratio"
