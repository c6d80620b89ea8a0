"""S4 Fig. 6a: same-location (SL) and different-location (DL) pre-training on pools of the same
number of series, the larger pool subsampled by hash rank (never a sorted prefix), so that S4
pre-trains for the same number of steps on both; the 6a comparisons pair DL with matched SL."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from benchmark.budget import with_stage_steps
from benchmark.contracts import RunContext
from reference_models.s4.entry import PROFILES as S4_PROFILES
from tasks.pastis_r import MAIN_CELLS, PastisRTask
from tasks.sits.splits import label_subset
from tasks.sits.task import ranked_subset


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    task = PastisRTask()
    data, _ = task.resolve_data(tmp_path_factory.mktemp("data"), "smoke", show_progress=False)
    return task, data


def _ctx(profile: str = "smoke", hparams: dict | None = None) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, profile=profile, hparams=dict(hparams or {}), checkpoint_dir=Path("/tmp"))


def _ids(view) -> list[str]:
    return [str(view.reader.ids[k]) for k in view.index]


def _other_train(task, data) -> list[str]:
    """South Sudan's pre-training pool ids (resolving that task's data, as a DL view does, if not yet)."""
    task.unlabeled(data, task.spec.cell("radar-100-dl"), _ctx())
    other_task, other = data.others["africa_crop_type"]
    return other_task.pretrain_ids(other)


def test_dl_and_matched_sl_pools_have_the_same_size(embedded) -> None:
    task, data = embedded
    ctx = _ctx()
    dl = task.unlabeled(data, task.spec.cell("radar-100-dl"), ctx)
    sl = task.unlabeled(data, task.spec.cell("radar-100-sl"), ctx)
    ours, other = task.pretrain_ids(data), _other_train(task, data)
    n = min(len(ours), len(other))
    assert len(ours) != len(other)  # the embedded pools differ in size, as the real ones do
    assert len(dl) == len(sl) == n
    assert set(_ids(sl)) <= set(ours) and set(_ids(dl)) <= set(other)
    assert len(set(_ids(sl))) == len(set(_ids(dl))) == n
    # Table 1's cells pre-train on the whole of PASTIS-R's pool: the training split and the unlabeled pool
    own = _ids(task.unlabeled(data, task.spec.cell("radar-100"), ctx))
    assert own == ours and set(data.split_ids["train"]) < set(own)
    assert not set(own) & (set(data.split_ids["val"]) | set(data.split_ids["test"]))
    # every cell of a 6a pool sees the same pool (one shared pre-training)
    for f in (100, 10):
        for m in ("radar", "optical"):
            assert _ids(task.unlabeled(data, task.spec.cell(f"{m}-{f}-sl"), ctx)) == _ids(sl)
            assert _ids(task.unlabeled(data, task.spec.cell(f"{m}-{f}-dl"), ctx)) == _ids(dl)


def test_the_larger_pool_is_subsampled_by_hash_rank_not_a_sorted_prefix(embedded) -> None:
    task, data = embedded
    ctx = _ctx()
    ours = task.pretrain_ids(data)
    n = min(len(ours), len(_other_train(task, data)))
    sl = _ids(task.unlabeled(data, task.spec.cell("optical-10-sl"), ctx))
    assert sl == ranked_subset(ours, n, data.subset_seed) == _ids(task.unlabeled(data, task.spec.cell("optical-10-sl"), ctx))
    assert sl != sorted(ours)[:n]
    # a fresh resolution of the data gives the same pool
    again, _ = task.resolve_data(data.base, "smoke", show_progress=False)
    assert _ids(task.unlabeled(again, task.spec.cell("radar-100-sl"), ctx)) == sl


def test_dl_pool_is_subsampled_when_it_is_the_larger(embedded) -> None:
    """With fewer series of ours than of South Sudan's, DL keeps a hash-ranked subset of theirs."""
    task, data = embedded
    ctx = _ctx()
    other = _other_train(task, data)
    small = ranked_subset(data.split_ids["train"], 50, data.subset_seed)
    cut = dataclasses.replace(data, readers={"pretrain": task.reader(data.root, "train", ids=small)}, others=dict(data.others))
    assert task.pretrain_ids(cut) == small
    dl = _ids(task.unlabeled(cut, task.spec.cell("radar-100-dl"), ctx))
    _, other_data = data.others["africa_crop_type"]
    assert len(dl) == 50 and dl == ranked_subset(other, 50, other_data.subset_seed)
    assert dl != sorted(other)[:50]


