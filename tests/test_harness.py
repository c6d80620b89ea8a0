"""End-to-end behaviour of the harness on the mock tasks: records, resume, failures, tables, compare."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import registry, runner, tables
from benchmark.cli import main
from benchmark.compare import compare_jobs
from benchmark.contracts import PairedComparison
from benchmark.errors import BenchmarkError
from benchmark.results import ResultStore

SEG = "tests.plugins.toy_entries:SegTask"
REC = "tests.plugins.toy_entries:ReconTask"
LINEAR = "examples/minimal_entry.py:PixelLinear"
MEAN = "tests.plugins.toy_entries:InputMeanEntry"


@pytest.fixture(scope="module")
def seg_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    summaries = runner.run(SEG, [LINEAR], profile="smoke", results_dir=out, show_progress=False, device="cpu")
    assert [s.status for s in summaries] == ["ok"] * 4
    return out


def test_segmentation_records_hold_metrics_stats_and_environment(seg_results: Path) -> None:
    store = ResultStore(seg_results)
    recs = list(store.records("mock_segmentation", "smoke"))
    assert {r["cell"]["name"] for r in recs} == {"radar-100", "radar-50", "optical-100", "optical-50"}
    rec = recs[0]
    miou = rec["metrics"]["miou"]
    assert miou["low"] <= miou["estimate"] <= miou["high"]
    assert miou["n_resamples"] == 200 and miou["level"] == 0.95
    # the mock task is learnable: a linear pixel model is well above chance (1/4 classes)
    assert miou["estimate"] > 0.4
    stats = store.load_stats(rec)
    assert stats["confusion"].shape == (6, 4, 4)
    # the record's point estimate is recomputable from the stored per-unit statistics
    import torch

    from benchmark.metrics import iou_from_confusion

    _, m, _ = iou_from_confusion(torch.as_tensor(stats["confusion"].sum(0)))
    assert float(m) == pytest.approx(miou["estimate"])
    assert rec["data"]["kind"] == "synthetic"
    assert rec["environment"]["versions"]["torch"]
    assert rec["throughput"]["infer_samples_per_s"] > 0
    assert rec["throughput"]["parameters"] == 4 * (2 * 3) + 4
    assert rec["throughput"]["train_samples_per_s"]["finetune"] > 0


def test_resume_skips_finished_jobs_and_reruns_changed_config(seg_results: Path) -> None:
    again = runner.run(SEG, [LINEAR], profile="smoke", results_dir=seg_results, resume=True, show_progress=False, device="cpu")
    assert {s.status for s in again} == {"skipped"}
    # a different seed is a different job
    other = runner.run(SEG, [LINEAR], profile="smoke", results_dir=seg_results, resume=True, seeds=[1], cells=["radar-100"], show_progress=False, device="cpu")
    assert [s.status for s in other] == ["ok"]
    # a tampered config hash (i.e. a changed configuration) is re-run
    path = ResultStore(seg_results).record_path(other[0].key)
    rec = json.loads(path.read_text())
    rec["config_hash"] = "0" * 16
    path.write_text(json.dumps(rec))
    rerun = runner.run(SEG, [LINEAR], profile="smoke", results_dir=seg_results, resume=True, seeds=[1], cells=["radar-100"], show_progress=False, device="cpu")
    assert [s.status for s in rerun] == ["ok"]


def test_task_recipe_is_part_of_the_job_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    assert json.loads(first[0].path.read_text())["task"]["recipe"] == {}
    # a task that changes what it does to the data (crops, loss weights) invalidates --resume
    monkeypatch.setattr(type(registry.load_task(SEG)), "recipe", lambda self, profile: {"train_crop": 8}, raising=False)
    again = runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"], resume=True, show_progress=False, device="cpu")
    assert [s.status for s in again] == ["ok"]
    assert json.loads(again[0].path.read_text())["task"]["recipe"] == {"train_crop": 8}


def test_same_seed_gives_identical_metrics(tmp_path: Path, seg_results: Path) -> None:
    runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["optical-50"], show_progress=False, device="cpu")
    a = json.loads((tmp_path / "mock_segmentation/smoke/pixel_linear/optical-50-seed0.json").read_text())
    b = json.loads((seg_results / "mock_segmentation/smoke/pixel_linear/optical-50-seed0.json").read_text())
    assert a["metrics"] == b["metrics"]


def test_failing_entry_is_recorded_and_others_survive(tmp_path: Path) -> None:
    summaries = runner.run(SEG, [LINEAR, "tests.plugins.toy_entries:WrongShapeEntry", "tests.plugins.toy_entries:NaNEntry"],
                           profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    status = {s.key.entry: s for s in summaries}
    assert status["pixel_linear"].status == "ok"
    assert status["wrong_shape"].status == "failed"
    assert "returned shape (4, 2, 16, 16), expected (4, 4, 16, 16)" in status["wrong_shape"].message
    assert "non-finite" in status["nan_logits"].message
    rec = json.loads(status["wrong_shape"].path.read_text())
    assert rec["status"] == "failed" and "EntryOutputError" in rec["error"]
    text = tables.render(registry.load_task(SEG), tmp_path, "smoke")
    assert "FAILED wrong_shape" in text


def test_table_renders_paper_layout_and_hides_paper_numbers_for_synthetic(seg_results: Path) -> None:
    paper = seg_results / "paper"
    paper.mkdir(exist_ok=True)
    (paper / "mock_segmentation.csv").write_text("table,entry,cell,metric,value,low,high,std\nmain,pixel_linear,radar-100,miou,99.9,,,\n")
    text = tables.render(registry.load_task(SEG), seg_results, "smoke")
    assert "| entry" in text and "radar-100" in text and "optical-50" in text
    assert "99.9" not in text and "SYNTHETIC" in text
    assert "throughput" in text and "inference samples/s" in text and "pre-train samples/s" in text
    assert "mIoU %" in text and "test patches" in text  # units and resampling unit in the table
    latex = tables.render(registry.load_task(SEG), seg_results, "smoke", fmt="latex")
    assert "\\toprule" in latex
    # the synthetic-data notice is in each caption (printed), not in a % comment
    captions = [line for line in latex.splitlines() if line.startswith("\\caption{")]
    assert captions and all("SYNTHETIC" in c for c in captions)
    assert not any(line.lstrip().startswith("%") for line in latex.splitlines())
    rows = list(csv.DictReader(io.StringIO(tables.render(registry.load_task(SEG), seg_results, "smoke", fmt="csv"))))
    miou = [r for r in rows if r["metric"] == "miou"]
    assert len(miou) == 4 and {r["interval_unit"] for r in miou} == {"patch"} and {r["unit"] for r in miou} == {"%"}
    assert {r["n_units"] for r in miou} == {"6"} and {r["data"] for r in miou} == {"synthetic"}
    assert set(rows[0]) >= {"task", "profile", "estimate", "low", "high", "seed_sd", "cell_label"}


def test_paper_column_shown_for_real_data(seg_results: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(seg_results, tmp_path / "r")
    for path in (tmp_path / "r").rglob("*.json"):
        rec = json.loads(path.read_text())
        rec["data"]["kind"] = "real"
        path.write_text(json.dumps(rec))
    (tmp_path / "r/paper").mkdir(exist_ok=True)
    (tmp_path / "r/paper/mock_segmentation.csv").write_text("table,entry,cell,metric,value,low,high,std\nmain,pixel_linear,radar-100,miou,99.9,,,\n")
    text = tables.render(registry.load_task(SEG), tmp_path / "r", "smoke")
    assert "radar-100 (paper)" in text and "99.9" in text


def test_reconstruction_job_scores_crps_rows_with_clusters(tmp_path: Path) -> None:
    summaries = runner.run(REC, [MEAN], profile="smoke", results_dir=tmp_path, show_progress=False, device="cpu")
    assert [s.status for s in summaries] == ["ok", "ok"]
    store = ResultStore(tmp_path)
    rec = next(r for r in store.records("mock_reconstruction", "smoke") if r["cell"]["name"] == "win1h-all")
    m = rec["metrics"]
    assert set(m) >= {"crps", "crps_fair", "crps_rows_iid", "mae", "rmse", "spread_skill"}
    assert m["crps"]["members"] == 4 and m["crps"]["estimator"] == "standard"
    # fair CRPS is lower than standard for the same ensemble (it removes the finite-M spread bias)
    assert m["crps_fair"]["estimate"] < m["crps"]["estimate"]
    stats = store.load_stats(rec)
    assert len(stats["crps"]) == 8 * 2 and set(np.unique(stats["cluster"])) <= {f"storm{i}" for i in range(3330, 3340)}
    assert float(stats["crps"].mean()) == pytest.approx(m["crps"]["estimate"])
    # the headline interval is the storm-cluster bootstrap of the stored rows; the paper's IID one is the labelled extra
    from benchmark.metrics import bootstrap

    rows = np.stack([stats["crps"].astype(np.float64), np.ones(len(stats["crps"]))], 1)
    cluster = bootstrap(rows, lambda s: s[..., 0] / s[..., 1], n_resamples=200, seed=0, clusters=stats["cluster"])
    iid = bootstrap(rows, lambda s: s[..., 0] / s[..., 1], n_resamples=200, seed=0)
    assert (m["crps"]["low"], m["crps"]["high"]) == pytest.approx((cluster.low, cluster.high))
    assert m["crps"]["interval_unit"] == "storm" and m["crps"]["n_units"] == len(np.unique(stats["cluster"]))
    assert (m["crps_rows_iid"]["low"], m["crps_rows_iid"]["high"]) == pytest.approx((iid.low, iid.high))
    assert "paper method" in m["crps_rows_iid"]["label"] and m["crps_rows_iid"]["n_units"] == 16
    text = tables.render(registry.load_task(REC), tmp_path, "smoke", extended=True)
    assert "window_h" in text and "fair CRPS" in text and "max_sources" in text and "rows as independent" in text
    csv_rows = list(csv.DictReader(io.StringIO(tables.render(registry.load_task(REC), tmp_path, "smoke", fmt="csv"))))
    head = next(r for r in csv_rows if r["metric"] == "crps" and r["cell"] == "win1h-all")
    assert head["interval_unit"] == "storm" and float(head["low"]) == pytest.approx(cluster.low, rel=1e-5)
    assert head["n_units"] == str(len(np.unique(stats["cluster"])))


def test_compare_paired_difference(tmp_path: Path) -> None:
    runner.run(REC, [MEAN], profile="smoke", results_dir=tmp_path, show_progress=False, device="cpu")
    task = registry.load_task(REC)
    same = compare_jobs(task, tmp_path, "smoke", "input_mean/win1h-all", "input_mean/win1h-all")
    assert same.result.estimate == 0 and same.result.low == 0 and same.result.high == 0 and same.result.p_value == 1.0
    diff = compare_jobs(task, tmp_path, "smoke", "input_mean/win1h-max2", "input_mean/win1h-all")
    assert diff.result.interval_unit == "storm" and diff.result.n_rows == 16 and diff.result.low <= diff.result.estimate <= diff.result.high
    assert diff.result.p_sign_flip is not None  # few storms: the sign-flip p is computed and the larger p used
    assert diff.result.p_value == max(diff.result.p_bootstrap, diff.result.p_sign_flip)
    assert "paired" in diff.describe() and " K " in diff.describe() and "NOTE" not in diff.describe()
    iid = compare_jobs(task, tmp_path, "smoke", "input_mean/win1h-max2", "input_mean/win1h-all", rows_iid=True)
    assert iid.result.n_units == 16 and iid.result.estimate == pytest.approx(diff.result.estimate)
    # a task's declared comparisons and its every-metric table are rendered with the tables
    task.spec = dataclasses.replace(task.spec, comparisons=(PairedComparison("max 2 vs all", "win1h-max2", "win1h-all"),), extended_table=True)
    text = tables.render(task, tmp_path, "smoke")
    assert "paired comparisons" in text and "every metric" in text and "p (Holm)" in text and "P(a better)" in text
    row = next(line for line in text.splitlines() if line.startswith("| max 2 vs all"))
    r = diff.result
    assert f"{r.estimate:+.2f} [{r.low:+.2f}, {r.high:+.2f}]" in row and "storms" in row
    with pytest.raises(ValueError, match="unknown cell"):
        dataclasses.replace(task.spec, comparisons=(PairedComparison("x", "nope", "win1h-all"),)).check_comparisons()


def test_registry_errors_list_what_exists() -> None:
    with pytest.raises(BenchmarkError, match="unknown task 'nope'"):
        registry.load_task("nope")
    with pytest.raises(BenchmarkError, match="unknown entry 'nope'"):
        registry.load_entry("nope")
    with pytest.raises(BenchmarkError, match="EntryMetadata"):
        registry.load_entry("tests.plugins.toy_entries:NoMetadata")
    with pytest.raises(BenchmarkError, match="entry file not found"):
        registry.load_entry("missing/file.py:X")
    with pytest.raises(BenchmarkError, match="has no attribute"):
        registry.load_entry("tests.plugins.toy_entries:Nothing")


def test_family_mismatch_and_unknown_cell_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="reconstruction entry"):
        runner.run(SEG, [MEAN], profile="smoke", results_dir=tmp_path)
    with pytest.raises(BenchmarkError, match="no cell"):
        runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["nope"])
    with pytest.raises(BenchmarkError, match="no profile 'paper'"):
        runner.run(REC, [MEAN], profile="paper", results_dir=tmp_path)


def test_cli_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--task", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'nope'") and "Traceback" not in err and err.count("\n") == 1
    assert main(["run", "--task", SEG, "--data-root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["table", "--task", SEG, "--results", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err
    assert main(["download", SEG]) == 2
    assert "does not support `download`" in capsys.readouterr().err
    for form in (["plot", "--task", "nope"], ["plot", "--task=nope"], ["plot", "nope"], ["-v", "plot", "--task", "nope"]):  # as in `run`
        assert main(form) == 2
        assert capsys.readouterr().err.startswith("error: unknown task 'nope'")


def test_cli_run_table_list_and_check_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--task", REC, "--entry", MEAN, "--profile", "smoke", "--results", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "win1h-all" in out and "2 ok" in out
    assert (tmp_path / "mock_reconstruction/smoke/TABLES.md").is_file()
    assert main(["table", "--task", REC, "--profile", "smoke", "--results", str(tmp_path), "--format", "csv"]) == 0
    assert "crps" in capsys.readouterr().out
    assert main(["compare", "--task", REC, "--profile", "smoke", "--results", str(tmp_path), "input_mean/win1h-max2", "input_mean/win1h-all"]) == 0
    assert "paired" in capsys.readouterr().out
    assert main(["list"]) == 0
    assert "Profiles" in capsys.readouterr().out
    assert main(["check-entry", LINEAR]) == 0
    assert capsys.readouterr().out.startswith("OK: pixel_linear")
    assert main(["check-entry", "tests.plugins.toy_entries:WrongShapeEntry"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["check-entry", MEAN]) == 0


def test_cli_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("run", "table", "compare", "check-entry", "list"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_plan_jobs_takes_the_union_of_tables() -> None:
    import dataclasses

    from benchmark.contracts import Cell, TableSpec
    from benchmark.runner import plan_jobs

    base = registry.load_task(SEG).spec
    extra = Cell("radar-100-other", {"modality": "radar", "label_fraction": 1.0})
    spec = dataclasses.replace(base, cells=(*base.cells, extra), tables={
        "main": TableSpec("Table 1", cells=tuple(c.name for c in base.cells)),
        "ablation": TableSpec("Ablation", cells=("radar-100", "radar-100-other"), entries=("a",)),
    })
    jobs = plan_jobs(spec, ["a", "b"], cells=None, tables=None)
    assert ("a", extra) in jobs and ("b", extra) not in jobs and len(jobs) == 4 + 1 + 4
    assert plan_jobs(spec, ["b"], cells=None, tables=["ablation"]) == []
    assert plan_jobs(spec, ["a"], cells=None, tables=["ablation"]) == [("a", spec.cell("radar-100")), ("a", extra)]
    # an explicit --cell runs for every entry, whatever the tables list
    assert plan_jobs(spec, ["b"], cells=["radar-100-other"], tables=None) == [("b", extra)]
    with pytest.raises(BenchmarkError, match="no table"):
        plan_jobs(spec, ["a"], None, ["nope"])
    with pytest.raises(ValueError, match="unknown cell"):
        dataclasses.replace(spec, tables={"x": TableSpec("X", cells=("zzz",))}).table_specs()


def test_window_collate_pads_sources_of_different_sizes() -> None:
    import torch

    from benchmark.collate import window_collate

    def src(h: int, w: int) -> dict:
        return {"values": torch.ones(2, h, w), "landmask": torch.zeros(h, w), "dt": torch.tensor(1.0), "avail": torch.tensor(True)}

    batch = window_collate([
        {"sources": {"a": src(3, 4), "b": src(2, 2)}, "target": "a", "id": "x"},
        {"sources": {"a": src(5, 2)}, "target": "a", "id": "y"},
    ])
    a, b = batch["sources"]["a"], batch["sources"]["b"]
    assert a["values"].shape == (2, 2, 5, 4) and torch.isnan(a["values"][0, :, 3:]).all() and torch.isnan(a["values"][1, :, :, 2:]).all()
    assert b["avail"].tolist() == [True, False] and torch.isnan(b["values"][1]).all()
    assert batch["target"] == ["a", "a"] and batch["id"] == ["x", "y"]


def test_comparisons_against_a_floor_entry_are_rendered_in_table_units(tmp_path: Path) -> None:
    runner.run(SEG, [LINEAR, "pixel_rf"], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    task = registry.load_task(SEG)
    task.spec = dataclasses.replace(task.spec, comparisons=(PairedComparison("vs floor", "radar-100", "radar-100", b_entry="pixel_linear"),))
    hidden = tables.render(task, tmp_path, "smoke")  # a plugin is not mixed into the suite's tables unless asked
    assert "Not shown: records of third-party entries pixel_linear" in hidden and "| pixel_linear" not in hidden
    rows = [line for line in tables.render(task, tmp_path, "smoke", include=["pixel_linear"]).splitlines() if line.startswith("| vs floor")]
    assert len(rows) == 1 and "pixel_rf/radar-100" in rows[0] and "pixel_linear/radar-100" in rows[0]  # never the floor vs itself
    r = compare_jobs(task, tmp_path, "smoke", "pixel_rf/radar-100", "pixel_linear/radar-100").result
    assert f"{100 * r.estimate:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}]" in rows[0]  # mIoU in points, as the tables
