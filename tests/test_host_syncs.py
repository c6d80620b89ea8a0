"""No host synchronisation in any entry's training step or prediction (issue 13).

On a GPU, an op whose result the host must see waits for every queued kernel: the CPU stops
feeding the device until the stream drains. These are the ops that do so, as the profiler names
them (each is counted, on CPU, in the ranges where it would stall a GPU):

- ``aten::_local_scalar_dense`` / ``aten::item`` / ``aten::is_nonzero``: ``.item()``, ``float(t)``,
  ``int(t)``, ``bool(t)`` and ``if t:`` -- one value copied to the host;
- ``aten::nonzero``, ``aten::masked_select``, ``aten::unique*``, ``aten::bincount``: outputs whose
  size depends on the data (``x[mask]`` calls ``nonzero``), so the host must learn the size;
- ``aten::equal``: returns a Python bool.

``aten::nonzero_static`` (fixed size) does not wait and is not counted. What a CPU profile cannot
show: device-to-host copies (``.cpu()``, ``.tolist()``, ``.numpy()`` of a device tensor) look like
any host copy; they were removed by review. Conversely it counts reads of *host* tensors, which
cost nothing on a GPU; code that reads host tensors on purpose (the batch before it moves, the
once-per-epoch CaCo mixture fit by scikit-learn) marks it with a ``host.*`` profiler range, and
``benchmark.training.fit`` marks its own logging reads ``fit.log`` (every ``log_every`` steps).
The optimizer step (``Optimizer.step#...`` ranges) is not counted either: on a CPU, non-fused
AdamW reads its per-parameter step counter, a host tensor there; on CUDA ``fit`` builds fused
AdamW, whose counters live on the device and which reads nothing back.

Training: the entry's real stages through the harness's protocol (``benchmark.protocols``) on the
mock task of its family at ``smoke``, with ``log_every`` larger than the run so only the last step
logs; counted inside ``fit.step`` minus ``fit.log`` and ``host.*``. Prediction: one test batch
through ``predict`` / ``sample``, minus ``host.*``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmark import mock, registry
from benchmark.contracts import RunContext, profile_hparams
from benchmark.guard import without
from benchmark.protocols import reconstruction, segmentation

SYNC_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::masked_select",
    "aten::unique", "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
    "aten::unique_dim_consecutive", "aten::bincount", "aten::equal",
})
STEP, LOG, PREDICT, HOST, OPTIMIZER = "fit.step", "fit.log", "test.predict", "host.", "Optimizer.step#"
# Entries that never train through ``fit``: nothing of theirs runs on a device per step.
EXEMPT = {
    "pixel_rf": "scikit-learn random forest on host arrays: no torch training step, no device",
    "closest_source": "not learned: copies the nearest available source, no training step",
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Smoke-sized models gain nothing from intra-op threads on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sync_counts(prof: profile, region: str) -> collections.Counter[str]:
    """Sync ops inside ``region`` ranges, minus those inside ``fit.log``, ``host.*`` and optimizer ranges."""
    events = prof.events()
    spans = collections.defaultdict(list)
    for e in events:
        if e.name in (region, LOG) or e.name.startswith((HOST, OPTIMIZER)):
            spans[region if e.name == region else "excluded"].append((e.time_range.start, e.time_range.end))

    def inside(e: Any, kind: str) -> bool:
        return any(a <= e.time_range.start and e.time_range.end <= b for a, b in spans[kind])

    assert spans[region], f"no {region!r} range was recorded"
    return collections.Counter(e.name for e in events if e.name in SYNC_OPS and inside(e, region) and not inside(e, "excluded"))


def _context(task: Any, data: Any, cell: Any, cls: type, tmp_path: Path) -> RunContext:
    hparams = {**profile_hparams(cls, "smoke"), "log_every": 10**6}  # only the last step logs
    info = dict(task.info(data, cell))
    return RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams=hparams, checkpoint_dir=tmp_path,
                      cell=dict(cell.params), task_info=info, collate=getattr(task, "collate", None), show_progress=False)


def _first_batch(task: Any, dataset: Any) -> dict[str, Any]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=task.collate)
    return next(iter(loader))


def trained_and_predicted(name: str, tmp_path: Path) -> tuple[profile, profile]:
    """Profiles of the entry's training (all stages) and of its prediction on one test batch."""
    cls = registry.load_entry(name)
    seg = cls.metadata.family == "segmentation"
    task = mock.MockSegmentationTask() if seg else mock.MockReconstructionTask()
    data, _ = task.resolve_data(None, "smoke")
    cell = task.spec.cells[0]
    ctx, entry = _context(task, data, cell, cls, tmp_path), cls()
    with profile(activities=[ProfilerActivity.CPU]) as training:
        (segmentation if seg else reconstruction).train(task, data, cell, entry, ctx)
    if seg:
        batch = without(_first_batch(task, task.labeled(data, "test", cell, ctx)), segmentation.HIDDEN)
        run = lambda: entry.predict(batch, cell.params["modality"])  # noqa: E731
    else:
        batch = without(task.inputs(_first_batch(task, task.windows(data, "test", cell, ctx))), reconstruction.HIDDEN)
        run = lambda: entry.sample(batch, 2, ctx.generator(offset=7))  # noqa: E731
    run()  # warm-up: lazy initialisation is not the per-batch path
    with profile(activities=[ProfilerActivity.CPU]) as predicting, record_function(PREDICT):
        run()
    return training, predicting


TRAINED = [n for n in registry.entry_names() if n not in EXEMPT]


def test_every_registered_entry_is_checked_or_exempt_with_a_reason() -> None:
    assert set(EXEMPT) <= set(registry.entry_names()), "an exemption names an entry that is not registered"
    assert all(reason for reason in EXEMPT.values()) and len(TRAINED) + len(EXEMPT) == len(registry.entry_names())


@pytest.mark.parametrize("name", TRAINED)
def test_no_host_sync_in_training_steps_or_prediction(name: str, tmp_path: Path) -> None:
    training, predicting = trained_and_predicted(name, tmp_path)
    assert sync_counts(training, STEP) == {}, f"{name}: host syncs inside training steps (not logging)"
    assert sync_counts(predicting, PREDICT) == {}, f"{name}: host syncs per prediction batch"


def test_the_counter_sees_the_syncs_it_is_meant_to() -> None:
    """The ops above really show up in a CPU profile (else every count would be 0 for nothing)."""
    x = torch.randn(8)
    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function(STEP):
        float(x.sum())
        _ = x[x > 0]
        bool(x.any())
        with record_function("host.read"):
            float(x.max())
        with record_function(LOG):
            x.mean().item()
    counts = sync_counts(prof, STEP)
    assert counts["aten::_local_scalar_dense"] == 2 and counts["aten::nonzero"] == 1 and counts["aten::is_nonzero"] == 1
