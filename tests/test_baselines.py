"""The S4 paper's baselines (SatMAE, SeCo, GSSL, CaCo, MMF): building blocks and smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.caco import CaCoPretrainer, caco_negatives, judge_change, season_windows
from baselines.gssl import geo_classes, scan_locations
from baselines.mmf import reconstruction_target
from baselines.satmae import TemporalMAE, position_code, random_masking, temporal_code
from baselines.seco import PROFILES as SECO_PROFILES
from baselines.seco import build_encoder
from baselines.ssl_common import (
    KeyQueue,
    color_augment,
    full_augment,
    make_momentum_copy,
    momentum_update,
    sample_dates,
)
from baselines.temporal_backbone import ConvLSTM, DateEncoder, TemporalSegmenter
from benchmark import runner
from benchmark.check_entry import check_entry
from benchmark.collate import sits_collate
from benchmark.contracts import RunContext
from benchmark.registry import load_task


@pytest.fixture(autouse=True)
def _one_thread():
    """Smoke-sized models gain nothing from intra-op threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ENTRIES = {
    "satmae": "baselines.satmae:SatMAE",
    "seco": "baselines.seco:SeCo",
    "gssl": "baselines.gssl:GSSL",
    "caco": "baselines.caco:CaCo",
    "mmf": "baselines.mmf:MMF",
}


# --------------------------------------------------------------------------- temporal backbone
def _pad_series(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros((t - x.shape[0], *x.shape[1:]))])


def test_convlstm_state_is_the_last_valid_dates() -> None:
    torch.manual_seed(0)
    lstm = ConvLSTM(3, 5)
    x = torch.randn(1, 4, 3, 6, 6)
    alone = lstm(x, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([x, 100 * torch.randn(1, 3, 3, 6, 6)], 1)  # garbage on padded dates
    end_pad = lstm(padded, torch.tensor([[True] * 4 + [False] * 3]))
    torch.testing.assert_close(end_pad, alone)
    holes = torch.cat([x[:, :2], 50 * torch.randn(1, 2, 3, 6, 6), x[:, 2:]], 1)
    torch.testing.assert_close(lstm(holes, torch.tensor([[True, True, False, False, True, True]])), alone)
    # a batch mixing lengths gives each sample its own result
    other = torch.randn(1, 7, 3, 6, 6)
    batch = torch.cat([padded, other])
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    out = lstm(batch, mask)
    torch.testing.assert_close(out[:1], alone)
    torch.testing.assert_close(out[1:], lstm(other, torch.ones(1, 7, dtype=torch.bool)))


def test_temporal_segmenter_padding_does_not_change_a_sample() -> None:
    torch.manual_seed(0)
    seg = TemporalSegmenter(DateEncoder({"radar": 3, "optical": 4}, [4, 8, 8], stem_stride=1), num_classes=5, hidden=6)
    seg.train()
    seg(torch.randn(3, 4, 3, 13, 11), torch.ones(3, 4, dtype=torch.bool), None, "radar")  # non-trivial BN statistics
    seg.eval()
    a = {"radar": torch.randn(3, 3, 13, 11), "radar_dates": torch.tensor([1.0, 5, 9]), "id": "a"}
    b = {"radar": torch.randn(6, 3, 13, 11), "radar_dates": torch.arange(6.0), "id": "b"}
    batch = sits_collate([a, b])
    with torch.no_grad():
        both = seg(batch["radar"], batch["radar_mask"], batch["radar_dates"], "radar")
        alone = seg(a["radar"][None], torch.ones(1, 3, dtype=torch.bool), None, "radar")
    assert both.shape == (2, 5, 13, 11)
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=1e-4)


