"""The example entries in ``examples/`` pass check-entry, and the reconstruction one runs on tc_primed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmark.check_entry import check_entry
from benchmark.cli import main

SEGMENTATION = "examples/minimal_entry.py:PixelLinear"
RECONSTRUCTION = "examples/reconstruction_entry.py:GaussianPerChannel"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("spec", [SEGMENTATION, RECONSTRUCTION])
def test_example_passes_check_entry(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    report = check_entry(spec)
    assert report.ok, report.message
    assert "hidden-truth probe passed" in report.message and report.parameters


def test_reconstruction_example_runs_on_tc_primed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two cells that share one fit (6 h training windows): the second reuses its checkpoint
    monkeypatch.chdir(ROOT)
    cells = ("train6h-eval6h-min3-max2", "train6h-eval6h-min3-all")
    argv = ["run", "--task", "tc_primed", "--profile", "smoke", "--entry", RECONSTRUCTION, "--results", str(tmp_path),
            "--seed", "0", "--no-progress", "--device", "cpu"]
    assert main([*argv, *(a for c in cells for a in ("--cell", c))]) == 0
    folder = tmp_path / "tc_primed" / "smoke" / "gaussian_per_channel"
    records = {c: json.loads((folder / f"{c}-seed0.json").read_text()) for c in cells}
    for rec in records.values():
        assert rec["status"] == "ok" and rec["data"]["kind"] == "synthetic"
        crps = rec["metrics"]["crps"]
        assert math.isfinite(crps["estimate"]) and crps["low"] <= crps["estimate"] <= crps["high"] and crps["members"] == 10
        assert rec["metrics"]["spread_skill"]["estimate"] > 0  # a real ensemble, not one prediction repeated
        assert rec["extra"]["fit_log"]["fit"]["steps"] == 40
    # one fit for both cells: whichever ran second found the finished checkpoint
    assert sorted(r["extra"]["fit_log"]["fit"]["resumed_from"] for r in records.values()) == [0, 40]
