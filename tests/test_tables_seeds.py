"""Tables aggregate every seed, flag degenerate predictors and fail undefined metrics."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from benchmark import registry, runner, tables
from benchmark.aggregate import StatsCache, group_jobs, summarize
from benchmark.contracts import DEFAULT_SEEDS
from benchmark.errors import BenchmarkError
from benchmark.results import ResultStore

SEG = "tests.plugins.toy_entries:SegTask"
REC = "tests.plugins.toy_entries:ReconTask"
LINEAR = "examples/minimal_entry.py:PixelLinear"


def _csv(task: str, results: Path, fmt: str = "csv") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(tables.render(registry.load_task(task), results, "smoke", fmt=fmt))))


def test_default_seeds_per_profile() -> None:
    spec = registry.load_task("pastis_r").spec
    assert DEFAULT_SEEDS == {"smoke": 1, "mini": 3, "paper": 3}
    assert spec.default_seeds("mini") == [0, 1, 2] and spec.default_seeds("paper") == [0, 1, 2] and spec.default_seeds("smoke") == [0]


def test_two_seeds_render_one_aggregated_row(tmp_path: Path) -> None:
    summaries = runner.run(SEG, [LINEAR], profile="smoke", seeds=[0, 1], results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    assert [s.key.seed for s in summaries] == [0, 1] and all(s.status == "ok" for s in summaries)
    recs = list(ResultStore(tmp_path).records("mock_segmentation", "smoke"))
    per_seed = [r["metrics"]["miou"]["estimate"] for r in sorted(recs, key=lambda r: r["seed"])]
    rows = [r for r in _csv(SEG, tmp_path) if r["metric"] == "miou"]
    assert len(rows) == 1  # one row per (entry, cell), never one per seed
    row = rows[0]
    assert row["n_seeds"] == "2" and row["seeds"] == "0 1"
    assert float(row["estimate"]) == pytest.approx(100 * np.mean(per_seed), rel=1e-5)
    assert float(row["seed_sd"]) == pytest.approx(100 * np.std(per_seed, ddof=1), rel=1e-4)
    text = tables.render(registry.load_task(SEG), tmp_path, "smoke")
    assert "2 seeds" in text and " sd " in text
    # a third entry with one seed only: the table says its seeds differ
    runner.run(SEG, ["pixel_rf"], profile="smoke", seeds=[0], results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    text = tables.render(registry.load_task(SEG), tmp_path, "smoke", include=["*"])  # the example entry beside a suite entry
    assert "Seed sets differ" in text
    one = tables.render(registry.load_task(SEG), tmp_path, "smoke", seed=1, include=["*"])  # --seed restricts, never picks silently
    assert "pixel_rf" not in one


def test_constant_predictor_is_flagged(tmp_path: Path) -> None:
    runner.run(SEG, ["tests.plugins.toy_entries:ConstantEntry"], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    rec = next(ResultStore(tmp_path).records("mock_segmentation", "smoke"))
    assert rec["metrics"]["miou"]["flag"] == "constant (class b)"
    assert "constant (class b)" in tables.render(registry.load_task(SEG), tmp_path, "smoke")
    assert _csv(SEG, tmp_path)[0]["flag"] == "constant (class b)"


def test_deterministic_ensemble_prints_no_spread_skill(tmp_path: Path) -> None:
    runner.run(REC, ["tests.plugins.toy_entries:DeterministicEntry"], profile="smoke", results_dir=tmp_path, show_progress=False, device="cpu")
    text = tables.render(registry.load_task(REC), tmp_path, "smoke", extended=True)
    assert "– (deterministic)" in text and "0.00 [0.00, 0.00]" not in text
    assert {r["flag"] for r in _csv(REC, tmp_path) if r["metric"] == "spread_skill"} == {"deterministic"}


def test_undefined_metric_fails_the_job_with_a_reason(tmp_path: Path) -> None:
    summaries = runner.run("tests.plugins.toy_entries:VoidTestTask", [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"],
                           show_progress=False, device="cpu")
    assert summaries[0].status == "failed" and "undefined" in summaries[0].message and "ignored" in summaries[0].message


def test_mixed_class_sets_are_unified_across_seeds(tmp_path: Path) -> None:
    runner.run(SEG, [LINEAR], profile="smoke", seeds=[0, 1], results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    task = registry.load_task(SEG)
    store = ResultStore(tmp_path)
    group = group_jobs(store.records("mock_segmentation", "smoke"))[("pixel_linear", "radar-100")]
    s = summarize(task.spec, StatsCache(store), group, "miou")
    assert s.n_seeds == 2 and s.interval_unit == "patch" and s.n_units == 6 and s.low <= s.estimate <= s.high
    # seeds run on different data never share a row
    import json

    path = Path(group.records[1]["_path"])
    rec = json.loads(path.read_text())
    rec["data"]["checksum"] = "f" * 64
    path.write_text(json.dumps(rec))
    with pytest.raises(BenchmarkError, match="different data"):
        tables.render(task, tmp_path, "smoke")


def test_rescore_recomputes_metrics_and_refuses_changed_training(tmp_path: Path) -> None:
    import json

    from benchmark.rescore import rescore

    runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100", "optical-100"], show_progress=False, device="cpu")
    store = ResultStore(tmp_path)
    paths = sorted(Path(r["_path"]) for r in store.records("mock_segmentation", "smoke"))
    fresh = [json.loads(p.read_text()) for p in paths]
    # an "old-protocol" record: other metrics and hash; a second one whose training differs
    old = json.loads(paths[0].read_text())
    old["metrics"] = {"miou": {"estimate": 0.123}}
    old["config_hash"] = "0" * 16
    paths[0].write_text(json.dumps(old))
    other = json.loads(paths[1].read_text())
    other["hparams"]["lr"] = 123.0
    paths[1].write_text(json.dumps(other))
    done, skipped = rescore(SEG, "smoke", tmp_path, entries=[LINEAR])
    assert done == 1 and len(skipped) == 1 and "hyper-parameters differs" in skipped[0]
    again = json.loads(paths[0].read_text())
    assert again["metrics"]["miou"]["estimate"] == pytest.approx(fresh[0]["metrics"]["miou"]["estimate"])
    assert again["config_hash"] == fresh[0]["config_hash"] and again["rescored"]["from_config_hash"] == "0" * 16
    assert json.loads(paths[1].read_text())["hparams"]["lr"] == 123.0  # left alone


def test_alignment_keeps_the_first_order_and_refuses_duplicates_and_other_truths() -> None:
    from benchmark.aggregate import _aligned, _same_truth

    a = {"unit_id": np.array(["p10", "p2", "p3"]), "pixels": np.array([1, 2, 3])}
    b = {"unit_id": np.array(["p3", "p2", "p10", "p9"]), "pixels": np.array([3, 2, 1, 7])}
    (xa, xb), n = _aligned([a, b], "a vs b")
    assert n == 3 and xa["unit_id"].tolist() == ["p10", "p2", "p3"] and xb["pixels"].tolist() == [1, 2, 3]
    _same_truth([xa, xb], "a vs b")
    xb["pixels"] = np.array([1, 2, 4])
    with pytest.raises(BenchmarkError, match="different truths"):
        _same_truth([xa, xb], "a vs b")
    with pytest.raises(BenchmarkError, match="repeat unit ids"):
        _aligned([{"unit_id": np.array(["a", "a", "b"])}, b], "dup")


def test_rescore_keeps_a_dl_record_that_matches_its_pool(tmp_path: Path) -> None:
    """A Fig. 6a DL record's identity includes South Sudan's pool (``data.depends_on``): rescoring
    rebuilds it the way the plan does, so the record is rescored (same hash), not refused."""
    import json

    from benchmark.rescore import rescore

    data = tmp_path / "data"
    data.mkdir()
    results = tmp_path / "results"
    runner.run("pastis_r", [LINEAR], profile="smoke", results_dir=results, data_root=data, cells=["radar-10-dl"],
               show_progress=False, device="cpu")
    (path,) = [Path(r["_path"]) for r in ResultStore(results).records("pastis_r", "smoke")]
    before = json.loads(path.read_text())
    assert before["data"]["depends_on"]["africa_crop_type"]["task_version"]
    done, skipped = rescore("pastis_r", "smoke", results, data_root=data, entries=[LINEAR])
    assert (done, skipped) == (1, [])
    assert json.loads(path.read_text())["config_hash"] == before["config_hash"]
