"""MoTiF building blocks: shifted windows rolled back, cross-source masking (same source and missing
sources), flow-matching loss on observed pixels only, the sampler's seeding, the profiles' sizes."""

from __future__ import annotations

import itertools

import pytest
import torch

from benchmark.mock import MockReconstructionTask
from reference_models.motif_fm import PROFILES, MotifDet, MotifFM
from reference_models.motif_fm.attention import (
    CrossSourceAttention,
    SourceWindowAttention,
    shift_amounts,
)
from reference_models.motif_fm.backbone import BackboneConfig, MotifBackbone
from reference_models.motif_fm.flow import masked_mse
from reference_models.motif_fm.slots import pack

SMOKE = PROFILES["smoke"]


def _expected_window_mates(h: int, w: int, ws: int, shifted: bool, p: tuple[int, int]) -> set[tuple[int, int]]:
    """Positions in the original grid that share p's (shifted) window and Swin region, computed
    directly from the definition: roll by −shift, cut windows, keep wrapped tokens apart."""
    sh, sw = shift_amounts(h, w, ws, shifted)
    hp, wp = h + (-h % ws), w + (-w % ws)

    def where(q: tuple[int, int]) -> tuple[int, int, bool, bool]:
        r, c = (q[0] - sh) % hp, (q[1] - sw) % wp
        return r // ws, c // ws, bool(sh) and r >= hp - sh, bool(sw) and c >= wp - sw

    return {q for q in itertools.product(range(h), range(w)) if where(q) == where(p)}


@pytest.mark.parametrize("shifted", [False, True])
def test_shifted_window_attention_is_rolled_back(shifted: bool) -> None:
    torch.manual_seed(0)
    h, w, ws = 10, 11, 4
    attn = SourceWindowAttention(dim=8, coords_dim=4, heads=2, window=ws).eval()
    x, coords = torch.randn(1, h, w, 8), torch.randn(1, h, w, 4)
    with torch.no_grad():
        base = attn(x, coords, shifted)
        for p in [(0, 0), (1, 9), (5, 5), (9, 10), (7, 2)]:
            x2 = x.clone()
            x2[0, p[0], p[1]] += 3.0
            changed = (attn(x2, coords, shifted) - base).abs().amax(-1)[0] > 1e-6
            got = {tuple(q) for q in changed.nonzero().tolist()}
            # a token always sees itself, and the perturbation reaches exactly its window mates *at
            # their own places*; without the roll-back it would show up shifted by half a window
            assert p in got
            assert got == _expected_window_mates(h, w, ws, shifted, p), (p, shifted)


