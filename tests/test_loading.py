"""Data loading (benchmark.loading): DataLoader settings per device and their overrides, the
evaluation loaders that use them, and PASTIS-R's memory-mapped windowed reads, which must give
exactly the values of the whole-patch decode."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from benchmark.collate import sits_collate
from benchmark.loading import (
    CUDA_MAX_WORKERS,
    CUDA_PREFETCH_FACTOR,
    eval_loader_kwargs,
    loader_kwargs,
    usable_cores,
)
from benchmark.protocols.segmentation import _loader
from tasks.pastis_r.dataset import PastisRDataset
from tasks.pastis_r.synthetic import generate
from tasks.sits.subsample import subsample_sample
from tasks.sits.task import _View, random_crop
from tasks.sits.window import crop_window

FORKED = {"multiprocessing_context": "fork"} if sys.platform.startswith("linux") else {}


def test_cpu_defaults_keep_one_process() -> None:
    assert loader_kwargs("cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_kwargs(torch.device("cpu"), num_workers=2) == {"num_workers": 2, "pin_memory": False, "persistent_workers": False, **FORKED}
    assert loader_kwargs("cpu", num_workers=2, prefetch_factor=3)["prefetch_factor"] == 3


def test_workers_can_read_entry_views() -> None:
    """An EntryView holds a closure (no pickling: entries cannot reach the reader through it), so
    workers must be forked, not spawned, whatever Python's default start method."""
    import pickle

    from benchmark.guard import EntryView

    view = EntryView([{"x": torch.tensor([float(i)])} for i in range(6)])
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(view)
    if FORKED:
        loader = torch.utils.data.DataLoader(view, batch_size=3, **loader_kwargs("cpu", num_workers=2))
        assert [b["x"].flatten().tolist() for b in loader] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_cuda_defaults_overlap_loading_with_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    workers = min(CUDA_MAX_WORKERS, usable_cores())
    expected = {"num_workers": workers, "pin_memory": True}
    if workers:
        expected |= {"persistent_workers": True, "prefetch_factor": CUDA_PREFETCH_FACTOR, **FORKED}
    assert loader_kwargs("cuda:0") == expected  # no CUDA needed: only the device type is read
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(10 * usable_cores()))  # ranks on one host share its cores
    assert loader_kwargs("cuda")["num_workers"] == 0 and "prefetch_factor" not in loader_kwargs("cuda")
    assert loader_kwargs("cuda", num_workers=0, pin_memory=False) == {"num_workers": 0, "pin_memory": False}


def test_eval_settings_come_from_eval_hparams() -> None:
    got = eval_loader_kwargs({"eval_num_workers": 3, "eval_prefetch_factor": 2, "num_workers": 7}, "cuda")
    assert got == {"num_workers": 3, "pin_memory": True, "persistent_workers": False, "prefetch_factor": 2, **FORKED}
    assert eval_loader_kwargs(None, "cpu") == loader_kwargs("cpu")
    assert eval_loader_kwargs({"eval_persistent_workers": True, "eval_num_workers": 1}, "cpu")["persistent_workers"] is True


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_workers": -1}, "num_workers must be an integer >= 0, got -1"),
    ({"num_workers": 1.5}, "num_workers must be an integer >= 0, got 1.5"),
    ({"num_workers": True}, "num_workers must be an integer >= 0, got True"),
    ({"num_workers": 2, "prefetch_factor": 0}, "prefetch_factor must be an integer >= 1, got 0"),
])
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        loader_kwargs("cpu", **kwargs)


def test_bad_device_is_named() -> None:
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        loader_kwargs("gpu")


@pytest.fixture(scope="module")
def pastis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pastis")
    generate(root, seed=2, n_patches=10, size=24, s2_dates=(6, 9), s1_dates=(7, 10), progress=False)
    return root


def _whole(ds: PastisRDataset, index: int, crop: int | None, length: int | None, seed: int, with_label: bool = True) -> dict[str, Any]:
    """The pre-window pipeline: decode the whole patch, then crop, then subsample dates."""
    sample = dict(ds[index])
    if not with_label:
        sample.pop("label")
    if crop is not None:
        sample = random_crop(sample, crop, -1, torch.Generator().manual_seed(seed))
    return subsample_sample(sample, length)


