"""The shared fit loop: learning, determinism, exact resume, checkpoint reuse and safety, schedules."""

from __future__ import annotations

import math
import re
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from benchmark.curves import CURVE_NAME, read_curve
from benchmark.training import (
    CHECKPOINT_NAME,
    CheckpointError,
    FitConfig,
    autocast_context,
    default_optimizer,
    default_scheduler,
    distributed_info,
    fit,
    lr_factor,
    move_to_device,
    unwrap,
)


class Regression(Dataset):
    """y = x·w + 0.5 with per-item jitter drawn from the *global* RNG (so data loading consumes it)."""

    def __init__(self, n: int = 40, dim: int = 4) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, 1, generator=g) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i] + 0.01 * torch.randn(self.x.shape[1]), "y": self.y[i]}


def make_model(init_seed: int = 0) -> nn.Module:
    torch.manual_seed(init_seed)
    return nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Dropout(0.1), nn.GELU(), nn.Linear(16, 1))


def mse(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def run(model: nn.Module, config: FitConfig, seed: int = 0, **kwargs):
    return fit(model, mse, Regression(), config, device=torch.device("cpu"), seed=seed, progress=False, **kwargs)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def weights_differ(a: nn.Module, b: nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


class Crash(Exception):
    pass


def crash_at(crash_step: int):
    """An ``on_step`` callback that interrupts training after step ``crash_step`` (a killed job)."""

    def crash(step: int, loss: float, logs: dict[str, float]) -> None:
        if step == crash_step:
            raise Crash

    return crash


CFG = {"steps": 13, "batch_size": 8, "lr": 1e-2, "weight_decay": 0.01, "warmup_steps": 2}  # 5 batches/epoch


def test_loss_decreases() -> None:
    model = make_model()
    result = run(model, FitConfig(steps=60, batch_size=8, lr=2e-2, warmup_steps=5))
    assert result.steps_done == 60 and len(result.losses) == 60 and result.resumed_from == 0
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.3 * first
    assert result.final_loss == result.losses[-1]
    assert result.samples_seen == 60 * 8 and result.wall_time_s > 0
    assert not dist.is_initialized()  # one process never creates a process group


def test_same_seed_same_weights_other_seed_differs() -> None:
    a, b, c = make_model(), make_model(), make_model()
    ra = run(a, FitConfig(**CFG), seed=3)
    rb = run(b, FitConfig(**CFG), seed=3)
    run(c, FitConfig(**CFG), seed=4)
    assert_same_weights(a, b)
    assert ra.losses == rb.losses
    assert weights_differ(a, c)


@pytest.mark.parametrize(
    ("every", "crash_step", "resumed_from"),
    [(4, 6, 4), (5, 7, 5), (3, 9, 9), (5, 12, 10)],  # mid-epoch, epoch boundary, crash right after a save
)
def test_resume_is_bit_exact(tmp_path: Path, every: int, crash_step: int, resumed_from: int) -> None:
    reference = make_model()
    ref = run(reference, FitConfig(**CFG))
    after_ref = torch.rand(3)  # RNG state after training is part of "exact"

    crash = crash_at(crash_step)

    config = FitConfig(**CFG, checkpoint_every=every)
    with pytest.raises(Crash):
        run(make_model(), config, checkpoint_dir=tmp_path, on_step=crash)
    resumed = make_model(init_seed=99)  # different init: the checkpoint must supply everything
    result = run(resumed, config, checkpoint_dir=tmp_path)
    assert result.resumed_from == resumed_from
    assert result.steps_done == CFG["steps"]
    assert_same_weights(reference, resumed)
    assert result.losses == ref.losses
    assert torch.equal(torch.rand(3), after_ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, CURVE_NAME]  # no temp files left behind
    curve = read_curve(tmp_path / CURVE_NAME)  # the steps after the checkpoint were cut and redone: each step once
    assert [r["step"] for r in curve] == list(range(1, CFG["steps"] + 1))
    assert [r["loss"] for r in curve] == ref.losses


def test_finished_checkpoint_is_reused(tmp_path: Path) -> None:
    trained = make_model()
    first = run(trained, FitConfig(**CFG), checkpoint_dir=tmp_path)
    after_training = torch.rand(3)

    def never(*_: object) -> None:
        raise AssertionError("a finished checkpoint must not train again")

    reused = make_model(init_seed=7)
    result = run(reused, FitConfig(**CFG, checkpoint_every=4, num_workers=0), checkpoint_dir=tmp_path, on_step=never)
    assert result.resumed_from == result.steps_done == CFG["steps"]
    assert result.samples_seen == 0
    assert result.losses == first.losses and result.final_loss == first.final_loss
    assert_same_weights(trained, reused)
    assert torch.equal(torch.rand(3), after_training)  # code after fit sees the same RNG either way

    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["done"] is True and ckpt["step"] == CFG["steps"]


@pytest.mark.parametrize("change", [{"steps": 14}, {"lr": 2e-2}, {"batch_size": 4}, {"warmup_steps": 0}])
def test_checkpoint_of_another_config_is_refused(tmp_path: Path, change: dict) -> None:
    run(make_model(), FitConfig(**CFG), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / CHECKPOINT_NAME))):
        run(make_model(), FitConfig(**(CFG | change)), checkpoint_dir=tmp_path)