def test_shifted_window_attention_is_translation_equivariant_by_whole_windows() -> None:
    """Moving the content by one window (within a grid padded with the same content) moves the output."""
    torch.manual_seed(1)
    ws = 4
    attn = SourceWindowAttention(dim=8, coords_dim=4, heads=2, window=ws).eval()
    x, coords = torch.randn(1, 16, 16, 8), torch.randn(1, 16, 16, 4)
    with torch.no_grad():
        a = attn(x, coords, True)
        b = attn(torch.roll(x, (ws, ws), (1, 2)), torch.roll(coords, (ws, ws), (1, 2)), True)
    # away from the border (where the wrap-around region differs) the outputs coincide after
    # moving back: content rows/cols 2..9 sit in the same shifted windows in both grids
    inner = slice(ws // 2, 16 - ws - ws // 2)
    torch.testing.assert_close(torch.roll(b, (-ws, -ws), (1, 2))[:, inner, inner], a[:, inner, inner])


def test_cross_source_attention_masks_same_source_and_missing_sources() -> None:
    torch.manual_seed(0)
    attn = CrossSourceAttention(dim=8, coords_dim=4, heads=2, window=2).eval()
    xs = [torch.randn(2, 4, 4, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 2, 2, 8)]
    cs = [torch.randn(*x.shape[:3], 4) for x in xs]
    ok = [torch.ones(x.shape[:3], dtype=torch.bool) for x in xs]
    present = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        base = attn(xs, cs, ok, present)
        # 1. a missing source (slot 2 of sample 0) changes nothing for the others
        xs2 = [x.clone() for x in xs]
        xs2[2][0] = 1e3 * torch.randn_like(xs2[2][0])
        out = attn(xs2, cs, ok, present)
        for s in (0, 1):
            torch.testing.assert_close(out[s][0], base[s][0])
        xs2[2][1] = 1e3 * torch.randn_like(xs2[2][1])
        assert not torch.allclose(attn(xs2, cs, ok, present)[0][1], base[0][1])  # sample 1 has slot 2: there it matters
        # 2. a source's own windows never enter its update: alone in its sample, a source gets a
        #    zero update (a finite zero, not NaN) although its own windows are there to attend to
        alone = attn(xs, cs, ok, torch.tensor([[True, False, False], [True, True, True]]))
        assert torch.isfinite(alone[0]).all() and alone[0][0].abs().max() == 0 and alone[0][1].abs().max() > 0
        # 3. windows outside the swath are not keys either
        ok_out = [o.clone() for o in ok]
        ok_out[1][1] = False  # sample 1: source 1 has no pixel inside its swath
        xs4 = [x.clone() for x in xs]
        xs4[1][1] = 1e3 * torch.randn_like(xs4[1][1])
        out = attn(xs4, cs, ok_out, present)
        ref = attn(xs, cs, ok_out, present)
        torch.testing.assert_close(out[0][1], ref[0][1])
        torch.testing.assert_close(out[2][1], ref[2][1])


def _mock_batch(n: int = 4):
    task = MockReconstructionTask(n_test=n)
    data, _ = task.resolve_data(None, "smoke")
    batch = task.collate(data["test"][:n])
    return task, batch


def _backbone(deterministic: bool = False) -> MotifBackbone:
    torch.manual_seed(0)
    cfg = BackboneConfig.from_hparams(SMOKE, channels=MockReconstructionTask.channels, characs_dim=3)
    net = MotifBackbone(cfg, mask_token=deterministic)
    for p in net.parameters():  # AdaLN-Zero starts as the identity: perturb so every path is live
        torch.nn.init.normal_(p, std=0.2) if p.ndim < 2 else None
    return net.eval()


@pytest.mark.parametrize("deterministic", [False, True])
def test_missing_slot_values_do_not_change_the_output(deterministic: bool) -> None:
    _, batch = _mock_batch()
    net = _backbone(deterministic)
    batch["sources"]["s2"]["avail"][1] = False  # sample 1 loses source s2: its slot 2 is missing
    slots = pack(batch, ["s0"] * 4, SMOKE["patch"])
    assert slots.present[1].tolist() == [True, True, False] and slots.present[0].all()
    x = torch.randn_like(torch.nan_to_num(slots.values[0]))
    t = torch.full((4,), 0.3)
    with torch.no_grad():
        base = net(net.context(slots), x, t)
        garbage = torch.randn_like(slots.values[2][1]) * 50
        slots.values[2][1] = garbage  # finite garbage in the missing slot
        slots.coords[2][1] = torch.randn_like(slots.coords[2][1]) * 30
        out = net(net.context(slots), x, t)
        torch.testing.assert_close(out[1], base[1], rtol=0, atol=1e-5)
        slots.present[1, 2] = True  # the same garbage, *not* masked: it leaks into the prediction
        leaked = net(net.context(slots), x, t)
    assert (leaked[1] - base[1]).abs().max() > 1e-3


def test_flow_matching_loss_ignores_unobserved_pixels() -> None:
    pred, target = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    valid = torch.rand(2, 2, 4, 4) > 0.5
    loss = masked_mse(pred, target, valid)
    pred2 = torch.where(valid, pred, pred + 100)
    assert torch.equal(masked_mse(pred2, target, valid), loss)
    torch.testing.assert_close(loss, torch.stack([((pred[i] - target[i])[valid[i]] ** 2).mean() for i in range(2)]).mean())


@pytest.mark.parametrize("cls", [MotifFM, MotifDet])
def test_sampler_shape_finite_and_seeded(cls) -> None:
    task, batch = _mock_batch()
    entry = cls()
    entry.build({"channels": task.channels, "characs_dim": 3}, SMOKE)
    seen = task.inputs(batch)
    target = task.target(batch)
    a = entry.sample(seen, 3, torch.Generator().manual_seed(5))
    b = entry.sample(seen, 3, torch.Generator().manual_seed(5))
    c = entry.sample(seen, 3, torch.Generator().manual_seed(6))
    assert a.shape == (3, *target.shape) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    if cls is MotifFM:
        assert not torch.allclose(a, c)  # another seed, other realizations
        assert not torch.allclose(a[0], a[1])  # realizations differ from each other
    else:
        assert torch.equal(a, c) and torch.equal(a[0], a[2])  # an ensemble of one, repeated


def test_sampling_does_not_depend_on_the_rest_of_the_batch() -> None:
    task, batch = _mock_batch()
    entry = MotifFM()
    entry.build({"channels": task.channels, "characs_dim": 3}, SMOKE)
    full = entry.sample(task.inputs(batch), 2, torch.Generator().manual_seed(0))
    seen = task.inputs(batch)
    seen["sources"]["s1"]["values"][2] = 7.0  # another sample's inputs change
    other = entry.sample(seen, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(other[:, [0, 1, 3]], full[:, [0, 1, 3]], rtol=0, atol=1e-6)


def test_profiles_are_data_with_the_paper_sizes() -> None:
    paper = PROFILES["paper"]
    assert (paper["values_dim"], paper["coords_dim"], paper["cond_dim"], paper["blocks"], paper["heads"]) == (512, 256, 512, 12, 8)
    assert (paper["patch"], paper["cross_window"], paper["swin_window"], paper["sampling_steps"]) == (4, 4, 8, 24)
    assert MotifFM.profiles is MotifDet.profiles  # the same backbone sizes for both variants
    for name in ("smoke", "mini", "paper"):
        cfg = BackboneConfig.from_hparams(PROFILES[name], channels=4, characs_dim=8)
        assert cfg.values_dim % cfg.heads == 0 and cfg.coords_dim % cfg.heads == 0


@pytest.mark.parametrize("deterministic", [False, True])
def test_activation_checkpointing_gives_the_same_outputs_and_gradients(deterministic: bool) -> None:
    """``activation_checkpointing`` recomputes each block in the backward pass: same loss, same
    gradients, and fewer tensors kept for the backward (counted with saved-tensor hooks)."""
    import dataclasses

    _, batch = _mock_batch()
    slots = pack(batch, ["s0"] * 4, SMOKE["patch"])
    x = torch.randn_like(torch.nan_to_num(slots.values[0]))
    t = torch.full((4,), 0.3)
    results = []
    for recompute in (False, True):
        net = _backbone(deterministic).train()
        net.cfg = dataclasses.replace(net.cfg, activation_checkpointing=recompute)
        saved: list[int] = []

        def keep(s: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(s.numel())
            return s

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda s: s):
            out = net(net.context(slots), x, t)
        loss = out.square().mean()
        loss.backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, sum(saved)))
    (out0, g0, kept0), (out1, g1, kept1) = results
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    assert g0.keys() == g1.keys() and len(g0) > 10
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6, msg=name)
    assert kept1 < 0.5 * kept0, (kept1, kept0)


def test_activation_checkpointing_is_read_from_the_profile() -> None:
    cfg = BackboneConfig.from_hparams({**SMOKE, "activation_checkpointing": True}, channels=3, characs_dim=3)
    assert cfg.activation_checkpointing and not BackboneConfig.from_hparams(SMOKE, channels=3, characs_dim=3).activation_checkpointing
