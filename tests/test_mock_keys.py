"""check-entry's mock tasks hand entries batches with the real tasks' keys, dtypes and ranks.

Real smoke batches are built from the embedded data (PASTIS-R, South Sudan, TC-PRIMED) exactly
as a job builds them: the views a stage gets, collated with the task's ``collate``, and the test
batches as the entry receives them (truth removed). ``docs/batch_formats.md`` documents them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark import registry
from benchmark.contracts import RunContext
from benchmark.guard import without
from benchmark.mock import OPTIONAL_SEGMENTATION_KEYS, MockReconstructionTask, MockSegmentationTask
from benchmark.protocols import reconstruction as rec_protocol
from benchmark.protocols import segmentation as seg_protocol


def _kind(value: Any) -> tuple:
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), value.ndim)
    if isinstance(value, list):
        return ("list", tuple(sorted({type(v).__name__ for v in value})))
    return (type(value).__name__,)


def signature(batch: dict[str, Any], loose: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Key -> (kind, dtype, rank); ``sources`` becomes ``sources.<field>`` (every source must agree).
    Keys in ``loose`` keep only their kind (list or tensor), not their element types."""
    out: dict[str, tuple] = {}
    for key, value in batch.items():
        if key == "sources":
            for name, fields in value.items():
                for f, v in fields.items():
                    sig = _kind(v)
                    assert out.setdefault(f"sources.{f}", sig) == sig, f"source {name!r}: {f} is {sig}, others {out[f'sources.{f}']}"
        else:
            out[key] = _kind(value)[:1] if key in loose else _kind(value)
    return out


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams={}, checkpoint_dir=tmp_path)


def _collate(task: Any, dataset: Any, n: int) -> dict[str, Any]:
    return task.collate([dataset[i] for i in range(min(n, len(dataset)))])


def segmentation_batches(task: Any, tmp_path: Path) -> dict[str, dict[str, Any]]:
    data, _ = task.resolve_data(None, "smoke")
    cell, ctx = task.spec.cells[0], _ctx(tmp_path)
    test = _collate(task, task.labeled(data, "test", cell, ctx), 3)
    return {"info": {k: None for k in task.info(data, cell)},
            "pretrain": _collate(task, task.unlabeled(data, cell, ctx), 3),
            "finetune": _collate(task, task.labeled(data, "train", cell, ctx), 3),
            "predict": without(test, seg_protocol.HIDDEN)}


def reconstruction_batches(task: Any, tmp_path: Path) -> dict[str, dict[str, Any]]:
    data, _ = task.resolve_data(None, "smoke")
    cell, ctx = task.spec.cells[0], _ctx(tmp_path)
    test = _collate(task, task.windows(data, "test", cell, ctx), 8)
    return {"info": {k: None for k in task.info(data, cell) if k not in cell.params},
            "fit train": _collate(task, task.windows(data, "train", cell, ctx), 8),
            "fit val": _collate(task, task.windows(data, "val", cell, ctx), 8),
            "test (harness)": test,
            "sample (entry)": without(task.inputs(test), rec_protocol.HIDDEN)}


@pytest.mark.parametrize("task_name", ["pastis_r", "africa_crop_type"])
def test_mock_segmentation_batches_have_the_real_keys(task_name: str, tmp_path: Path) -> None:
    real = segmentation_batches(registry.load_task(task_name), tmp_path)
    mock = segmentation_batches(MockSegmentationTask(), tmp_path)
    for stage in real:
        if stage == "info":
            assert set(mock[stage]) == set(real[stage]) - {"reference_date"}, stage  # South Sudan also names its date origin
            continue
        r, m = signature(real[stage]), signature(mock[stage])
        assert set(r) - set(m) <= set(OPTIONAL_SEGMENTATION_KEYS), f"{stage}: the mock lacks {sorted(set(r) - set(m))}"
        assert set(m) <= set(r), f"{stage}: the mock has keys {task_name} lacks: {sorted(set(m) - set(r))}"
        assert {k: r[k] for k in m} == m, stage
    assert "label" not in mock["pretrain"] and "label" not in mock["predict"] and "label" in mock["finetune"]


def test_mock_reconstruction_batches_have_the_real_keys(tmp_path: Path) -> None:
    real = reconstruction_batches(registry.load_task("tc_primed"), tmp_path)
    mock = reconstruction_batches(MockReconstructionTask(), tmp_path)
    assert set(mock["info"]) == set(real["info"])
    for stage in ("fit train", "fit val", "test (harness)", "sample (entry)"):
        # training windows: tc_primed names no target (None), the mock one (test entries use it)
        loose = ("target",) if stage.startswith("fit") else ()
        assert signature(mock[stage], loose) == signature(real[stage], loose), stage
    assert real["fit train"]["target"] == [None] * len(real["fit train"]["target"])
    entry_sees = mock["sample (entry)"]
    assert "target_size" in entry_sees and "target_mean" not in entry_sees and "target_std" not in entry_sees
    assert "target_size" not in mock["fit train"] and "target_mean" in mock["test (harness)"]
    for batch in (mock["test (harness)"], real["test (harness)"]):
        h, w = (int(x) for x in batch["target_size"])
        task = MockReconstructionTask() if batch is mock["test (harness)"] else registry.load_task("tc_primed")
        assert tuple(task.target(batch).shape[-2:]) == (h, w)
    # both hand out batches where some source is absent from some sample (NaN, avail False)
    assert not all(bool(s["avail"].all()) for s in mock["fit train"]["sources"].values())
    assert not all(bool(s["avail"].all()) for s in real["fit train"]["sources"].values())