def _windowed(ds: PastisRDataset, index: int, crop: int | None, length: int | None, seed: int, with_label: bool = True) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return ds.read(index, length=length, with_label=with_label,
                   window=None if crop is None else (lambda label, hw: crop_window(label, hw, crop, -1, gen)))


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("radar", ["S1A", "S1D"])
@pytest.mark.parametrize("bands", ["rgb", "all"])
def test_windowed_reads_equal_the_whole_patch_decode(pastis: Path, radar: str, bands: str) -> None:
    ds = PastisRDataset(pastis, [1, 2, 3, 4, 5], radar=radar, optical_bands=bands, cache=False)
    assert ds.reads_windows and not PastisRDataset(pastis, [1], cache=True).reads_windows
    for index in range(len(ds)):
        for crop, length, with_label in [(None, None, True), (10, None, True), (None, 4, True), (8, 3, True), (8, 3, False)]:
            _assert_same(_windowed(ds, index, crop, length, index, with_label), _whole(ds, index, crop, length, index, with_label))


def test_nonfinite_values_are_handled_as_in_the_whole_decode(pastis: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(pastis, root)
    pid = PastisRDataset(root, [1, 2, 3, 4, 5], cache=False).ids[0]
    path = root / "DATA_S1A" / f"S1A_{pid}.npy"
    arr = np.load(path)
    arr[1] = np.nan  # a date with no finite value: dropped
    arr[3, 0, :5, :5] = np.inf  # some pixels: zeroed after normalisation
    np.save(path, arr)
    with pytest.warns(UserWarning, match="NaN"):
        ds = PastisRDataset(root, [1, 2, 3, 4, 5], cache=False)
        whole = _whole(ds, 0, 12, 4, 1)
    windowed = _windowed(ds, 0, 12, 4, 1)
    _assert_same(windowed, whole)
    assert len(ds[0]["radar_dates"]) == arr.shape[0] - 1 and len(windowed["radar_dates"]) == 4  # the NaN date is gone
    counts = dict(ds.nonfinite_counts)
    _windowed(ds, 0, None, None, 1)
    assert ds.nonfinite_counts == counts == {str(path): int((~np.isfinite(arr.astype(np.float32))).sum())}


def test_view_uses_the_windowed_read_and_gives_the_same_values(pastis: Path) -> None:
    cached, mapped = (PastisRDataset(pastis, [1, 2, 3], cache=c) for c in (True, False))
    for key in [(0, 0), (2, 1), (5, 3)]:
        a = _View(cached, None, with_label=True, length=3, crop=10, seed=4)[key]
        b = _View(mapped, None, with_label=True, length=3, crop=10, seed=4)[key]
        _assert_same(a, b)
        assert a["radar"].shape[-2:] == (10, 10) and a["radar"].shape[0] == 3


def test_evaluation_loader_uses_the_eval_settings(pastis: Path) -> None:
    ds = PastisRDataset(pastis, [5], cache=False)
    task = SimpleNamespace(collate=sits_collate)
    loader = _loader(ds, task, 2, SimpleNamespace(device=torch.device("cpu"), hparams={"eval_num_workers": 2}))
    single = _loader(ds, task, 2, SimpleNamespace(device=torch.device("cpu"), hparams={}))
    assert loader.num_workers == 2 and not loader.pin_memory and single.num_workers == 0
    for a, b in zip(loader, single, strict=True):  # the same batches, in the same order
        assert a["id"] == b["id"] and torch.equal(a["radar"], b["radar"])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_finite_mask_is_isfinite(dtype: type) -> None:
    from tasks.pastis_r.dataset import _finite_mask

    values = np.random.default_rng(0).normal(scale=1e4, size=(5, 3, 7, 9)).astype(dtype)
    values.flat[::7], values.flat[::11], values.flat[::13] = np.nan, np.inf, -np.inf
    values.flat[::17] = np.finfo(dtype).max
    values.flat[::19] = np.finfo(dtype).smallest_subnormal
    assert np.array_equal(_finite_mask(values), np.isfinite(values)) and not _finite_mask(values).all()
    assert np.array_equal(_finite_mask(values[:, [2, 0]]), np.isfinite(values[:, [2, 0]]))  # non-contiguous
