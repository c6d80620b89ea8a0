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

from baselines.caco import CaCoPretrainer
from baselines.seco import PROFILES as SECO_PROFILES
from baselines.seco import build_encoder
from baselines.ssl_common import (
    FRAME_INDEX,
    LOCATION_ID,
    FrameIndexCollate,
    IdTensorsCollate,
    batch_id_tensor,
    location_ids,
)
from baselines.temporal_backbone import ConvLSTM, DateEncoder, encode_frames, valid_frame_index
from benchmark import mock, registry
from benchmark.collate import sits_collate
from benchmark.contracts import RunContext, profile_hparams
from benchmark.guard import without
from benchmark.protocols import reconstruction, segmentation
from benchmark.sits import ALIGNED_LENGTH, AlignedLengthCollate, align_modalities, aligned_length
from reference_models.motif_fm.slots import (
    SLOT_LAYOUT,
    SlotLayoutCollate,
    availability,
    pack,
    swath_extent,
)

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
    # only the last step logs; MoTiF samples with 2 Euler steps (each step runs the same ops as the 24th)
    hparams = {**profile_hparams(cls, "smoke"), "log_every": 10**6, "sampling_steps": 2}
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


# --------------------------------------------------------------------------- same maths as before
def test_host_frame_index_encodes_exactly_what_mask_indexing_did() -> None:
    """Fixed gather + index_copy with the host index == the old ``encoder(x[mask])`` scattered back,
    in values and gradients (BatchNorm in training mode sees the same valid frames)."""
    torch.manual_seed(0)
    encoder = DateEncoder({"radar": 3}, [4, 8], stem_stride=1).train()
    x = torch.randn(3, 5, 3, 8, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    old = []
    for f in encoder(x[mask], "radar"):
        full = f.new_zeros((3, 5, *f.shape[1:]))
        full[mask] = f
        old.append(full)
    grad_old = torch.autograd.grad(sum((o * o).sum() for o in old), x)[0]
    index = valid_frame_index(mask)
    assert index.tolist() == [0, 1, 2, 5, 7, 8, 9, 12]
    new = encode_frames(encoder, x, mask, "radar", index)
    grad_new = torch.autograd.grad(sum((n * n).sum() for n in new), x)[0]
    for o, n in zip(old, new, strict=True):
        torch.testing.assert_close(n, o, rtol=0, atol=0)
    torch.testing.assert_close(grad_new, grad_old, rtol=0, atol=0)
    batch = FrameIndexCollate(None, "radar")([{"radar_mask": m} for m in mask])
    assert torch.equal(batch[FRAME_INDEX], index)


def test_convlstm_computes_a_date_no_sample_has_and_discards_it() -> None:
    """The old loop skipped such a date after asking the device; the result must not change."""
    torch.manual_seed(0)
    lstm = ConvLSTM(3, 4)
    x = torch.randn(2, 3, 3, 5, 5)
    hole = torch.cat([x[:, :1], 1e3 * torch.randn(2, 1, 3, 5, 5), x[:, 1:]], 1)
    mask = torch.tensor([[True, False, True, True], [True, False, True, False]])
    expected = lstm(x, mask[:, [0, 2, 3]])
    torch.testing.assert_close(lstm(hole, mask), expected, rtol=0, atol=0)


def test_aligned_length_from_the_collate_equals_the_device_read() -> None:
    torch.manual_seed(0)
    samples = []
    for n_radar, n_optical in ((4, 2), (3, 5), (1, 1)):
        samples.append({"radar": torch.randn(n_radar, 2, 4, 4), "optical": torch.randn(n_optical, 3, 4, 4),
                        "radar_dates": torch.arange(n_radar) * 11.0, "optical_dates": torch.arange(n_optical) * 7.0})
    plain = sits_collate(samples)
    with_length = AlignedLengthCollate(sits_collate)(samples)
    assert with_length[ALIGNED_LENGTH] == aligned_length(plain) == 3  # max over samples of min(4, 2), min(3, 5), min(1, 1)
    for got, want in zip(align_modalities(with_length), align_modalities(plain), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_slot_layout_gives_the_extents_the_device_reads_gave() -> None:
    task = mock.MockReconstructionTask()
    data, _ = task.resolve_data(None, "smoke")
    cell = task.spec.cells[0]
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams={}, checkpoint_dir=Path("."))
    items = [task.windows(data, "test", cell, ctx)[i] for i in range(4)]
    batch = SlotLayoutCollate(task.collate)(items)
    plain = {k: v for k, v in batch.items() if k != SLOT_LAYOUT}
    targets = [next(k for k, s in plain["sources"].items() if s["avail"][i]) for i in range(4)]
    fast, slow = pack(batch, targets, 4), pack(plain, targets, 4)
    assert fast.extents is not None and slow.extents is None and fast.size == slow.size
    assert availability(batch) == availability(plain)
    for i in range(4):
        a, b = fast.select(i), slow.select(i)
        assert [v.shape for v in a.values] == [v.shape for v in b.values]
        for va, vb in zip(a.values + a.coords, b.values + b.coords, strict=True):
            torch.testing.assert_close(va, vb, rtol=0, atol=0, equal_nan=True)
    swath = torch.full((2, 6, 7), float("nan"))
    swath[:, :3, :5] = 1.0
    assert swath_extent(swath) == (3, 5) and swath_extent(torch.full((2, 4, 4), float("nan"))) == (1, 1)


def test_caco_epoch_counter_needs_no_device_read_and_survives_a_reload() -> None:
    hp = dict(SECO_PROFILES["smoke"])
    ids = [str(i) for i in range(4)]
    model = CaCoPretrainer(build_encoder({"radar": 3, "optical": 3}, hp), hp, ids, epoch_steps=2)
    model.steps.fill_(5)
    again = CaCoPretrainer(build_encoder({"radar": 3, "optical": 3}, hp), hp, ids, epoch_steps=2)
    assert again.host_steps == 0
    again.load_state_dict(model.state_dict())
    assert again.host_steps == 5


def test_id_tensors_from_the_collate_equal_the_ones_built_in_forward() -> None:
    items = [{"id": i, "radar": torch.zeros(1)} for i in ("17", "tile-b", "3")]
    table = {"17": 4, "tile-b": 1, "3": 0}
    batch = IdTensorsCollate(None, (("row", table, None), ("cls", {"17": 2}, 0)))(items)
    assert torch.equal(batch[LOCATION_ID], location_ids(["17", "tile-b", "3"]))
    assert batch["row"].tolist() == [4, 1, 0] and batch["cls"].tolist() == [2, 0, 0]
    plain = {"id": ["17", "tile-b", "3"]}
    assert torch.equal(batch_id_tensor(plain, "row", torch.device("cpu"), table), batch["row"])
    assert torch.equal(batch_id_tensor(plain, LOCATION_ID, torch.device("cpu")), batch[LOCATION_ID])
    with pytest.raises(KeyError, match="'tile-b' is not one of the pre-training set's ids"):
        IdTensorsCollate(None, (("row", {"17": 0, "3": 1}, None),))(items)
