"""motif_fm and motif_det end to end: check-entry on the mock task, a smoke run on a small embedded
tc_primed (one model per training window shared by the cells, paired comparison on aligned
samples), and the Figure-1 plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import runner
from benchmark.check_entry import check_entry
from benchmark.compare import compare_jobs
from benchmark.results import ResultStore
from tasks.tc_primed.task import TcPrimedTask

FM, DET = "reference_models.motif_fm:MotifFM", "reference_models.motif_fm:MotifDet"
SMALL = TcPrimedTask(synthetic_size={"n_storms": 6})
CELLS = ["train6h-eval6h-min3-max2", "train6h-eval6h-min3-all"]


@pytest.mark.parametrize("spec", [FM, DET])
def test_check_entry(spec: str) -> None:
    rep = check_entry(spec)
    assert rep.ok, rep.message
    assert rep.parameters and rep.parameters > 1000 and np.isfinite(rep.main_metric)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tc_small")
    results = tmp_path_factory.mktemp("motif_results")
    summaries = runner.run("tests.test_motif_fm:SMALL", [FM, DET], profile="smoke", data_root=root, results_dir=results,
                           cells=CELLS, show_progress=False, device="cpu")
    return root, results, summaries


def test_smoke_run_end_to_end(smoke_run) -> None:
    root, results, summaries = smoke_run
    assert [s.status for s in summaries] == ["ok"] * 4, [s.message for s in summaries]
    recs = {(r["entry"]["name"], r["cell"]["name"]): r for r in ResultStore(results).records("tc_primed", "smoke")}
    assert set(recs) == {(e, c) for e in ("motif_fm", "motif_det") for c in CELLS}
    for (entry, _), rec in recs.items():
        m = rec["metrics"]
        assert 0 < m["crps"]["low"] <= m["crps"]["estimate"] <= m["crps"]["high"] < 200
        assert rec["throughput"]["parameters"] > 1000 and rec["throughput"]["infer_samples_per_s"] > 0
        if entry == "motif_det":  # an ensemble of one: standard CRPS is its MAE, no spread
            assert m["crps"]["estimate"] == pytest.approx(m["mae"]["estimate"], rel=1e-5)
        else:
            assert m["spread_skill"]["estimate"] > 0 and "crps_fair" in m
    # one model per entry per training window: a single checkpoint, trained once and reused
    for entry in ("motif_fm", "motif_det"):
        ckpts = list((results / "tc_primed" / "smoke" / entry).glob("_work/**/train6h/fit/checkpoint.pt"))
        assert len(ckpts) == 1, ckpts
        logs = [recs[(entry, c)]["extra"]["fit_log"]["fit"] for c in CELLS]
        assert logs[0]["steps"] == logs[1]["steps"] == logs[1]["resumed_from"] > 0  # the second cell reused it


def test_paired_comparison_on_aligned_samples(smoke_run) -> None:
    _, results, _ = smoke_run
    store = ResultStore(results)
    recs = {(r["entry"]["name"], r["cell"]["name"]): r for r in store.records("tc_primed", "smoke")}
    ids = [set(store.load_stats(recs[("motif_fm", c)])["unit_id"].tolist()) for c in CELLS]
    assert ids[0] == ids[1] and ids[0]  # max 2 vs all: exactly the same (sample, channel) rows
    cmp = compare_jobs(SMALL, results, "smoke", f"motif_fm/{CELLS[0]}", f"motif_fm/{CELLS[1]}")
    assert cmp.result.n_rows == len(ids[0]) and cmp.result.low <= cmp.result.estimate <= cmp.result.high
    storms = len({i.split("@")[0] for i in ids[0]})
    assert cmp.result.interval_unit == "storm" and cmp.n_units == storms  # storms are resampled, not rows
    det = compare_jobs(SMALL, results, "smoke", f"motif_fm/{CELLS[1]}", f"motif_det/{CELLS[1]}")
    assert det.result.n_rows == len(ids[0])


def test_plot_figure_one(smoke_run, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    root, results, _ = smoke_run
    parser = argparse.ArgumentParser()
    SMALL.add_plot_arguments(parser)
    out = tmp_path / "fig.png"
    args = parser.parse_args(["--entry", FM, "--cell", CELLS[1], "--profile", "smoke", "--results", str(results),
                              "--data-root", str(root), "--realizations", "3", "--out", str(out), "--no-progress"])
    assert SMALL.plot(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    # the weights of the run were reused, not retrained
    ckpt = next((results / "tc_primed" / "smoke" / "motif_fm").glob("_work/**/train6h/fit/checkpoint.pt"))
    assert json.loads(next((results / "tc_primed" / "smoke" / "motif_fm").glob("*.json")).read_text())["status"] == "ok"
    assert ckpt.stat().st_mtime < out.stat().st_mtime