def test_encoder_backward_at_64_px() -> None:
    """Regression: a 1 × 1 stride-2 channels-last conv corrupted the heap in backward at ≥ 64 px."""
    enc = DateEncoder({"radar": 3}, [4, 8, 8])
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    enc.embed(x, "radar").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- MoCo pieces
def test_key_queue_fifo_and_masking() -> None:
    q = KeyQueue(size=4, dim=2)
    keys = torch.nn.functional.normalize(torch.randn(3, 2), dim=1)
    q.push(keys, torch.tensor([10, 11, 12]))
    assert q.ids.tolist() == [10, 11, 12, -1] and int(q.ptr) == 3
    q.push(keys[:2], torch.tensor([13, 14]))  # wraps around
    assert q.ids.tolist() == [14, 11, 12, 13] and int(q.ptr) == 1
    logits = q.negative_logits(keys[:1], torch.tensor([11]))
    assert torch.isinf(logits[0, 1]) and torch.isfinite(logits[0, [0, 2, 3]]).all()
    empty = KeyQueue(size=3, dim=2).negative_logits(keys[:1], torch.tensor([0]))
    assert torch.isinf(empty).all()  # unfilled slots are never negatives


def test_momentum_update_rule_and_frozen_copy() -> None:
    online = torch.nn.Linear(3, 2)
    target = make_momentum_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    before = target.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    momentum_update(online, target, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight)


def test_sample_dates_respects_mask_and_distinctness() -> None:
    torch.manual_seed(0)
    allowed = torch.tensor([[True, True, True, False, False], [False, True, False, True, True]])
    for _ in range(20):
        idx = sample_dates(allowed, 3, replace=False)
        assert allowed.gather(1, idx).all()
        assert all(len(set(row)) == 3 for row in idx.tolist())
        assert allowed.gather(1, sample_dates(allowed, 4, replace=True)).all()


def test_augmentations_keep_shape_and_change_views() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, 16, 16)
    y = full_augment(x, {"crop_scale": [0.2, 1.0], "blur_sigma": [0.1, 2.0]})
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.allclose(x, y)
    assert color_augment(x, p_jitter=0, p_gray=0, p_blur=0).equal(x)


def test_seco_step_updates_key_encoder_by_momentum() -> None:
    from baselines.seco import SeCoPretrainer

    torch.manual_seed(0)
    hp = dict(SECO_PROFILES["smoke"])
    model = SeCoPretrainer(build_encoder({"radar": 3, "optical": 3}, hp), hp)
    batch = sits_collate([{"id": str(i), **{m: torch.randn(5, 3, 16, 16) for m in ("radar", "optical")},
                           **{f"{m}_dates": torch.arange(5.0) * 10 for m in ("radar", "optical")}} for i in range(3)])
    loss, _ = model(batch)
    loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert model.encoder_q.stems["radar"][0].weight.grad is not None
    assert model.queues["radar"][0].ids.tolist()[:3] == [0, 1, 2]  # keys enqueued with their location


# --------------------------------------------------------------------------- CaCo
def test_caco_mixture_flags_the_high_ratio_component() -> None:
    rng = np.random.default_rng(0)
    ratio = torch.tensor(np.concatenate([rng.normal(1.0, 0.05, 30), rng.normal(3.0, 0.1, 10), [0.0, 0.0]]), dtype=torch.float32)
    seen = torch.ones(42, dtype=torch.bool)
    seen[-2:] = False
    changed = judge_change(ratio, seen)
    assert changed[:30].eq(0).all() and changed[30:40].eq(1).all() and changed[40:].eq(-1).all()
    assert judge_change(ratio, torch.zeros(42, dtype=torch.bool)).eq(-1).all()  # nothing seen, nothing judged


def test_caco_long_term_counterpart_is_negative_only_if_changed() -> None:
    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)  # rows: loc0 A, loc0 B, loc1 A, loc1 B
    logits = caco_negatives(z, z, torch.tensor([True, True, False, False]))
    finite = torch.isfinite(logits)
    assert finite[0, 1] and finite[1, 0]  # changed: own counterpart is a negative
    assert not finite[2, 3] and not finite[3, 2]  # unchanged: masked
    assert finite[0, 3] and finite[2, 1]  # other locations' other window: negatives
    assert not finite[0, 0] and not finite[0, 2]  # same window: not in this block