def test_checkpoint_of_another_seed_is_refused(tmp_path: Path) -> None:
    run(make_model(), FitConfig(**CFG), checkpoint_dir=tmp_path, seed=0)
    with pytest.raises(CheckpointError, match="seed"):
        run(make_model(), FitConfig(**CFG), checkpoint_dir=tmp_path, seed=1)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "foreign"])
def test_corrupt_checkpoint_names_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / CHECKPOINT_NAME
    run(make_model(), FitConfig(**CFG), checkpoint_dir=tmp_path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        run(make_model(), FitConfig(**CFG), checkpoint_dir=tmp_path)


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    run(make_model(), FitConfig(**CFG), checkpoint_dir=tmp_path)
    other = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    with pytest.raises(CheckpointError, match="model"):
        run(other, FitConfig(**CFG), checkpoint_dir=tmp_path)


def test_weight_decay_only_on_weight_matrices() -> None:
    model = make_model()
    optimizer = default_optimizer(model, FitConfig(steps=1, weight_decay=0.05))
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in optimizer.param_groups}
    decayed = {id(p) for p in groups["decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[4].weight)}
    assert {id(p) for p in groups["no_decay"]["params"]} == {
        id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[4].bias)
    }


def lr_sequence(config: FitConfig) -> list[float]:
    optimizer = default_optimizer(make_model(), config)
    scheduler = default_scheduler(optimizer, config)
    out = []
    for _ in range(config.steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_cosine() -> None:
    config = FitConfig(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    lrs = lr_sequence(config)
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)  # cosine starts at the peak
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lrs == pytest.approx([lr_factor(s, config) for s in range(10)])


def test_constant_schedule_and_fit_uses_the_schedule() -> None:
    assert lr_sequence(FitConfig(steps=5, lr=1.0, warmup_steps=2, schedule="constant")) == pytest.approx(
        [0.5, 1.0, 1.0, 1.0, 1.0]
    )
    config = FitConfig(steps=7, lr=0.01, warmup_steps=3)
    seen: list[float] = []
    run(make_model(), config, on_step=lambda step, loss, logs: seen.append(logs["lr"]))
    assert seen == pytest.approx([0.01 * lr_factor(s, config) for s in range(7)])


def test_loss_fn_may_return_logs() -> None:
    seen: list[dict[str, float]] = []

    def loss_with_logs(model: nn.Module, batch: dict[str, torch.Tensor]):
        loss = mse(model, batch)
        return loss, {"mse": loss.detach(), "batch": float(len(batch["x"]))}

    result = fit(make_model(), loss_with_logs, Regression(), FitConfig(steps=4), device="cpu", seed=0,
                 progress=False, on_step=lambda step, loss, logs: seen.append(logs))
    assert len(seen) == 4 and result.final_logs == seen[-1]
    assert result.final_logs["mse"] == pytest.approx(result.final_loss)
    assert result.final_logs["batch"] == 8.0 and "grad_norm" in result.final_logs


def test_dataset_smaller_than_batch_still_trains() -> None:
    class Tiny(Regression):
        def __len__(self) -> int:
            return 3

    result = fit(make_model(), mse, Tiny(), FitConfig(steps=4, batch_size=8), device="cpu", seed=0, progress=False)
    assert result.steps_done == 4 and result.samples_seen == 12


def test_non_finite_loss_raises() -> None:
    def bad(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return mse(model, batch) * float("nan")

    with pytest.raises(FloatingPointError, match="step 1"):
        fit(make_model(), bad, Regression(), FitConfig(steps=3), device="cpu", seed=0, progress=False)


def test_from_hparams_prefers_prefixed_keys() -> None:
    hp = {"steps": 3, "pretrain_steps": 7, "batch_size": 4, "pretrain_lr": 1e-4, "width": 64, "grad_clip": None}
    for prefix in ("pretrain", "pretrain_"):
        config = FitConfig.from_hparams(hp, prefix=prefix)
        assert (config.steps, config.batch_size, config.lr, config.grad_clip) == (7, 4, 1e-4, None)
    assert FitConfig.from_hparams(hp).steps == 3
    assert FitConfig.from_hparams({"steps": 1e3}).steps == 1000
    with pytest.raises(KeyError, match="finetune_steps"):
        FitConfig.from_hparams({"lr": 1.0}, prefix="finetune")
    with pytest.raises(ValueError, match="schedule"):
        FitConfig(steps=1, schedule="linear")
    with pytest.raises(ValueError, match="integer"):
        FitConfig(steps=2.5)


def test_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_info() == (0, 1, 0)
    Pair = namedtuple("Pair", "a b")
    batch = {"x": [torch.ones(2), (torch.zeros(1), "id")], "p": Pair(torch.ones(1), 3), "n": 5}
    moved = move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["p"], Pair) and moved["n"] == 5 and moved["x"][1][1] == "id"
    with autocast_context(torch.device("cpu"), enabled=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # CPU stays fp32
    wrapped = torch.nn.DataParallel(make_model())
    assert isinstance(unwrap(wrapped), nn.Sequential)


def test_fit_in_context_reads_stage_hparams_and_records(tmp_path: Path) -> None:
    from benchmark.contracts import RunContext
    from benchmark.training import fit_in_context

    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", checkpoint_dir=tmp_path,
                     hparams={"pretrain_steps": 3, "steps": 5, "batch_size": 4}, show_progress=False)
    result = fit_in_context(ctx, make_model(), mse, Regression(), stage="pretrain")
    assert result.steps_done == 3 and result.samples_seen == 12
    assert (tmp_path / "pretrain" / CHECKPOINT_NAME).exists()
    assert ctx.fit_log["pretrain"]["steps"] == 3


def test_segmentation_loss_weights_ignore_and_empty_batches() -> None:
    from benchmark.training import segmentation_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = 9
    info = {"ignore_index": 9, "class_weights": [0.2, 1.0, 3.0]}
    expected = nn.functional.cross_entropy(logits, labels, weight=torch.tensor([0.2, 1.0, 3.0]), ignore_index=9)
    assert torch.allclose(segmentation_loss(logits, labels, info), expected)
    assert torch.allclose(segmentation_loss(logits, labels, {"ignore_index": 9}), nn.functional.cross_entropy(logits, labels, ignore_index=9))
    empty = segmentation_loss(logits, torch.full_like(labels, 9), info)
    assert empty.item() == 0.0 and empty.requires_grad  # all ignored: zero, not NaN
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        segmentation_loss(logits, labels, {"ignore_index": 9, "class_weights": [1.0, 2.0]})


def test_checkpoint_from_before_micro_batches_still_resumes_exactly(tmp_path: Path) -> None:
    """Its config lacks the new fields and has ``num_workers: 0``: at world size 1 it is the same run."""
    reference = make_model()
    ref = run(reference, FitConfig(**CFG))

    crash = crash_at(6)

    config = FitConfig(**CFG, checkpoint_every=4)
    with pytest.raises(Crash):
        run(make_model(), config, checkpoint_dir=tmp_path, on_step=crash)
    path = tmp_path / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=True)
    new_fields = ("micro_batch_size", "log_every", "pin_memory", "persistent_workers", "prefetch_factor", "compile")
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in new_fields} | {"num_workers": 0}
    torch.save(ckpt, path)
    resumed = make_model(init_seed=5)
    result = run(resumed, config, checkpoint_dir=tmp_path)
    assert result.resumed_from == 4 and result.losses == ref.losses
    assert_same_weights(reference, resumed)
    assert (result.world_size, result.micro_batch_size, result.accumulate, result.global_batch_size) == (1, 8, 1, 8)


def test_micro_batch_size_may_change_on_resume(tmp_path: Path) -> None:
    """It only changes float rounding: a run may continue on a smaller device with a smaller micro-batch."""
    reference = make_model()
    ref = run(reference, FitConfig(**CFG))

    crash = crash_at(6)

    with pytest.raises(Crash):
        run(make_model(), FitConfig(**CFG, checkpoint_every=4), checkpoint_dir=tmp_path, on_step=crash)
    resumed = make_model()
    result = run(resumed, FitConfig(**CFG, checkpoint_every=4, micro_batch_size=2), checkpoint_dir=tmp_path)
    assert result.resumed_from == 4 and result.accumulate == 4
    assert result.losses[:4] == ref.losses[:4]
    assert result.steps_done == CFG["steps"] and all(math.isfinite(x) for x in result.losses)
