"""Confusion matrices and IoU against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, jaccard_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from benchmark.metrics import confusion_matrix, iou_from_confusion, miou_statistic, overall_accuracy

K = 7
IGNORE = 255


def _labels(seed: int = 0, shape=(6, 32, 32), absent=(2, 5), ignore: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random truth/prediction with classes ``absent`` missing from both, and some ignored pixels."""
    rng = np.random.default_rng(seed)
    classes = np.array([c for c in range(K) if c not in absent])
    target = rng.choice(classes, size=shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.choice(classes, size=shape))
    if ignore:
        target[rng.random(shape) < 0.1] = IGNORE
    return pred, target


def test_confusion_matches_sklearn_with_ignore_index() -> None:
    pred, target = _labels()
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), K, ignore_index=IGNORE)
    keep = target != IGNORE
    expected = sk_confusion_matrix(target[keep], pred[keep], labels=list(range(K)))
    assert cm.dtype == torch.int64 and cm.shape == (K, K)
    np.testing.assert_array_equal(cm.numpy(), expected)


def test_iou_matches_sklearn_jaccard_and_excludes_absent_classes() -> None:
    pred, target = _labels(seed=1)
    keep = target != IGNORE
    cm = confusion_matrix(pred, target, K, ignore_index=IGNORE)
    per_class, miou, present = iou_from_confusion(cm)
    labels = list(range(K))
    # sklearn scores an undefined class as 0 (zero_division); we use NaN and leave it out
    ref = jaccard_score(target[keep], pred[keep], average=None, labels=labels, zero_division=0)
    assert per_class.dtype == torch.float64
    is_present = np.array([c not in (2, 5) for c in labels])
    np.testing.assert_array_equal(present.numpy(), is_present)
    np.testing.assert_allclose(per_class.numpy()[is_present], ref[is_present], rtol=1e-12)
    assert np.isnan(per_class.numpy()[~is_present]).all()
    assert miou.item() == pytest.approx(ref[is_present].mean(), rel=1e-12)
    # classes predicted but never true have IoU 0 and count in the mean
    pred2 = pred.copy()
    pred2[0, 0, 0] = 2
    if target[0, 0, 0] == IGNORE:
        target[0, 0, 0] = 0
    per_class2, _, present2 = iou_from_confusion(confusion_matrix(pred2, target, K, ignore_index=IGNORE))
    assert bool(present2[2]) and per_class2[2].item() == 0.0


def test_overall_accuracy_matches_sklearn() -> None:
    pred, target = _labels(seed=2)
    keep = target != IGNORE
    cm = confusion_matrix(pred, target, K, ignore_index=IGNORE)
    assert overall_accuracy(cm).item() == pytest.approx(accuracy_score(target[keep], pred[keep]), rel=1e-12)
    assert np.isnan(overall_accuracy(np.zeros((K, K))))


def test_per_unit_confusion_sums_to_total() -> None:
    pred, target = _labels(seed=3)
    per_unit = confusion_matrix(pred, target, K, ignore_index=IGNORE, per_unit=True)
    assert per_unit.shape == (pred.shape[0], K, K)
    np.testing.assert_array_equal(per_unit.sum(0).numpy(), confusion_matrix(pred, target, K, ignore_index=IGNORE).numpy())
    for b in range(pred.shape[0]):
        np.testing.assert_array_equal(per_unit[b].numpy(), confusion_matrix(pred[b], target[b], K, ignore_index=IGNORE).numpy())


def test_batched_iou_equals_loop_and_numpy_in_numpy_out() -> None:
    pred, target = _labels(seed=4, shape=(12, 8, 8))
    cms = confusion_matrix(pred, target, K, ignore_index=IGNORE, per_unit=True).numpy()
    per_class, miou, present = iou_from_confusion(cms)
    assert isinstance(miou, np.ndarray) and miou.shape == (12,) and per_class.shape == (12, K)
    for b in range(12):
        pc_b, m_b, pr_b = iou_from_confusion(torch.from_numpy(cms[b]))
        np.testing.assert_allclose(per_class[b], pc_b.numpy(), equal_nan=True)
        assert miou[b] == pytest.approx(m_b.item())
        np.testing.assert_array_equal(present[b], pr_b.numpy())
    np.testing.assert_allclose(overall_accuracy(cms), [overall_accuracy(c) for c in cms])
    # the bootstrap statistic accepts [..., K, K] and flattened [..., K*K]
    stat = miou_statistic(K)
    np.testing.assert_allclose(stat(cms.astype(float)), miou)
    np.testing.assert_allclose(stat(cms.reshape(12, K * K).astype(float)), miou)


def test_class_subset_and_all_absent() -> None:
    cm = np.diag([5, 0, 3]).astype(float)
    cm[0, 2] = 1
    per_class, miou, present = iou_from_confusion(cm, classes=[0, 2])
    np.testing.assert_allclose(per_class, [5 / 6, np.nan, 3 / 4])
    assert miou == pytest.approx((5 / 6 + 3 / 4) / 2)
    _, miou_empty, present_empty = iou_from_confusion(np.zeros((2, 3, 3)))
    assert np.isnan(miou_empty).all() and not present_empty.any()


def test_ignore_index_inside_class_range() -> None:
    target = np.array([0, 1, 2, 0])
    pred = np.array([1, 1, 2, 0])
    cm = confusion_matrix(pred, target, 3, ignore_index=0)
    np.testing.assert_array_equal(cm.numpy(), [[0, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_invalid_labels_raise() -> None:
    pred = torch.zeros(2, 4, dtype=torch.long)
    target = torch.tensor([[0, 1, 9, 3], [-1, 255, 1, 9]])
    with pytest.raises(ValueError, match=r"target contains values.*\[-1, 9\]"):
        confusion_matrix(pred, target, 4, ignore_index=255)
    with pytest.raises(ValueError, match=r"255"):
        confusion_matrix(pred, torch.tensor([[0, 1, 2, 3], [255, 0, 0, 0]]), 4)
    ok_target = torch.tensor([[0, 1, 2, 3], [255, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"pred contains values.*\[4\]"):
        confusion_matrix(torch.tensor([[0, 1, 2, 4], [0, 0, 0, 0]]), ok_target, 4, ignore_index=255)
    # predictions at ignored pixels are not checked
    bad_pred_on_ignored = torch.tensor([[0, 1, 2, 3], [-7, 0, 0, 0]])
    assert confusion_matrix(bad_pred_on_ignored, ok_target, 4, ignore_index=255).sum() == 7
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(8,\)"):
        confusion_matrix(pred, torch.zeros(8, dtype=torch.long), 4)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(pred.float(), target, 4)


def test_uint8_inputs() -> None:
    pred, target = _labels(seed=5, ignore=False)
    cm8 = confusion_matrix(torch.from_numpy(pred.astype(np.uint8)), torch.from_numpy(target.astype(np.uint8)), K)
    np.testing.assert_array_equal(cm8.numpy(), confusion_matrix(pred, target, K).numpy())
