"""Epoch-seeded training datasets (benchmark.loading, contract C4): random draws are a pure function
of (seed, epoch, index), so DataLoader worker processes, re-forked every epoch or persistent, draw
exactly what one process draws, a new draw every epoch, the same in every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.contracts import RunContext
from benchmark.guard import EntryView
from benchmark.loading import EpochKeys, epoch_generator, epoch_rng, split_key
from tasks.africa_crop_type import AfricaCropTypeTask
from tasks.tc_primed.task import TcPrimedTask

EPOCHS = 3


def _ctx(profile: str, seed: int = 0) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=seed, profile=profile, hparams={}, checkpoint_dir=Path("/tmp"))


def _epochs(dataset: Any, num_workers: int, persistent: bool = False) -> list[list[Any]]:
    """What a loader reading ``dataset`` with (epoch, index) keys yields, per epoch."""
    out = []
    n = len(dataset)
    kwargs: dict[str, Any] = {"num_workers": num_workers}
    if num_workers:
        kwargs["persistent_workers"] = persistent
    for epoch in range(EPOCHS):  # one loader (and its persistent workers); the keys change per epoch, as fit's
        keys = [(epoch, i) for i in range(n)]
        if epoch == 0:
            holder: list[tuple[int, int]] = []
            loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=holder, **kwargs)
        holder[:] = keys
        out.append([_summary(item) for item in loader])
    return out


def _summary(item: dict[str, Any]) -> Any:
    if "sources" in item:  # a TC-PRIMED window: which observations were drawn
        return tuple(sorted((k, round(float(s["dt"]), 6)) for k, s in item["sources"].items()))
    return (item["id"], item["radar"].shape[-2:], float(item["radar"].sum()), int(item["label"].sum()))


@pytest.fixture(scope="module")
def tc_train(tmp_path_factory: pytest.TempPathFactory) -> Any:
    task = TcPrimedTask(synthetic_size={"n_storms": 10})
    data, _ = task.resolve_data(tmp_path_factory.mktemp("tc"), "smoke", show_progress=False)
    cell = task.spec.cell("train6h-eval6h-min3-all")
    train = task.windows(data, "train", cell, _ctx("smoke"))
    rich = [k for k, w in enumerate(train.windows) if len(w.rows) > train.max_sources]  # windows with a real choice
    assert len(rich) >= 4
    train.windows = [train.windows[k] for k in rich[:8]]
    return train


@pytest.fixture(scope="module")
def sudan_train(tmp_path_factory: pytest.TempPathFactory) -> Any:
    task = AfricaCropTypeTask()
    task.train_crop = {**task.train_crop, "mini": 8}  # random crops of the 16 × 16 embedded tiles (mini itself uses whole tiles)
    data, _ = task.resolve_data(tmp_path_factory.mktemp("sudan"), "mini")
    view = task.labeled(data, "train", task.spec.cell("radar-100"), _ctx("mini"))
    view.index = view.index[:6]
    return view


@pytest.mark.parametrize("name", ["tc_train", "sudan_train"])
def test_workers_draw_what_one_process_draws_and_redraw_every_epoch(name: str, request: pytest.FixtureRequest) -> None:
    dataset = request.getfixturevalue(name)
    assert dataset.epoch_seeded
    single = _epochs(dataset, 0)
    assert single[0] != single[1] != single[2]  # a new draw every epoch
    assert _epochs(dataset, 2) == single  # workers re-forked every epoch: not the same subset every epoch
    assert _epochs(dataset, 2, persistent=True) == single  # persistent workers: no drift from worker copies
    assert _epochs(dataset, 0) == single  # nothing accumulates in the dataset object
    assert [_summary(dataset[i]) for i in range(len(dataset))] == single[0]  # dataset[i] is epoch 0


def test_draws_depend_on_the_seed(tc_train: Any) -> None:
    other = type(tc_train)(tc_train.store, tc_train.windows, tc_train.window_h, tc_train.crop, seed=tc_train.seed + 1)
    assert [other.draw(0, i) for i in range(len(other))] != [tc_train.draw(0, i) for i in range(len(tc_train))]
    fixed = type(tc_train)(tc_train.store, tc_train.windows, tc_train.window_h, tc_train.crop, seed=0, fixed=True)
    assert all(fixed.draw(0, i) == fixed.draw(5, i) for i in range(len(fixed)))  # validation: the same every epoch


def test_entry_view_passes_epoch_keys_through(sudan_train: Any) -> None:
    view = EntryView(sudan_train, hidden=("label",))
    assert view.epoch_seeded
    a, b = view[(1, 2)], sudan_train[(1, 2)]
    assert "label" not in a and torch.equal(a["radar"], b["radar"])
    assert not torch.equal(view[(0, 2)]["radar"], a["radar"])
    with pytest.raises(IndexError, match="out of range"):
        view[(0, len(view))]
    assert not EntryView([1, 2, 3]).epoch_seeded


def test_keys_and_generators() -> None:
    assert split_key(4) == (0, 4) and split_key((3, 4)) == (3, 4)
    for bad in [(1, 2, 3), (-1, 2), (1.5, 2), "3"]:
        with pytest.raises(TypeError, match="dataset key"):
            split_key(bad)  # type: ignore[arg-type]
    assert epoch_rng(0, 1, 2).integers(1 << 30) == epoch_rng(0, 1, 2).integers(1 << 30) != epoch_rng(0, 2, 2).integers(1 << 30)
    draw = [int(torch.randint(1 << 30, (1,), generator=epoch_generator(7, e, 3))) for e in (0, 0, 1)]
    assert draw[0] == draw[1] != draw[2]
    assert list(EpochKeys(2, epochs=2)) == [(0, 0), (0, 1), (1, 0), (1, 1)] and len(EpochKeys(2, epochs=2)) == 4


def test_fit_with_workers_trains_on_what_one_process_reads(sudan_train: Any) -> None:
    """End to end through fit's keyed sampler: the per-step losses depend on every crop drawn, so
    two workers (re-forked each epoch) and one process must log the same losses."""
    from benchmark.collate import sits_collate
    from benchmark.training import FitConfig, fit

    view = EntryView(sudan_train)

    def run(workers: int) -> list[float]:
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)

        def loss_fn(m: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            return (m(batch["radar"].mean((1, 2, 3, 4))[:, None]) ** 2).mean()

        config = FitConfig(steps=3 * len(view) // 2, batch_size=2, num_workers=workers, amp=False, persistent_workers=False)
        return fit(model, loss_fn, view, config, device="cpu", seed=0, collate_fn=sits_collate, progress=False).losses

    single = run(0)
    assert len(set(single)) == len(single)  # epochs differ: no step repeats another's crops
    assert run(2) == single
