"""S4 follows its paper where the first wave did not (docs/fidelity.md): the contrastive loss acts
on encoder features, positives depend on content (not on tensor position), borders and padded
dates carry no mark, and the single-modal views differ geometrically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.collate import sits_collate
from benchmark.mock import MockSegmentationTask
from reference_models.s4 import entry as s4_entry
from reference_models.s4.entry import PROFILES, S4Pretrainer
from reference_models.s4.losses import (
    STRIDE,
    apply_geometry,
    false_negatives,
    random_geometry,
    sample_pairs,
)
from reference_models.s4.unet3d import UNet3D, fill_invalid_dates

CHANNELS = {"radar": 3, "optical": 3}


def _batch(b: int = 4) -> dict:
    task = MockSegmentationTask()
    data, _ = task.resolve_data(None, "smoke")
    return sits_collate(data["train"][:b])


def _pretrainer(variant: str = "s4", base: int = 2) -> S4Pretrainer:
    hp = {**PROFILES["smoke"], "base": base}
    single = variant == "s4_single_modal"
    return S4Pretrainer(UNet3D(CHANNELS, base), CHANNELS, hp, 1.0, 0.0 if single else 1.0, single)


def test_contrastive_loss_receives_encoder_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, ...]] = []
    original = s4_entry.gather_rows

    def spy(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(z.shape))
        return original(z, index)

    monkeypatch.setattr(s4_entry, "gather_rows", spy)
    torch.manual_seed(0)
    model = _pretrainer()
    batch = _batch()
    model(batch)
    t, h = batch["radar"].shape[1], batch["radar"].shape[3]
    crop = STRIDE * int(0.75 * h // STRIDE)
    # 16f channels at T/4 × crop/4 × crop/4: the bottleneck, not the full-resolution decoder (2f at T × H × W)
    assert seen and all(s[1:] == (16 * 2, -(-t // STRIDE), crop // STRIDE, crop // STRIDE) for s in seen)


def test_projection_runs_on_sampled_positions_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rows: list[int] = []
    model = _pretrainer()
    model.projection.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    torch.manual_seed(0)
    model(_batch())
    assert rows and max(rows) <= model.n_positions


def test_positives_show_the_same_place_at_different_tensor_positions() -> None:
    torch.manual_seed(0)
    b, t, h, w = 16, 8, 32, 32
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    x = torch.stack([yy, xx], 0)[None, None].expand(b, t, 2, h, w)  # each pixel carries its own (y, x)
    ga, gb = (random_geometry(b, h, w, 0.75, True, "cpu") for _ in range(2))
    va, vb = apply_geometry(x, ga), apply_geometry(x, gb)
    pairs = sample_pairs(ga, gb, torch.ones(b, t // STRIDE, dtype=torch.bool), 4096)
    ha = wa = ga.ch // STRIDE

    def cell_means(v: torch.Tensor) -> torch.Tensor:  # [B, T/4, 2, h/4, w/4] -> rows at flat [B, T/4, h, w]
        m = v.reshape(b, t // STRIDE, STRIDE, 2, ha, STRIDE, wa, STRIDE).mean((2, 5, 7))
        return m.permute(0, 1, 3, 4, 2).reshape(-1, 2)

    used = pairs.weight
    assert used.float().mean() > 0.3  # most sampled cells are seen by both views
    a, c = cell_means(va)[pairs.index_a[used]], cell_means(vb)[pairs.index_b[used]]
    assert torch.allclose(a, c)  # a positive pair is one place of the patch in both views
    expected = torch.stack([pairs.y[used], pairs.x[used]], 1).float() * STRIDE + (STRIDE - 1) / 2
    assert torch.allclose(a, expected)
    # ... but it sits at the same tensor position in both views only by chance (the old code: always)
    same_place_in_tensor = (pairs.index_a[used] == pairs.index_b[used]).float().mean()
    assert same_place_in_tensor < 0.25


def test_sampled_positions_are_shared_by_the_batch_and_exclude_the_neighbourhood() -> None:
    torch.manual_seed(0)
    b = 4
    ga, gb = (random_geometry(b, 32, 32, 0.75, True, "cpu") for _ in range(2))
    pairs = sample_pairs(ga, gb, torch.ones(b, 2, dtype=torch.bool), 256)
    cells_per_sample = 2 * 6 * 6
    local = (pairs.index_a % cells_per_sample).reshape(b, -1)
    assert (local == local[0]).all()  # every sample uses the same tensor positions: negatives at one's own
    blocked = false_negatives(pairs, radius=1, time_radius=1)
    i, j = blocked.nonzero()[0]
    assert pairs.sample[i] == pairs.sample[j] and (pairs.y[i] - pairs.y[j]).abs() <= 1 and (pairs.x[i] - pairs.x[j]).abs() <= 1
    assert not blocked.diagonal().any()
    assert not (blocked & (pairs.sample[:, None] != pairs.sample[None, :])).any()


def test_padded_dates_do_not_change_features_of_valid_dates() -> None:
    torch.manual_seed(0)
    net = UNet3D(CHANNELS, 2).eval()
    x = torch.randn(2, 7, 3, 12, 12)
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 3 + [False] * 4])
    garbage = x.clone()
    garbage[~mask] = 1e3 * torch.randn_like(garbage[~mask])
    zeros = x.masked_fill(~mask[:, :, None, None, None], 0.0)
    with torch.no_grad():
        a, g, z = (net(v, "radar", mask) for v in (x, garbage, zeros))
    for i, n in enumerate(mask.sum(1).tolist()):
        assert torch.allclose(a[i, :, :n], g[i, :, :n], atol=1e-5) and torch.allclose(a[i, :, :n], z[i, :, :n], atol=1e-5)


def test_borders_carry_no_mark() -> None:
    """A constant input gives a constant output: replicate padding, no transposed-conv edge taps."""
    torch.manual_seed(0)
    net = UNet3D(CHANNELS, 2).eval()
    with torch.no_grad():
        out = net(torch.full((1, 6, 3, 14, 10), 0.7), "optical")
    assert out.std((3, 4)).max() < 1e-5


def test_fill_invalid_dates_holds_the_previous_valid_date() -> None:
    x = torch.arange(5.0).view(1, 1, 5, 1, 1)
    valid = torch.tensor([[False, True, False, True, False]])
    assert fill_invalid_dates(x, valid).flatten().tolist() == [1.0, 1.0, 1.0, 3.0, 3.0]


def test_single_modal_views_differ_geometrically(monkeypatch: pytest.MonkeyPatch) -> None:
    geometries = []
    original = s4_entry.apply_geometry

    def spy(x: torch.Tensor, g):  # noqa: ANN001
        geometries.append(g)
        return original(x, g)

    monkeypatch.setattr(s4_entry, "apply_geometry", spy)
    torch.manual_seed(0)
    _pretrainer("s4_single_modal")(_batch(8))
    ga, gb = geometries[0], geometries[1]  # the two views of the radar series
    differs = (ga.oy != gb.oy) | (ga.ox != gb.ox) | (ga.fy != gb.fy) | (ga.fx != gb.fx)
    assert differs.float().mean() > 0.5


def test_single_modal_positives_only_on_dates_kept_in_both_views(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = iter(range(100))

    def disjoint(mask: torch.Tensor, p: float) -> torch.Tensor:  # view a keeps dates 0-3, view b dates 4-7
        first = next(calls) % 2 == 0
        keep = torch.zeros_like(mask)
        keep[:, :4] = first
        keep[:, 4:] = not first
        return keep & mask

    monkeypatch.setattr(s4_entry, "drop_dates", disjoint)
    captured = []
    original = s4_entry.sample_pairs
    monkeypatch.setattr(s4_entry, "sample_pairs", lambda ga, gb, valid, n: captured.append(valid) or original(ga, gb, valid, n))
    torch.manual_seed(0)
    batch = _batch()
    loss, _ = _pretrainer("s4_single_modal")(batch)
    assert captured and not any(v.any() for v in captured)  # no encoder date is kept by both views
    assert float(loss.detach()) == 0.0


@pytest.mark.parametrize("variant", ["s4", "s4_single_modal"])
def test_pretraining_step_backpropagates(variant: str) -> None:
    torch.manual_seed(0)
    model = _pretrainer(variant)
    loss, logs = model(_batch())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
    assert model.backbone.center[0][0].weight.grad.abs().sum() > 0


def test_probe_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reference_models.s4.probe import main

    assert main(["--task", "pastis_r", "--profile", "smoke", "--data-root", str(tmp_path), "--entry", "unet3d_scratch",
                 "--patches", "3", "--pixels", "300", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "pastis_r" and out["profile"] == "smoke"
    assert [(r["entry"], r["modality"]) for r in out["rows"]] == [("unet3d_scratch", "radar"), ("unet3d_scratch", "optical")]
    assert all({"crop_balanced_acc", "border_r2", "chance_acc"} <= set(r) for r in out["rows"])


@pytest.mark.parametrize("task", ["pastis_r", "africa_crop_type"])
def test_committed_probe_shows_no_position_shortcut(task: str) -> None:
    """The committed probe (results/<task>/mini/S4_PROBE.json, written by ``--format json``): no S4
    variant predicts the distance to the border more than 0.05 R² better than the random backbone."""
    path = Path(__file__).resolve().parents[1] / "results" / task / "mini" / "S4_PROBE.json"
    rows = json.loads(path.read_text())["rows"]
    base = {r["modality"]: r["border_r2"] for r in rows if r["entry"] == "unet3d_scratch"}
    variants = [r for r in rows if r["entry"] != "unet3d_scratch"]
    assert {r["entry"] for r in variants} == {"s4", "s4_contrastive", "s4_reconstruction", "s4_single_modal"}
    assert all(r["border_r2"] - base[r["modality"]] <= 0.05 for r in variants), variants


def test_crop_cells_are_whole_patch_cells_for_odd_sides() -> None:
    from reference_models.s4.losses import crop_size

    assert [crop_size(s, 0.75) for s in (2, 5, 13, 18, 32)] == [2, 4, 8, 12, 24]
    assert crop_size(13, 0.3) == 4 and crop_size(13, 1.0) == 12


def _spy_geometries(monkeypatch: pytest.MonkeyPatch) -> list:
    calls = []
    original = s4_entry.apply_geometry

    def spy(x: torch.Tensor, g):  # noqa: ANN001
        calls.append((x, g))
        return original(x, g)

    monkeypatch.setattr(s4_entry, "apply_geometry", spy)
    return calls


def test_each_modality_has_its_own_geometry_and_reconstructs_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_geometries(monkeypatch)
    indices = []
    original_gather = s4_entry.gather_rows
    monkeypatch.setattr(s4_entry, "gather_rows", lambda z, index: indices.append(index) or original_gather(z, index))
    torch.manual_seed(0)
    _pretrainer()(_batch(8))
    (xr, gr), (xo, go), (target_o, g3), (target_r, g4) = calls
    differs = (gr.oy != go.oy) | (gr.ox != go.ox) | (gr.fy != go.fy) | (gr.fx != go.fx)
    assert differs.float().mean() > 0.5 and gr.fy.any() and gr.fx.any() and not gr.fy.all()
    # radar→optical reconstructs the optical input seen through the radar view, and vice versa
    assert g3 is gr and target_o is xo and g4 is go and target_r is xr
    index_a, index_b = indices
    assert (index_a != index_b).float().mean() > 0.5  # view b is read at the mapped cells, not at view a's


def test_infonce_ignores_false_negatives_but_keeps_far_ones() -> None:
    from reference_models.s4.losses import PairedCells, paired_infonce

    torch.manual_seed(0)
    # one sample, three cells: (t, y, x) = (0, 0, 0), (1, 0, 1) [a neighbour], (3, 0, 0) [same place, 3 dates later]
    t, y, x = torch.tensor([0, 1, 3]), torch.tensor([0, 0, 0]), torch.tensor([0, 1, 0])
    p = PairedCells(torch.arange(3), torch.arange(3), torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long), t, y, x)
    a = torch.randn(3, 8)
    b = a.clone()
    b[1] = a[0]  # the neighbour looks exactly like the anchor (same parcel, next date)
    blocked = false_negatives(p, radius=1, time_radius=1)
    assert blocked[0, 1] and blocked[1, 0] and not blocked[0, 2] and not blocked[2, 0]
    with_exclusion = paired_infonce(a, b, p, 0.5, radius=1, time_radius=1)
    without = paired_infonce(a, b, p, 0.5, radius=-1, time_radius=-1)
    assert with_exclusion < without  # the look-alike neighbour is not pushed away as a negative


def test_projection_statistics_ignore_unusable_rows() -> None:
    torch.manual_seed(0)
    model = _pretrainer()
    head = model.projection.train()
    rows = torch.randn(20, model.backbone.encoder_dim)
    weight = torch.arange(20) < 12
    garbage = rows.clone()
    garbage[~weight] = 1e3 * torch.randn_like(garbage[~weight])
    assert torch.allclose(head(rows, weight)[weight], head(garbage, weight)[weight], atol=1e-5)