def test_caco_judges_change_after_each_epoch_and_windows_split_the_season() -> None:
    early, late = season_windows(torch.tensor([[True] * 5 + [False], [True] * 6]))
    assert early[0].tolist() == [True, True, True, False, False, False] and late[1].tolist() == [False] * 3 + [True] * 3
    torch.manual_seed(0)
    hp = dict(SECO_PROFILES["smoke"])
    ids = [str(i) for i in range(6)]
    model = CaCoPretrainer(build_encoder({"radar": 3, "optical": 3}, hp), hp, ids, epoch_steps=2)
    samples = [{"id": i, **{m: torch.randn(6, 3, 12, 12) for m in ("radar", "optical")},
                **{f"{m}_dates": torch.arange(6.0) * 30 for m in ("radar", "optical")}} for i in ids]
    calls = []
    original = model.end_of_epoch
    model.end_of_epoch = lambda: (calls.append(int(model.steps)), original())[1]  # type: ignore[method-assign]
    for start in (0, 3, 0):  # three steps of 3 locations; epoch = 2 steps
        model(sits_collate(samples[start:start + 3]))
    assert calls == [2]
    assert model.seen.all()
    assert set(model.changed.unique().tolist()) <= {0, 1}  # judged once every entry was seen


# --------------------------------------------------------------------------- GSSL
def test_geo_classes_from_coordinates_and_fallback() -> None:
    ids = [str(i) for i in range(10)]
    coords = np.array([[0.0, 0.0]] * 5 + [[1000.0, 1000.0]] * 5) + np.random.default_rng(0).normal(0, 1, (10, 2))
    classes, source = geo_classes(ids, coords, 2, seed=0)
    assert source == "coords" and len({classes[i] for i in ids[:5]}) == 1 and classes["0"] != classes["9"]
    classes, source = geo_classes([str(1000 + i) for i in range(6)] + ["5000", "5001"], None, 2, seed=0)
    assert source == "patch-id" and classes["5000"] == classes["5001"] != classes["1000"]
    assert geo_classes(["a", "b"], None, 5, seed=0)[1] == "patch-id-rank"


# --------------------------------------------------------------------------- SatMAE
def test_satmae_masking_ratio_and_codes() -> None:
    keep, masked = random_masking(64, 3, 0.75)
    assert keep.shape == (3, 16) and masked.sum(1).tolist() == [48, 48, 48]
    assert all(len(set(r)) == 16 for r in keep.tolist()) and not masked.gather(1, keep).any()
    d = torch.tensor([10.0, 10.0 + 365.25, 40.0])
    code = temporal_code(d, 8)
    assert torch.allclose(code[0, 4:], code[1, 4:], atol=1e-5)  # same month position, another year
    assert not torch.allclose(code[0, :4], code[1, :4])
    assert not torch.allclose(code[0, 4:], code[2, 4:])
    pos = position_code(torch.tensor([[0.0, 100.0]]), 2, 3, dim=16, time_dim=6)
    assert pos.shape == (1, 2, 6, 16)
    torch.testing.assert_close(pos[0, 0, :, :10], pos[0, 1, :, :10])  # spatial part: same for every frame
    torch.testing.assert_close(pos[0, 0, 0, 10:], pos[0, 0, 5, 10:])  # temporal part: same for every patch
    assert not torch.allclose(pos[0, 0, 0, 10:], pos[0, 1, 0, 10:])


def test_satmae_loss_only_counts_masked_patches() -> None:
    torch.manual_seed(0)
    hp = {"patch": 4, "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0, "time_dim": 6, "dec_dim": 8, "dec_depth": 1,
          "dec_heads": 2, "dec_time_dim": 4}
    mae = TemporalMAE({"radar": 3}, hp)
    frames, dates = torch.randn(2, 3, 3, 8, 8), torch.tensor([[0.0, 30, 60], [5, 50, 90]])
    assert torch.isfinite(mae.reconstruction_loss(frames, dates, "radar", 0.75))
    assert mae.reconstruction_loss(frames, dates, "radar", 0.0) == 0  # nothing masked, nothing to learn


