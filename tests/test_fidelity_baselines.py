"""Fidelity of the SSL baselines' budgets and schedules (docs/fidelity.md, "Baselines at paper").

Each test here fails on the behaviour the fidelity table recorded as open: fixed 500-step warm-ups,
MoCo momentum / queue copied from schedules 100× longer, SatMAE's lr for a batch it does not have,
and bf16 similarity logits at τ = 0.02.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from baselines import caco, gssl, satmae, seco, ssl_common
from baselines.ssl_common import (
    BUDGET_RULE,
    KeyQueue,
    info_nce,
    moco_hparams,
    moco_logits,
    moco_schedule,
    paired_similarity,
    similarity,
)
from benchmark import fit_config, registry
from benchmark.budget import with_stage_steps
from benchmark.collate import sits_collate
from benchmark.contracts import RunContext
from benchmark.training import (
    CHECKPOINT_NAME,
    CheckpointError,
    FitConfig,
    _load_checkpoint,
    lr_factor,
)

POOLS = {"pastis_r": 1460, "africa_crop_type": 554}  # unlabeled series at paper (docs/fidelity.md)
STAGES = ("pretrain", "finetune", "train", "")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ctx(hp: dict[str, Any], profile: str = "paper") -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, profile=profile, hparams=dict(hp), checkpoint_dir=Path("."))


def _profiles() -> list[tuple[str, str]]:
    out = []
    for name in registry.entry_names():
        cls = registry.load_entry(name)
        out += [(name, profile) for profile in cls.profiles]
    return out


# --------------------------------------------------------------------------- warm-up
@pytest.mark.parametrize("entry,profile", _profiles())
def test_warmup_is_at_most_5_percent_of_every_stage(entry: str, profile: str) -> None:
    hp = dict(registry.load_entry(entry).profiles[profile])
    checked = 0
    for prefix in STAGES:
        key = f"{prefix}_" if prefix else ""
        if f"{key}steps" not in hp and f"{key}epochs" not in hp:
            continue
        config = FitConfig.from_hparams({**hp, f"{key}steps": 700}, prefix)
        checked += 1
        if config.warmup == 0:
            continue
        assert config.warmup <= 0.05 * 700, f"{entry}/{profile} stage {prefix or '(plain)'}: warm-up {config.warmup} of 700 steps"
    if not checked:
        pytest.skip(f"{entry}/{profile} trains no stage through FitConfig")


def test_fitconfig_warmup_fraction() -> None:
    assert FitConfig(steps=700, warmup_fraction=0.05).warmup == 35
    assert FitConfig(steps=20, warmup_fraction=0.05).warmup == 1
    assert FitConfig(steps=19, warmup_fraction=0.05).warmup == 0
    assert FitConfig(steps=700, warmup_steps=10).warmup == 10
    config = FitConfig(steps=10, warmup_fraction=0)
    assert isinstance(config.warmup_fraction, float) and config.warmup == 0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="warmup_fraction"):
            FitConfig(steps=10, warmup_fraction=bad)
    with pytest.raises(ValueError, match="warmup_steps .*warmup_fraction.*not both"):
        FitConfig(steps=10, warmup_steps=2, warmup_fraction=0.05)
    assert "warmup_fraction" in dataclasses.asdict(FitConfig(steps=1))  # part of the run identity


def test_fitconfig_from_hparams_picks_warmup_per_field() -> None:
    hp = {"steps": 200, "pretrain_steps": 100, "warmup_fraction": 0.05}
    # a stage's own warmup_steps of 0 next to a plain fraction: no conflict, the fraction holds
    assert FitConfig.from_hparams({**hp, "pretrain_warmup_steps": 0}, "pretrain").warmup == 5
    # a stage's own fraction beats the plain one; the other stage keeps the plain one
    both = {**hp, "pretrain_warmup_fraction": 0.0}
    assert FitConfig.from_hparams(both, "pretrain").warmup == 0
    assert FitConfig.from_hparams(both, "finetune").warmup == 10
    # old profiles with warmup_steps keep working
    assert FitConfig.from_hparams({"steps": 100, "warmup_steps": 7}).warmup == 7
    with pytest.raises(ValueError, match="not both"):
        FitConfig.from_hparams({**hp, "pretrain_warmup_steps": 500}, "pretrain")


def test_lr_factor_with_warmup_fraction() -> None:
    frac = FitConfig(steps=100, lr=1.0, warmup_fraction=0.05, min_lr_ratio=0.1)
    fixed = FitConfig(steps=100, lr=1.0, warmup_steps=5, min_lr_ratio=0.1)
    factors = [lr_factor(s, frac) for s in range(100)]
    assert factors == [lr_factor(s, fixed) for s in range(100)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    # South Sudan at 500 SatMAE steps: the rate decays (a fixed 500-step warm-up never let it)
    south_sudan = FitConfig(steps=500, lr=1.0, warmup_fraction=0.05)
    assert south_sudan.warmup == 25 and lr_factor(499, south_sudan) < 1e-3


def test_checkpoint_written_before_warmup_fraction_still_resumes(tmp_path: Path) -> None:
    config = FitConfig(steps=5, warmup_steps=2)
    stored = dataclasses.asdict(config)
    del stored["warmup_fraction"]  # a checkpoint from before the field existed
    run = {"seed": 0, "world_size": 1, "dataset_len": 8}
    ckpt = {"format": 1, "done": False, "step": 1, "config": stored, "run": run, "model": {}, "optimizer": {},
            "scheduler": None, "data": {}, "ranks": []}
    path = tmp_path / CHECKPOINT_NAME
    torch.save(ckpt, path)
    assert _load_checkpoint(path, config, run)["step"] == 1
    with pytest.raises(CheckpointError, match="warmup_fraction"):
        _load_checkpoint(path, FitConfig(steps=5, warmup_fraction=0.4), run)


# --------------------------------------------------------------------------- MoCo budget
CONTRASTIVE = {"seco": (seco.PROFILES, 1), "gssl": (gssl.PROFILES, 1), "caco": (caco.PROFILES, 2)}


@pytest.mark.parametrize("entry", list(CONTRASTIVE))
@pytest.mark.parametrize("task", list(POOLS))
def test_moco_momentum_and_queue_follow_the_stage(entry: str, task: str) -> None:
    profiles, keys = CONTRASTIVE[entry]
    n = POOLS[task]
    hp = with_stage_steps(_ctx(profiles["paper"]), "pretrain", n).hparams
    cfg = FitConfig.from_hparams(hp, "pretrain")
    steps = cfg.steps
    assert cfg.batch_size == 64 and steps == 100 * math.ceil(n / 64)  # equal epochs: 100, as S4
    used = moco_hparams(hp, n, keys_per_sample=keys)
    m, queue = used["momentum"], used["queue_size"]
    assert 0 <= m <= profiles["paper"]["momentum"]
    assert 1 / (1 - m) <= 0.05 * steps + 1e-6  # the key encoder averages over <= 5 % of the steps
    assert m**steps < 1e-3  # nothing of the random initial weights is left in the key encoder
    assert queue <= n * keys  # at most one epoch of keys
    assert queue <= cfg.batch_size * keys * max(1, math.floor(0.05 * steps))  # full within 5 % of the steps
    assert queue <= profiles["paper"]["queue_size"]


def test_moco_schedule_edge_cases() -> None:
    hp = {"momentum": 0.999, "queue_size": 65536}
    assert moco_schedule(3, 10, 2, hp) == (0.0, 2)  # a smoke stage: no averaging, one batch of keys
    assert moco_schedule(10**7, 10**9, 256, hp) == (0.999, 65536)  # a long stage keeps the profile's values
    m, q = moco_schedule(900, 554, 64, hp)
    assert m == pytest.approx(1 - 20 / 900) and q == 554
    assert "equal samples seen" in BUDGET_RULE.lower()


class _Pool(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"id": str(i)}


@pytest.mark.parametrize("entry", ["seco", "gssl", "caco"])
@pytest.mark.parametrize("world", [1, 8])
def test_pretrainers_use_the_stage_schedule(entry: str, world: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssl_common, "distributed_info", lambda: (0, world, 0))
    cls = registry.load_entry(entry)
    hp = {**cls.profiles["smoke"], "pretrain_steps": 400, "pretrain_batch_size": 16, "momentum": 0.999, "queue_size": 16384}
    baseline = cls()
    baseline.channels = {"radar": 3, "optical": 3}
    baseline.net = seco.build_encoder(baseline.channels, hp)
    model = baseline.build_pretrainer(_Pool(30), _ctx(hp, "smoke"))
    keys = CONTRASTIVE[entry][1]
    per_rank = math.ceil(30 / world)
    assert model.momentum == pytest.approx(0.95)  # 1 - 20 / 400: the steps fit runs on every rank
    assert model.queue_size == min(per_rank * keys, 16 // world * keys * 20)  # the global batch of 16, shared out
    assert all(q.keys.shape[0] == model.queue_size for qs in model.queues.values() for q in qs)


def _sits_batch(n: int, t: int = 6, px: int = 16) -> dict[str, Any]:
    return sits_collate([{"id": str(i), **{m: torch.randn(t, 3, px, px) for m in ("radar", "optical")},
                          **{f"{m}_dates": torch.arange(float(t)) * 30 for m in ("radar", "optical")}} for i in range(n)])


# --------------------------------------------------------------------------- fp32 logits
def test_moco_logits_are_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    tau, d = 0.02, 128
    q = F.normalize(torch.randn(64, d), dim=1)
    k = F.normalize(torch.randn(256, d), dim=1)
    pos_k = F.normalize(q + 0.3 * torch.randn(64, d), dim=1)
    queue = KeyQueue(256, d)
    queue.push(k, torch.arange(256) + 1000)
    q_ids = torch.arange(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = moco_logits(paired_similarity(q, pos_k), [queue.negative_logits(q, q_ids), similarity(q, k)], tau)
        loss = info_nce(paired_similarity(q, pos_k), [queue.negative_logits(q, q_ids)], tau)
        old = (q @ k.T).float() / tau  # what a bf16 matmul gives
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    q64, k64, p64 = q.double(), k.double(), pos_k.double()
    ref = torch.cat([(q64 * p64).sum(1, keepdim=True), q64 @ k64.T, q64 @ k64.T], 1) / tau
    assert (logits.double() - ref).abs().max() < 1e-5
    ref_loss = F.cross_entropy(ref[:, : 1 + 256], torch.zeros(64, dtype=torch.long))
    assert abs(float(loss) - float(ref_loss)) < 1e-5
    assert (old.double() - q64 @ k64.T / tau).abs().max() > 1e-2  # the test can tell the bf16 path apart


def test_caco_negatives_are_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    z_q, z_k = F.normalize(torch.randn(8, 64), dim=1), F.normalize(torch.randn(8, 64), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        neg = caco.caco_negatives(z_q, z_k, torch.ones(8, dtype=torch.long))
    ref = z_q.double() @ z_k.double().T
    finite = neg.isfinite()
    assert neg.dtype == torch.float32 and (neg.double()[finite] - ref[finite]).abs().max() < 1e-6


@pytest.mark.parametrize("entry", ["seco", "gssl", "caco"])
def test_pretrainer_logits_are_float32_under_bf16_autocast(entry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.dtype] = []

    def spy(pos: torch.Tensor, neg: list[torch.Tensor], tau: float) -> torch.Tensor:
        seen.extend([pos.dtype, *(n.dtype for n in neg)])
        return info_nce(pos, neg, tau)

    module = {"seco": seco, "gssl": gssl, "caco": caco}[entry]
    monkeypatch.setattr(module, "info_nce", spy)
    torch.manual_seed(0)
    cls = registry.load_entry(entry)
    baseline = cls()
    baseline.channels = {"radar": 3, "optical": 3}
    hp = dict(cls.profiles["smoke"])
    baseline.net = seco.build_encoder(baseline.channels, hp)
    model = baseline.build_pretrainer(_Pool(3), _ctx(hp, "smoke"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = model(_sits_batch(3))
    assert seen and all(dt == torch.float32 for dt in seen), seen
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert logs["momentum"] == model.momentum and logs["queue_size"] == model.queue_size


# --------------------------------------------------------------------------- SatMAE lr
def test_satmae_lr_scales_with_the_global_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    hp = with_stage_steps(_ctx(satmae.PROFILES["paper"]), "pretrain", POOLS["africa_crop_type"]).hparams
    world = {"n": 1}
    monkeypatch.setattr(fit_config, "distributed_info", lambda: (0, world["n"], 0))  # the world FitConfig checks against

    def lr(**extra: Any) -> float:
        ctx = satmae.SatMAE().pretrain_context(_Pool(1), _ctx({**hp, **extra}))
        return FitConfig.from_hparams(ctx.hparams, "pretrain").lr

    one = lr()
    assert one == pytest.approx(1.5e-4 * 128 / 256)  # 7.5e-5 on one GPU, not SatMAE's 6e-4 for 1024
    assert lr(pretrain_micro_batch_size=32) == pytest.approx(one)  # splitting the global batch changes no lr
    world["n"] = 8
    assert lr() == pytest.approx(one)  # batch_size is the global batch: more GPUs, same batch, same lr
    assert lr(pretrain_batch_size=1024) == pytest.approx(6e-4)  # SatMAE's own batch gives its lr
    cfg = FitConfig.from_hparams(hp, "pretrain")
    assert cfg.steps == 500 and cfg.warmup == 25  # South Sudan: the rate now decays


def test_satmae_mini_and_smoke_keep_their_lr() -> None:
    for profile, expected in (("mini", 1.5e-3), ("smoke", 2e-3)):
        ctx = satmae.SatMAE().pretrain_context(_Pool(1), _ctx(satmae.PROFILES[profile], profile))
        assert FitConfig.from_hparams(ctx.hparams, "pretrain").lr == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- MoCo under accumulation
@pytest.mark.parametrize("entry", ["seco", "gssl", "caco"])
def test_key_encoder_follows_optimizer_steps_under_accumulation(entry: str) -> None:
    """With 4 micro-batches per optimizer step the key encoder is updated once per forward, but
    by m^(1/4), so after the 4 forwards of a step it equals one MoCo update with m (the query
    encoder does not change within a step)."""
    cls = registry.load_entry(entry)
    hp = {**cls.profiles["smoke"], "pretrain_steps": 400, "pretrain_batch_size": 16, "pretrain_micro_batch_size": 4,
          "momentum": 0.99, "queue_size": 64}
    baseline = cls()
    baseline.channels = {"radar": 3, "optical": 3}
    baseline.net = seco.build_encoder(baseline.channels, hp)
    model = baseline.build_pretrainer(_Pool(30), _ctx(hp, "smoke"))
    assert model.micro_batches == 4 and model.momentum == pytest.approx(0.95)
    torch.manual_seed(0)
    for p in model.encoder_q.parameters():
        p.data.add_(torch.randn_like(p))  # query != key, so the update is visible
    start = [p.detach().clone() for p in model.encoder_k.parameters()]
    for _ in range(4):
        model.update_key_encoder()
    for p_k, p_0, p_q in zip(model.encoder_k.parameters(), start, model.encoder_q.parameters(), strict=True):
        torch.testing.assert_close(p_k, 0.95 * p_0 + 0.05 * p_q, rtol=1e-5, atol=1e-6)


def test_moco_without_accumulation_keeps_its_momentum() -> None:
    hp = {**seco.PROFILES["smoke"], "pretrain_steps": 400, "pretrain_batch_size": 16, "momentum": 0.99, "queue_size": 64}
    used = moco_hparams(hp, 30)
    assert used["micro_batches"] == 1
    model = seco.SeCoPretrainer(seco.build_encoder({"radar": 3, "optical": 3}, hp), used)
    assert model.forward_momentum == model.momentum == pytest.approx(0.95)


def test_caco_epoch_clock_counts_optimizer_steps_across_a_resume_with_other_micro_batches() -> None:
    """micro_batch_size is a runtime setting (a run may resume with another): CaCo's epoch ends
    must fall on the same optimizer steps whatever the number of forwards per step before and
    after the resume (they fell one epoch early here when the clock counted forwards)."""
    from baselines.caco import CaCoPretrainer

    def run(model: CaCoPretrainer, steps: range) -> list[int]:
        ends: list[int] = []
        for step in steps:  # 1-based optimizer steps
            model.end_of_epoch = lambda step=step: ends.append(step)  # type: ignore[method-assign]
            for _ in range(model.micro_batches):
                model._advance_clock()
        return ends

    hp = dict(seco.PROFILES["smoke"])
    ids = [str(i) for i in range(4)]
    enc = seco.build_encoder({"radar": 3, "optical": 3}, hp)
    whole = CaCoPretrainer(enc, {**hp, "micro_batches": 1}, ids, epoch_steps=3)
    assert run(whole, range(1, 11)) == [4, 7, 10]
    before = CaCoPretrainer(enc, {**hp, "micro_batches": 2}, ids, epoch_steps=3)
    ends = run(before, range(1, 6))
    after = CaCoPretrainer(enc, {**hp, "micro_batches": 1}, ids, epoch_steps=3)
    after.load_state_dict(before.state_dict())
    assert ends + run(after, range(6, 11)) == [4, 7, 10]
