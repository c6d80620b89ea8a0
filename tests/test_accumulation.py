"""fit at GPU scale, on a CPU: micro-batches and accumulation, unit-weighted losses, no host reads
between logging steps, profiler ranges, epoch-seeded keys with worker processes, torch.compile."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import Dataset

from benchmark.training import FitConfig, FitResult, fit
from tests.test_training import Crash, crash_at

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero")


class Units(Dataset):
    """Deterministic items; item i holds 1 + i % 4 valid target units out of 4."""

    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.randn(n, 4, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "mask": torch.arange(4) <= i % 4}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))


def unit_mean(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    err = (model(batch["x"]) - batch["y"]) ** 2 * batch["mask"]
    return err.sum() / batch["mask"].sum()


def weighted_unit_mean(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    return unit_mean(model, batch), {"loss_weight": batch["mask"].sum(), "units": batch["mask"].sum().float()}


def sample_mean(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def train(config: FitConfig, loss_fn=sample_mean, data: Dataset | None = None, **kwargs) -> tuple[nn.Module, FitResult]:
    model = make_model()
    result = fit(model, loss_fn, data if data is not None else Units(), config, device="cpu", seed=0, progress=False,
                 **kwargs)
    return model, result


def assert_close_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


CFG = FitConfig(steps=10, batch_size=8, lr=2e-2, warmup_steps=2)  # 4 steps per epoch: crosses epochs


def test_micro_batches_and_accumulation_match_the_whole_batch() -> None:
    whole, r_whole = train(CFG)
    micro, r_micro = train(dataclasses.replace(CFG, micro_batch_size=2))
    assert (r_micro.accumulate, r_micro.micro_batch_size, r_micro.global_batch_size, r_micro.world_size) == (4, 2, 8, 1)
    assert (r_whole.accumulate, r_whole.micro_batch_size) == (1, 8)
    assert_close_weights(whole, micro)
    assert r_micro.losses == pytest.approx(r_whole.losses, rel=1e-5)
    assert r_micro.samples_seen == r_whole.samples_seen == 10 * 8


def test_loss_weight_gives_the_gradient_of_the_global_mean_over_units() -> None:
    """Micro-batches of 2 samples hold 2 to 8 units: equal weights would give the wrong mean."""

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=1.0)  # one step moves each weight by -grad

    config = FitConfig(steps=1, batch_size=8, micro_batch_size=2, grad_clip=None, schedule="constant")
    data = Units(8)
    truth = make_model()  # the gradient of the mean over all 20 units of the global batch
    unit_mean(truth, {k: torch.stack([data[i][k] for i in range(8)]) for k in ("x", "y", "mask")}).backward()
    expected = [p.detach() - p.grad for p in truth.parameters()]

    weighted, result = train(config, weighted_unit_mean, data, optimizer_factory=sgd, scheduler_factory=lambda o, c: None)
    for got, want in zip(weighted.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    assert "loss_weight" not in result.final_logs
    assert 2.0 <= result.final_logs["units"] <= 8.0  # logs are the unit-weighted mean over micro-batches
    unweighted, _ = train(config, unit_mean, data, optimizer_factory=sgd, scheduler_factory=lambda o, c: None)
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(unweighted.parameters(), expected, strict=True))


def test_a_global_batch_that_does_not_split_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size 10 .* not a multiple of micro_batch_size 4"):
        FitConfig(steps=1, batch_size=10, micro_batch_size=4)
    with pytest.raises(ValueError, match="micro_batch_size=-1"):
        FitConfig(steps=1, micro_batch_size=-1)
    assert FitConfig(steps=1, batch_size=12, micro_batch_size=4).accumulate == 3


def test_mixing_weighted_and_unweighted_micro_batches_is_refused() -> None:
    calls = {"n": 0}

    def sometimes(model: nn.Module, batch: dict[str, torch.Tensor]):
        calls["n"] += 1
        return weighted_unit_mean(model, batch) if calls["n"] % 2 else unit_mean(model, batch)

    with pytest.raises(ValueError, match="loss_weight.*always or never"):
        train(FitConfig(steps=1, batch_size=4, micro_batch_size=2), sometimes)


def _inside(events: list, outer: str, names: tuple[str, ...], exclude: str = "host.") -> list[int]:
    """Per ``outer`` range (in order): how many ``names`` events lie inside it (not under ``exclude``)."""
    ranges = sorted((e.time_range.start, e.time_range.end) for e in events if e.name == outer)
    skip = [(e.time_range.start, e.time_range.end) for e in events if e.name.startswith(exclude)]
    counts = []
    for start, end in ranges:
        counts.append(sum(
            1 for e in events if e.name in names and start <= e.time_range.start and e.time_range.end <= end
            and not any(s <= e.time_range.start and e.time_range.end <= t for s, t in skip)))
    return counts


def test_no_host_reads_inside_steps_and_reads_only_on_logging_steps() -> None:
    """AdamW's own ``.item()`` of its host step counters is marked ``host.*`` by fit and excluded."""
    seen: list[int] = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(dataclasses.replace(CFG, log_every=4, micro_batch_size=4), weighted_unit_mean,
              on_step=lambda step, loss, logs: seen.append(step))
    events = list(prof.events())
    steps = _inside(events, "fit.step", SYNC_OPS)
    assert len(steps) == 10 and sum(steps) == 0, steps
    reads = _inside(events, "fit.log", ("aten::_local_scalar_dense", "aten::item"))
    assert len(reads) == 3  # steps 4, 8 and the last
    assert seen == list(range(1, 11))  # every step still reaches on_step, in order


