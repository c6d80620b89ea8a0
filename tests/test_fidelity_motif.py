"""MoTiF's training loss weights every target equally (the authors' per-(source, k) mean), not
every pixel: a wide AMSR2 swath must not drown a narrow SSM/I one. And the profiles give their
warm-up as a fraction of the training steps."""

from __future__ import annotations

import pytest
import torch

from reference_models.motif_fm.entry import PROFILES, steps_from_epochs
from reference_models.motif_fm.flow import masked_mse


def _two_targets(small: int = 100, large: int = 10_000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[2, 1, 100, 100]: sample 0 observes ``small`` pixels with error 1, sample 1 ``large`` with error 2."""
    pred = torch.zeros(2, 1, 100, 100)
    target = torch.zeros(2, 1, 100, 100)
    target[0] += 1.0
    target[1] += 2.0
    valid = torch.zeros(2, 1, 100, 100, dtype=torch.bool)
    valid[0].view(-1)[:small] = True
    valid[1].view(-1)[:large] = True
    return pred, target, valid


def test_each_target_counts_equally_whatever_its_swath() -> None:
    pred, target, valid = _two_targets()
    loss = masked_mse(pred, target, valid)
    assert loss.item() == pytest.approx((1 + 4) / 2)  # 2.5
    pooled = (100 * 1 + 10_000 * 4) / 10_100  # ≈ 3.97: what pooling the batch's pixels gives
    assert abs(loss.item() - pooled) > 1


def test_a_target_without_observed_value_is_left_out() -> None:
    pred, target, valid = _two_targets()
    pred3 = torch.cat([pred, torch.full((1, 1, 100, 100), 50.0)])
    target3 = torch.cat([target, torch.zeros(1, 1, 100, 100)])
    valid3 = torch.cat([valid, torch.zeros(1, 1, 100, 100, dtype=torch.bool)])
    assert masked_mse(pred3, target3, valid3).item() == pytest.approx(2.5)
    # unobserved entries never matter, whatever the prediction there
    pred4 = torch.where(valid3, pred3, pred3 + 1e3)
    assert masked_mse(pred4, target3, valid3).item() == pytest.approx(2.5)


def test_per_slot_targets_and_slot_order() -> None:
    """[B, S, C, H, W] with target_dims=2: one target per (sample, slot); a permutation of the
    slots (or of the samples) leaves the loss unchanged."""
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 2, 8, 8, generator=g), torch.randn(3, 4, 2, 8, 8, generator=g)
    valid = torch.rand(3, 4, 2, 8, 8, generator=g) < torch.linspace(0.05, 0.9, 4)[None, :, None, None, None]
    valid[1, 2] = False  # a missing slot
    loss = masked_mse(pred, target, valid, target_dims=2)
    per = [((pred[b, s] - target[b, s])[valid[b, s]] ** 2).mean() for b in range(3) for s in range(4) if valid[b, s].any()]
    torch.testing.assert_close(loss, torch.stack(per).mean())
    perm_s, perm_b = torch.tensor([2, 0, 3, 1]), torch.tensor([1, 2, 0])
    torch.testing.assert_close(masked_mse(pred[:, perm_s], target[:, perm_s], valid[:, perm_s], target_dims=2), loss)
    torch.testing.assert_close(masked_mse(pred[perm_b], target[perm_b], valid[perm_b], target_dims=2), loss)
    # one target per sample ([B, C, H, W], the packed slot 0): sample order does not matter either
    flat = masked_mse(pred[:, 0], target[:, 0], valid[:, 0])
    torch.testing.assert_close(masked_mse(pred[perm_b, 0], target[perm_b, 0], valid[perm_b, 0]), flat)


def test_empty_batch_gives_a_zero_loss_with_a_finite_gradient() -> None:
    pred = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = masked_mse(pred, torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4, dtype=torch.bool))
    assert loss.grad_fn is not None and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and not pred.grad.any()


def test_gradient_weights_targets_not_pixels() -> None:
    """The small target's pixels get 100× the gradient of the large one's (1/100 vs 1/10 000 per pixel)."""
    pred, target, valid = _two_targets()
    pred.requires_grad_(True)
    masked_mse(pred, target, valid).backward()
    g0 = pred.grad[0].view(-1)[0].abs()
    g1 = pred.grad[1].view(-1)[0].abs()
    # d/dp of 0.5 * mean((p - 1)^2 over 100) = 0.5 * 2 * 1 / 100; for sample 1: 0.5 * 2 * 2 / 10 000
    assert g0.item() == pytest.approx(1e-2) and g1.item() == pytest.approx(2e-4)


def test_profiles_give_warmup_as_a_fraction() -> None:
    for name, hp in PROFILES.items():
        assert "warmup_steps" not in hp and "warmup_epochs" not in hp, name
    assert PROFILES["smoke"]["warmup_fraction"] == PROFILES["mini"]["warmup_fraction"] == 0.05
    assert PROFILES["paper"]["warmup_fraction"] == pytest.approx(2 / 150)
    hp = steps_from_epochs(PROFILES["paper"], n_train=1000)
    assert hp["steps"] == 150 * (1000 // 16) and "warmup_steps" not in hp


@pytest.mark.parametrize("n_train", [16, 1000, 12_345])
def test_paper_warmup_is_two_epochs_of_steps(n_train: int) -> None:
    from benchmark.training import FitConfig

    config = FitConfig.from_hparams(steps_from_epochs(PROFILES["paper"], n_train))
    per_epoch = n_train // PROFILES["paper"]["batch_size"]
    assert config.steps == 150 * per_epoch and config.warmup == 2 * per_epoch
    mini = FitConfig.from_hparams(steps_from_epochs(PROFILES["mini"], n_train))
    assert mini.warmup == 15  # floor(0.05 · 300)
