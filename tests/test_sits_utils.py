"""Shared SITS utilities: nearest-date alignment, subsampling, collate masks, nested label subsets."""

from __future__ import annotations

import pytest
import torch

from benchmark.collate import sits_collate
from benchmark.sits import align_batch, align_series, nearest_date_indices
from tasks.sits.splits import check_disjoint, label_subset
from tasks.sits.subsample import even_indices, subsample_sample


def test_nearest_date_indices() -> None:
    src = torch.tensor([0.0, 10.0, 20.0, 35.0])
    ref = torch.tensor([-5.0, 4.0, 5.0, 6.0, 27.0, 28.0, 100.0])
    assert nearest_date_indices(src, ref).tolist() == [0, 0, 0, 1, 2, 3, 3]  # tie at 5 goes to the earlier date
    series = torch.arange(4)[:, None] * 10
    assert align_series(series, src, ref)[:, 0].tolist() == [0, 0, 0, 10, 20, 30, 30]
    with pytest.raises(ValueError, match="sorted"):
        nearest_date_indices(torch.tensor([3.0, 1.0]), ref)


def test_align_batch_never_picks_padding() -> None:
    series = torch.arange(2 * 3).float().view(2, 3, 1)
    dates = torch.tensor([[0.0, 10.0, 0.0], [0.0, 10.0, 20.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    ref = torch.tensor([[1.0, 19.0], [1.0, 19.0]])
    out = align_batch(series, dates, mask, ref)
    assert out[..., 0].tolist() == [[0.0, 1.0], [3.0, 5.0]]


def test_even_subsampling_is_deterministic_and_bounded() -> None:
    assert even_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert even_indices(3, 5).tolist() == [0, 1, 2]
    s = {"radar": torch.randn(10, 2, 4, 4), "radar_dates": torch.arange(10.0)}
    out = subsample_sample(s, 4)
    assert out["radar"].shape[0] == 4 and out["radar_dates"].tolist() == [0, 3, 6, 9]


def test_collate_pads_time_and_masks() -> None:
    a = {"radar": torch.ones(3, 2, 4, 4), "radar_dates": torch.tensor([1.0, 2.0, 3.0]), "label": torch.zeros(4, 4, dtype=torch.long), "id": "a"}
    b = {"radar": torch.ones(5, 2, 4, 4), "radar_dates": torch.arange(5.0), "label": torch.ones(4, 4, dtype=torch.long), "id": "b"}
    batch = sits_collate([a, b])
    assert batch["radar"].shape == (2, 5, 2, 4, 4) and batch["radar_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch["radar"][0, 3:].abs().sum() == 0 and batch["id"] == ["a", "b"] and batch["label"].shape == (2, 4, 4)


def test_label_subsets_are_nested_and_seeded() -> None:
    ids = [str(i) for i in range(1000, 1100)]
    ten = label_subset(ids, 0.1, seed=0)
    fifty = label_subset(ids, 0.5, seed=0)
    assert len(ten) == 10 and set(ten) < set(fifty) and label_subset(ids, 1.0, 0) == sorted(ids)
    assert label_subset(list(reversed(ids)), 0.1, seed=0) == ten  # independent of order
    assert label_subset(ids, 0.1, seed=1) != ten
    with pytest.raises(ValueError):
        label_subset(ids, 0.0, 0)
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint({"train": ["1", "2"], "test": ["2"]})


def test_align_modalities_uses_the_shorter_series_per_sample() -> None:
    from benchmark.sits import align_modalities

    radar = torch.arange(4.0).view(1, 4, 1, 1, 1).repeat(2, 1, 1, 1, 1)
    optical = 10 + torch.arange(3.0).view(1, 3, 1, 1, 1).repeat(2, 1, 1, 1, 1)
    batch = {
        "radar": radar, "radar_dates": torch.tensor([[0.0, 10, 20, 30], [0.0, 10, 0, 0]]),
        "radar_mask": torch.tensor([[True] * 4, [True, True, False, False]]),
        "optical": optical, "optical_dates": torch.tensor([[1.0, 19, 29], [2.0, 8, 30]]),
        "optical_mask": torch.tensor([[True] * 3, [True] * 3]),
    }
    xr, xo, mask = align_modalities(batch)
    # sample 0: optical (3 dates) is the reference; radar resampled to its dates
    assert xr[0, :, 0, 0, 0].tolist() == [0.0, 2.0, 3.0] and xo[0, :, 0, 0, 0].tolist() == [10.0, 11.0, 12.0]
    # sample 1: radar (2 valid dates) is the reference; optical picks the nearest of 2, 8, 30
    assert mask[1].tolist() == [True, True, False] and xr[1, :2, 0, 0, 0].tolist() == [0.0, 1.0]
    assert xo[1, :2, 0, 0, 0].tolist() == [10.0, 11.0] and xo[1, 2].abs().sum() == 0


def test_random_crop_is_aligned_and_keeps_a_label() -> None:
    from tasks.sits.task import random_crop

    h = w = 16
    label = torch.full((h, w), -1)
    label[13, 2] = 3  # the only labelled pixel
    base = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    sample = {"radar": base.expand(4, 2, h, w).clone(), "optical": base.expand(3, 3, h, w).clone(),
              "radar_dates": torch.arange(4.0), "optical_dates": torch.arange(3.0), "label": label, "id": "7"}
    g = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(50):
        out = random_crop(sample, 8, ignore_index=-1, generator=g)
        assert out["radar"].shape == (4, 2, 8, 8) and out["optical"].shape == (3, 3, 8, 8) and out["label"].shape == (8, 8)
        assert (out["label"] == 3).sum() == 1  # every window holds the labelled pixel
        y, x = divmod(int(out["radar"][0, 0, 0, 0]), w)
        assert torch.equal(out["optical"][0, 0], base[0, 0, y:y + 8, x:x + 8])  # same window in every field
        assert torch.equal(out["radar_dates"], sample["radar_dates"]) and out["id"] == "7"
        corners.add((y, x))
    assert len(corners) > 5 and all(6 <= y <= 8 and x <= 2 for y, x in corners)
    unlabeled = {k: v for k, v in sample.items() if k != "label"}
    assert random_crop(unlabeled, 8, -1, g)["radar"].shape[-2:] == (8, 8)
    assert random_crop(sample, 32, -1, g) is sample  # smaller than the crop: unchanged
    with pytest.raises(ValueError, match="positive"):
        random_crop(sample, 0, -1, g)
    with pytest.raises(ValueError, match="one grid"):
        random_crop({**sample, "optical": sample["optical"][..., :8, :8]}, 4, -1, g)