def test_satmae_segmenter_padding_does_not_change_a_sample() -> None:
    from baselines.satmae import PROFILES, SatMAESegmenter

    torch.manual_seed(0)
    hp = dict(PROFILES["smoke"])
    seg = SatMAESegmenter(TemporalMAE({"radar": 3}, hp), 4, hp).eval()
    a = {"radar": torch.randn(5, 3, 8, 8), "radar_dates": torch.tensor([1.0, 9, 20, 33, 41]), "id": "a"}
    b = {"radar": torch.randn(7, 3, 8, 8), "radar_dates": torch.arange(7.0) * 12, "id": "b"}
    batch = sits_collate([a, b])
    with torch.no_grad():
        both = seg(batch["radar"], batch["radar_mask"], batch["radar_dates"], "radar")
        alone = seg(a["radar"][None], torch.ones(1, 5, dtype=torch.bool), a["radar_dates"][None], "radar")
    assert both.shape == (2, 4, 8, 8) and torch.isfinite(both).all()
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- MMF
def test_mmf_target_is_the_other_modality_on_the_input_dates() -> None:
    opt = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 2, 2, 2).clone()  # value = optical date index
    batch = {
        "radar": torch.zeros(1, 3, 3, 2, 2), "radar_dates": torch.tensor([[9.0, 31.0, 0.0]]),
        "radar_mask": torch.tensor([[True, True, False]]),
        "optical": opt, "optical_dates": torch.tensor([[0.0, 10.0, 20.0, 0.0]]),
        "optical_mask": torch.tensor([[True, True, True, False]]),
    }
    target = reconstruction_target(batch, "radar", "optical")
    assert target.shape == (1, 3, 2, 2, 2)
    # day 9 → optical day 10 (index 1); day 31 → day 20 (index 2; the padded index 3 is never used); padded date → 0
    assert target[0, :, 0, 0, 0].tolist() == [1.0, 2.0, 0.0]


# --------------------------------------------------------------------------- entries end to end
@pytest.mark.parametrize("name", list(ENTRIES))
def test_check_entry(name: str) -> None:
    report = check_entry(ENTRIES[name])
    assert report.ok, report.message
    assert report.entry == name and report.parameters and report.parameters > 0


@pytest.fixture(scope="module")
def pastis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pastis-data")


@pytest.mark.parametrize("name,cell", [("satmae", "optical-10"), ("seco", "radar-10"), ("gssl", "optical-10"),
                                       ("caco", "radar-10"), ("mmf", "optical-10")])
def test_baseline_on_embedded_pastis_r_at_smoke(name: str, cell: str, pastis_root: Path, tmp_path: Path) -> None:
    summaries = runner.run("pastis_r", [ENTRIES[name]], profile="smoke", data_root=pastis_root, results_dir=tmp_path,
                           cells=[cell], show_progress=False, device="cpu")
    rec = json.loads(summaries[0].path.read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert 0 <= rec["metrics"]["miou"]["estimate"] <= 1
    assert rec["extra"]["fit_log"]["pretrain"]["steps"] == 3 and rec["extra"]["fit_log"]["finetune"]["steps"] == 4


def test_gssl_geo_classes_use_pastis_footprints(pastis_root: Path) -> None:
    task = load_task("pastis_r")
    data, _ = task.resolve_data(pastis_root, "smoke")
    cell = next(c for c in task.spec.cells if c.name == "radar-10")
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams={}, checkpoint_dir=pastis_root)
    view = task.unlabeled(data, cell, ctx)
    ids, coords = scan_locations(view)
    assert coords is not None and coords.shape == (len(ids), 2)
    assert 6e5 <= coords[:, 0].min() and coords[:, 1].min() >= 6.4e6  # Lambert-93 metres of the embedded footprints
    classes, source = geo_classes(ids, coords, 4, seed=0)
    assert source == "coords" and len(set(classes.values())) == 4
