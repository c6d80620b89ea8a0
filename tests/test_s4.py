"""S4: backbone shapes, losses, pre-training reuse across cells, every variant end to end at smoke."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import runner
from benchmark.check_entry import check_entry
from reference_models.s4.losses import (
    ViewGeometry,
    gather_rows,
    masked_l1,
    paired_infonce,
    sample_pairs,
)
from reference_models.s4.unet3d import Segmenter, UNet3D, masked_time_mean

VARIANTS = ["s4", "s4_contrastive", "s4_reconstruction", "s4_single_modal", "unet3d_scratch"]


def test_unet3d_any_length_and_size() -> None:
    net = UNet3D({"radar": 3, "optical": 5}, base=2)
    for t, h, w in [(5, 13, 18), (1, 4, 4), (12, 32, 32)]:
        out = net(torch.randn(2, t, 5, h, w), "optical")
        assert out.shape == (2, 4, t, h, w)
    seg = Segmenter(net, num_classes=7)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    logits = seg(torch.randn(2, 3, 3, 8, 8), mask, "radar")
    assert logits.shape == (2, 7, 8, 8)


def test_masked_time_mean_ignores_padding() -> None:
    x = torch.zeros(1, 1, 3, 1, 1)
    x[0, 0, :, 0, 0] = torch.tensor([1.0, 3.0, 100.0])
    assert masked_time_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_infonce_prefers_aligned_features() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 8, 3, 4, 4)
    g = ViewGeometry.identity(2, 16, 16)
    pairs = sample_pairs(g, g, torch.ones(2, 3, dtype=torch.bool), 64)
    a = gather_rows(z, pairs.index_a)
    aligned = paired_infonce(a, gather_rows(z + 0.01 * torch.randn_like(z), pairs.index_b), pairs, 0.5, radius=0, time_radius=0)
    shuffled = paired_infonce(a, torch.randn_like(a), pairs, 0.5, radius=0, time_radius=0)
    assert aligned < shuffled
    assert shuffled == pytest.approx(torch.log(torch.tensor(64.0)).item(), rel=0.25)  # chance level ~ log N


def test_masked_l1_excludes_padded_dates() -> None:
    pred = torch.zeros(1, 2, 2, 3, 3)
    target = torch.ones(1, 2, 2, 3, 3)
    target[:, :, 1] = 50.0
    assert masked_l1(pred, target, torch.tensor([[True, False]])).item() == 1.0


@pytest.mark.parametrize("name", VARIANTS)
def test_check_entry_smoke(name: str) -> None:
    report = check_entry(name)
    assert report.ok, report.message
    assert report.parameters and report.parameters > 0


def test_pretraining_runs_once_and_is_reused_by_cells(tmp_path: Path) -> None:
    task = "tests.plugins.toy_entries:SegTask"
    summaries = runner.run(task, ["s4"], profile="smoke", results_dir=tmp_path, cells=["radar-100", "optical-50"], show_progress=False, device="cpu")
    logs = [json.loads(s.path.read_text())["extra"]["fit_log"] for s in summaries]
    assert logs[0]["pretrain"]["resumed_from"] == 0 and logs[0]["pretrain"]["steps"] == 3
    assert logs[1]["pretrain"]["resumed_from"] == 3  # the second cell reused the finished pre-training
    assert logs[1]["finetune"]["resumed_from"] == 0


def test_s4_on_embedded_pastis_r_at_smoke(tmp_path: Path) -> None:
    summaries = runner.run("pastis_r", ["s4"], profile="smoke", data_root=tmp_path / "data", results_dir=tmp_path / "r",
                           cells=["optical-10"], show_progress=False, device="cpu")
    rec = json.loads(summaries[0].path.read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert 0 <= rec["metrics"]["miou"]["estimate"] <= 1
    assert rec["throughput"]["flops_per_sample"] > 0


def test_probe_scores_separate_content_from_position() -> None:
    from reference_models.s4.probe import border_distance, probe_features

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 16, 16))
    labels[:, :2] = 9  # ignored pixels
    noise = rng.normal(size=(6, 4, 16, 16))
    content = noise.copy()
    content[:, 0] = labels * 2.0  # one feature carries the class
    position = noise.copy()
    position[:, 0] = np.minimum(border_distance(16, 16), 8)  # one feature carries the border distance
    c = probe_features(content, labels, 9, 1000, seed=0)
    p = probe_features(position, labels, 9, 1000, seed=0)
    assert c["crop_balanced_acc"] > 0.9 and c["border_r2"] < 0.1
    assert p["border_r2"] > 0.9 and p["crop_balanced_acc"] < 0.5


def test_probe_runs_on_embedded_pastis_r_at_smoke(tmp_path: Path) -> None:
    from reference_models.s4.probe import run_probe

    rows = run_probe("pastis_r", ["unet3d_scratch", "s4"], profile="smoke", data_root=tmp_path, n_patches=4, n_pixels=500)
    assert [(r["entry"], r["modality"]) for r in rows] == [(e, m) for e in ("unet3d_scratch", "s4") for m in ("radar", "optical")]
    assert all(0 <= r["crop_balanced_acc"] <= 1 and r["border_r2"] <= 1 for r in rows)