def test_ranked_subset_is_the_label_subset_rule() -> None:
    ids = [f"p{i}" for i in range(37)]
    for f in (0.1, 0.5, 1.0):
        assert ranked_subset(ids, math.ceil(f * len(ids)), 3) == label_subset(ids, f, 3)
    assert ranked_subset(list(reversed(ids)), 10, 3) == ranked_subset(ids, 10, 3)  # order-free
    assert ranked_subset(ids, 100, 3) == sorted(ids) and ranked_subset(ids, 0, 3) == []


@pytest.mark.parametrize("profile", ["mini", "paper"])
def test_s4_pretrains_for_as_many_steps_on_both_pools(embedded, profile: str) -> None:
    task, data = embedded
    ctx = _ctx(profile, S4_PROFILES[profile])
    steps = {}
    for kind in ("sl", "dl"):
        view = task.unlabeled(data, task.spec.cell(f"radar-100-{kind}"), ctx)
        steps[kind] = with_stage_steps(ctx, "pretrain", len(view)).hparams["pretrain_steps"]
    assert steps["sl"] == steps["dl"] > 0
    if profile == "paper":  # epochs × ceil(n / batch), n = the matched size
        n = min(len(task.pretrain_ids(data)), len(_other_train(task, data)))
        assert steps["dl"] == S4_PROFILES["paper"]["pretrain_epochs"] * math.ceil(n / S4_PROFILES["paper"]["batch_size"])


def test_6a_cells_table_and_comparisons(embedded) -> None:
    task, _ = embedded
    spec = task.spec
    for c in MAIN_CELLS:
        sl, dl = spec.cell(f"{c}-sl"), spec.cell(f"{c}-dl")
        assert sl.params["pretrain_source"] == "pastis_r" and sl.params["pretrain_match"] == "africa_crop_type"
        assert dl.params["pretrain_source"] == "africa_crop_type"
        assert {k: v for k, v in sl.params.items() if not k.startswith("pretrain_")} == spec.cell(c).params
        assert sl.shared == {"pretrain": "pretrain-sl-matched"} and "matched" in sl.title
    pairs = [(cmp.a, cmp.b) for cmp in spec.comparisons if cmp.title.startswith("DL vs SL")]
    assert pairs == [(f"{c}-dl", f"{c}-sl") for c in MAIN_CELLS]
    table = spec.table_specs()["ablation_6a"]
    assert set(table.cells) == {f"{c}-{k}" for c in MAIN_CELLS for k in ("sl", "dl")}
    assert table.entries == ("s4",)


def test_dl_and_sl_jobs_carry_the_other_pools_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DL / SL job reads South Sudan's pool: that pool's data identity is in its record and its
    hash, so re-generated or changed South Sudan data re-runs those jobs (and only those) on
    ``--resume`` instead of keeping results trained on the old pool."""
    from benchmark import plan as plan_mod
    from benchmark.plan import RunOptions, make_plan

    def plan_of(root: Path) -> dict[str, dict]:
        opts = RunOptions(task="pastis_r", entries=["s4"], profile="smoke", seeds=[0], data_root=root, device="cpu",
                          results_dir=tmp_path / "results", cells=["radar-100", "radar-100-dl", "radar-100-sl"], show_progress=False)
        plan, _ = make_plan(opts)
        return {job.key.cell: {**job.record, "work": job.request.checkpoint_dir} for job in plan.jobs}

    root = tmp_path / "data"
    root.mkdir()
    before = plan_of(root)
    from tasks.africa_crop_type import AfricaCropTypeTask

    _, south_sudan = AfricaCropTypeTask().resolve_data(root, "smoke", show_progress=False)
    assert "depends_on" not in before["radar-100"]["data"]
    for cell in ("radar-100-dl", "radar-100-sl"):
        dep = before[cell]["data"]["depends_on"]["africa_crop_type"]
        assert dep["checksum"] == south_sudan.checksum and "root" not in dep
        assert dep["task_version"] == AfricaCropTypeTask.spec.version and dep["recipe"]["subset_seed"] == AfricaCropTypeTask.subset_seed
    real = plan_mod.resolve_data

    def changed_pool(task, *args, **kwargs):
        data, identity = real(task, *args, **kwargs)
        if task.spec.name == "africa_crop_type":
            identity = dataclasses.replace(identity, checksum="0" * 64)
        return data, identity

    monkeypatch.setattr(plan_mod, "resolve_data", changed_pool)
    after = plan_of(root)
    assert after["radar-100"]["config_hash"] == before["radar-100"]["config_hash"]
    assert after["radar-100"]["work"] == before["radar-100"]["work"]
    for cell in ("radar-100-dl", "radar-100-sl"):
        assert after[cell]["config_hash"] != before[cell]["config_hash"]
        assert after[cell]["work"] != before[cell]["work"]  # a pre-training on the old pool is never reused