def test_log_every_changes_no_number(tmp_path: Path) -> None:
    every, r_every = train(CFG, checkpoint_dir=tmp_path / "a")
    rarely, r_rarely = train(dataclasses.replace(CFG, log_every=3), checkpoint_dir=tmp_path / "b")
    assert r_every.losses == r_rarely.losses and r_every.final_logs == r_rarely.final_logs
    assert all(torch.equal(x, y) for x, y in zip(every.state_dict().values(), rarely.state_dict().values(), strict=True))
    rows = [line for line in (tmp_path / "b" / "curve.jsonl").read_text().splitlines() if line]
    assert len(rows) == 10  # one curve row per step, written on the logging steps


def test_non_finite_loss_is_named_at_its_step_even_when_read_late() -> None:
    def bad_at_3(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        bad_at_3.calls += 1
        return sample_mean(model, batch) * (float("nan") if bad_at_3.calls == 3 else 1.0)

    bad_at_3.calls = 0
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(dataclasses.replace(CFG, log_every=5), bad_at_3)


class EpochNoise(Units):
    """Epoch-seeded: each read's noise is a pure function of (seed, epoch, index)."""

    epoch_seeded = True

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        item = super().__getitem__(index)
        noise = np.random.default_rng([11, epoch, index]).normal(size=4).astype(np.float32)
        return item | {"x": item["x"] + 0.1 * torch.from_numpy(noise), "epoch": torch.tensor(epoch)}


def test_epoch_seeded_data_with_workers_resumes_exactly(tmp_path: Path) -> None:
    epochs: list[list[int]] = []

    def record(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        epochs.append(batch["epoch"].tolist())
        return sample_mean(model, batch)

    reference, r_ref = train(CFG, record, EpochNoise())
    assert [e[0] for e in epochs] == [0] * 4 + [1] * 4 + [2] * 2  # the keys carry the epoch

    crash = crash_at(6)

    workers = dataclasses.replace(CFG, num_workers=2, persistent_workers=True, checkpoint_every=5)
    with pytest.raises(Crash):
        train(workers, sample_mean, EpochNoise(), checkpoint_dir=tmp_path, on_step=crash)
    resumed, r_resumed = train(workers, sample_mean, EpochNoise(), checkpoint_dir=tmp_path)
    assert r_resumed.resumed_from == 5
    assert r_resumed.losses == r_ref.losses
    assert all(torch.equal(x, y) for x, y in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True))


def test_compile_trains_through_the_compiled_module(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []
    real = torch.compile

    def eager_compile(model: nn.Module, **kwargs):  # the eager backend: traced by dynamo, no C++ toolchain needed
        compiled.append(model)
        return real(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    plain, r_plain = train(dataclasses.replace(CFG, steps=3))
    model, result = train(dataclasses.replace(CFG, steps=3, compile=True))
    assert len(compiled) == 1 and result.steps_done == 3
    assert result.losses == pytest.approx(r_plain.losses, rel=1e-6)


def test_motif_weights_its_micro_batches_by_their_targets() -> None:
    """MoTiF's loss is a mean over targets; weighted by ``scored_targets`` the micro-batch losses
    give the mean over all targets of the global batch (one micro-batch has an empty target)."""
    from reference_models.motif_fm.flow import masked_mse, scored_targets

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(5, 2, 3, 3, generator=g), torch.randn(5, 2, 3, 3, generator=g)
    valid = torch.rand(5, 2, 3, 3, generator=g) > 0.4
    valid[3] = False  # a swath with nothing observed: not a target
    parts = [slice(0, 1), slice(1, 5)]
    losses = [masked_mse(pred[s], target[s], valid[s]) for s in parts]
    weights = [scored_targets(valid[s]) for s in parts]
    assert [int(w) for w in weights] == [1, 3]
    combined = sum(w * loss for w, loss in zip(weights, losses, strict=True)) / sum(weights)
    torch.testing.assert_close(combined, masked_mse(pred, target, valid))
    assert not torch.allclose(sum(losses) / 2, masked_mse(pred, target, valid))


def test_an_accumulating_run_resumes_exactly(tmp_path: Path) -> None:
    config = dataclasses.replace(CFG, micro_batch_size=2, log_every=4)
    reference, r_ref = train(config, weighted_unit_mean)

    crash = crash_at(7)

    interrupted = dataclasses.replace(config, checkpoint_every=6)
    with pytest.raises(Crash):
        train(interrupted, weighted_unit_mean, checkpoint_dir=tmp_path, on_step=crash)
    resumed, result = train(interrupted, weighted_unit_mean, checkpoint_dir=tmp_path)
    assert result.resumed_from == 6 and result.losses == r_ref.losses
    assert all(torch.equal(x, y) for x, y in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True))


def test_a_step_whose_micro_batches_all_weigh_zero_logs_zero_not_nan() -> None:
    """A step with no scored unit (every micro-batch's loss_weight 0, each loss 0 as MoTiF's
    masked_mse gives) trains nothing and logs loss 0, as the same step without micro-batches does;
    0/0 in the weighted mean would raise "loss is nan" (or log NaN on a rank under DDP)."""

    def no_units(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss = (model(batch["x"]) * 0).sum()
        return loss, {"loss_weight": torch.zeros((), dtype=torch.long), "units": torch.zeros(())}

    cfg = dataclasses.replace(CFG, steps=2, grad_clip=None)
    _, whole = train(cfg, loss_fn=no_units)
    _, micro = train(dataclasses.replace(cfg, micro_batch_size=2), loss_fn=no_units)
    assert whole.losses == micro.losses == [0.0, 0.0]
    assert micro.final_logs["units"] == 0.0


def test_gradient_normalisation_keeps_each_parameter_dtype_exact() -> None:
    """The summed weighted gradients are divided by the step's total weight in float32 for float32
    parameters even when the first trainable parameter is bfloat16 (a scale rounded to bfloat16,
    ~3 significant digits, would scale every gradient wrongly by up to 0.4 %)."""
    from benchmark.accumulation import MicroBatchStep
    from benchmark.batching import StepPlan

    low = nn.Parameter(torch.ones(2, dtype=torch.bfloat16))
    high = nn.Parameter(torch.ones(3))
    model = nn.Module()
    model.low, model.high = low, high

    def loss_fn(m: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss = m.low.float().sum() * 0 + (m.high * batch).sum()
        return loss, {"loss_weight": torch.tensor(float(len(batch)) + 36.0)}  # 37 each: 1/74 is inexact in bf16

    step = MicroBatchStep(model, None, loss_fn, [low, high], 1, torch.device("cpu"), contextlib.nullcontext,
                          lambda b, d: b, "t")
    batches = [torch.full((1,), 2.0), torch.full((1,), 4.0)]
    step(batches, StepPlan([[0], [1]], 2))
    expected = (37 * 2.0 + 37 * 4.0) / 74  # Σ w·∂L/∂high / Σ w
    torch.testing.assert_close(high.grad, torch.full((3,), expected), rtol=1e-6, atol=0)
