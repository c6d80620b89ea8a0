"""The epoch-to-steps budget rule every network entry goes through (``benchmark.budget``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark import registry
from benchmark.budget import MINI_FINETUNE_MIN_STEPS, min_steps, stage_steps, with_stage_steps
from benchmark.contracts import RunContext

# Training-set sizes of the embedded data (PASTIS-R v3: 600 patches; South Sudan v4: 390 tiles)
# and their 10 % subsets as the tasks draw them.
EMBEDDED_TRAIN = {"pastis_r": {1.0: 600, 0.1: 60}, "africa_crop_type": {1.0: 390, 0.1: 39}}


def test_min_steps_reads_the_largest_listed_fraction_not_above_the_cell() -> None:
    table = {"0.1": 200, "1.0": 600}
    assert min_steps(table, 1.0) == 600
    assert min_steps(table, 0.1) == 200
    assert min_steps(table, 0.5) == 200
    assert min_steps(table, 0.05) == 200  # below every listed fraction: the smallest one's floor
    assert min_steps(table, None) == 600  # a task without label fractions
    assert min_steps(300, 0.1) == 300 and min_steps(None, 1.0) == 1


@pytest.mark.parametrize("bad", [{}, {"all": 5}, {"0.1": "many"}])
def test_min_steps_rejects_a_malformed_mapping(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="min_steps"):
        min_steps(bad, 1.0)


def test_stage_steps_takes_the_larger_of_epochs_and_the_floor() -> None:
    hp = {"finetune_epochs": 4, "finetune_min_steps": {"0.1": 200, "1.0": 600}, "batch_size": 4}
    assert stage_steps(hp, "finetune", 390, 1.0) == 600  # 4 × 98 = 392 < 600
    assert stage_steps(hp, "finetune", 1000, 1.0) == 1000  # 4 × 250 > 600
    assert stage_steps(hp, "finetune", 39, 0.1) == 200
    assert stage_steps({**hp, "finetune_steps": 7}, "finetune", 390, 1.0) == 7  # explicit steps win
    assert stage_steps({"batch_size": 4}, "finetune", 390, 1.0) is None
    assert stage_steps({**hp, "finetune_batch_size": 8}, "finetune", 8000, 1.0) == 4000


def test_with_stage_steps_reads_the_cells_label_fraction() -> None:
    hp = {"finetune_epochs": 4, "finetune_min_steps": {"0.1": 200, "1.0": 600}, "batch_size": 4}
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="mini", hparams=hp, checkpoint_dir=Path("."),
                     cell={"modality": "radar", "label_fraction": 0.1})
    assert with_stage_steps(ctx, "finetune", 39).hparams["finetune_steps"] == 200
    assert "finetune_steps" not in ctx.hparams  # a copy; the caller's dict is untouched


def _network_entries() -> list[str]:
    names = []
    for name in registry.entry_names():
        cls = registry.load_entry(name)
        if cls.metadata.family == "segmentation" and "finetune_epochs" in cls.profiles.get("mini", {}):
            names.append(name)
    return names


@pytest.mark.parametrize("entry", _network_entries())
@pytest.mark.parametrize("task", sorted(EMBEDDED_TRAIN))
@pytest.mark.parametrize("fraction", [1.0, 0.1])
def test_every_network_entry_fine_tunes_the_same_mini_updates(entry: str, task: str, fraction: float,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What each entry's ``finetune`` hands the fit loop: the same update count for every method
    on a (task, label fraction), PASTIS-R's 4 epochs at 100 %, the 200-step floor at 10 %."""
    import baselines.ssl_common
    import reference_models.s4.entry

    seen: list[int] = []

    def capture(ctx: RunContext, *args: Any, **kwargs: Any) -> None:
        seen.append(int(ctx.hparams["finetune_steps"]))

    monkeypatch.setattr(reference_models.s4.entry, "fit_in_context", capture)
    monkeypatch.setattr(baselines.ssl_common, "fit_in_context", capture)
    cls = registry.load_entry(entry)
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="mini", hparams=dict(cls.profiles["mini"]),
                     checkpoint_dir=Path("."), cell={"modality": "radar", "label_fraction": fraction},
                     task_info={"num_classes": 4, "channels": {"radar": 3, "optical": 10}, "ignore_index": -1})
    cls().finetune(list(range(EMBEDDED_TRAIN[task][fraction])), "radar", ctx)
    assert seen == [MINI_FINETUNE_MIN_STEPS["1.0" if fraction == 1.0 else "0.1"]]
