"""The harness cannot be fooled and never loses a result: cheats written as entries, jobs that exit,
crash or hang, identity of entries, superseded and failed re-runs, stray files, CLI mistakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmark import registry, runner, tables
from benchmark.check_entry import check_entry
from benchmark.cli import main
from benchmark.contracts import RunContext
from benchmark.errors import BenchmarkError
from benchmark.guard import EntryView, entry_copy
from benchmark.results import JobKey, ResultStore

SEG = "tests.plugins.toy_entries:SegTask"
REC = "tests.plugins.toy_entries:ReconTask"
CHEAT = "tests.plugins.cheat_entries"
FAIL = "tests.plugins.failing_entries"


def _main_metric(results: Path, task: str, entry: str) -> dict[str, float]:
    store = ResultStore(results)
    name = "miou" if task == "mock_segmentation" else "crps"
    return {r["cell"]["name"]: r["metrics"][name]["estimate"] for r in store.records(task, "smoke")
            if r["entry"]["name"] == entry and r["status"] == "ok"}


# --------------------------------------------------------------------------- cheats
def test_segmentation_cheats_score_exactly_what_the_honest_model_scores(tmp_path: Path) -> None:
    cheats = ["PeekLabel", "OverwriteBatch", "WalkToReader"]
    summaries = runner.run(SEG, [f"{CHEAT}:HonestCentroid", *(f"{CHEAT}:{c}" for c in cheats)], profile="smoke",
                           results_dir=tmp_path, show_progress=False, device="cpu")
    assert {s.status for s in summaries} == {"ok"}
    honest = _main_metric(tmp_path, "mock_segmentation", "honest_centroid")
    assert len(honest) == 4 and max(honest.values()) < 0.9  # far from the 1.0 a label-reading entry scored
    for name in ("cheat_peek_label", "cheat_overwrite", "cheat_walk_reader"):
        assert _main_metric(tmp_path, "mock_segmentation", name) == honest, name


def test_reconstruction_cheats_score_exactly_what_the_honest_model_scores(tmp_path: Path) -> None:
    summaries = runner.run(REC, ["tests.plugins.toy_entries:InputMeanEntry", f"{CHEAT}:ZeroTargetStd", f"{CHEAT}:ReadHiddenTarget",
                                 f"{CHEAT}:WalkToStore"], profile="smoke", results_dir=tmp_path, show_progress=False, device="cpu")
    assert {s.status for s in summaries} == {"ok"}, [s.message for s in summaries]
    honest = _main_metric(tmp_path, "mock_reconstruction", "input_mean")
    assert len(honest) == 2 and min(honest.values()) > 0.5  # in K; a target-reading entry scored 0.00
    for name in ("cheat_zero_std", "cheat_hidden_target", "cheat_walk_store"):
        assert _main_metric(tmp_path, "mock_reconstruction", name) == honest, name


def test_check_entry_fails_an_entry_that_finds_labels_on_the_heap() -> None:
    bad = check_entry(f"{CHEAT}:GcLabels")
    assert not bad.ok and "predictions follow the test labels when the harness changes them" in bad.message
    good = check_entry(f"{CHEAT}:HonestCentroid")
    assert good.ok and "hidden-truth probe passed" in good.message
    assert check_entry(f"{CHEAT}:PeekLabel").ok  # the label is simply not there any more


def test_the_job_process_never_holds_the_test_truth(tmp_path: Path) -> None:
    # heap searches find nothing in a real job's process: the harness keeps the truth and scores
    seg = runner.run(SEG, [f"{CHEAT}:GcLabels", f"{CHEAT}:TensorSubclassSpy", f"{CHEAT}:HonestCentroid"], profile="smoke",
                     results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    rec = runner.run(REC, [f"{CHEAT}:GcTargets", "tests.plugins.toy_entries:InputMeanEntry"], profile="smoke", results_dir=tmp_path,
                     cells=["win1h-all"], show_progress=False, device="cpu")
    assert {s.status for s in seg + rec} == {"ok"}, [s.message for s in seg + rec]
    honest = _main_metric(tmp_path, "mock_segmentation", "honest_centroid")
    for name in ("cheat_gc", "cheat_tensor_subclass"):
        assert _main_metric(tmp_path, "mock_segmentation", name) == honest, name
    assert _main_metric(tmp_path, "mock_reconstruction", "cheat_gc_targets") == _main_metric(tmp_path, "mock_reconstruction", "input_mean")
    assert check_entry(f"{CHEAT}:GcTargets").ok is False  # where the truth is in the process, the probe finds the cheat


def test_a_job_process_cannot_forge_its_result_or_smuggle_objects(tmp_path: Path) -> None:
    summaries = runner.run(SEG, [f"{CHEAT}:ForgeResult", f"{CHEAT}:FitLogObjects", f"{CHEAT}:HonestCentroid"], profile="smoke",
                           results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    by = {s.key.entry: s for s in summaries}
    assert by["cheat_forge"].status == "failed" and "broke the protocol" in by["cheat_forge"].message
    assert by["cheat_fit_log"].status == "failed" and by["cheat_fit_log"].message == "TypeError: not JSON: set"
    assert by["honest_centroid"].status == "ok"
    assert not list((tmp_path / "mock_segmentation" / "smoke" / "cheat_forge").glob("*.npz"))


def test_batches_and_views_are_copies() -> None:
    label = torch.arange(6).reshape(2, 3)
    batch = {"label": label, "x": {"v": torch.ones(2)}, "id": ["a", "b"]}
    seen = entry_copy(batch)
    seen["label"].zero_()
    seen["x"]["v"].fill_(5)
    seen["id"][0] = "z"
    assert torch.equal(label, torch.arange(6).reshape(2, 3)) and batch["x"]["v"].sum() == 2 and batch["id"] == ["a", "b"]
    items = [{"label": torch.ones(2), "x": torch.zeros(2)}]
    view = EntryView(items, hidden=("label",))
    assert set(view[0]) == {"x"} and len(view) == 1 and view[-1].keys() == {"x"}
    with pytest.raises(IndexError):
        view[1]
    public = [n for n in dir(view) if not n.startswith("_") and n not in dir(torch.utils.data.Dataset)]
    assert public == ["epoch_seeded"] and view.epoch_seeded is False  # a bool for fit's keyed sampler, no path to data


def _reachable(root: Any, depth: int = 6) -> list[Any]:
    """Everything reachable from ``root`` through public attributes, mapping values and sequence items."""
    seen, out, frontier = {id(root)}, [], [root]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            children: list[Any] = []
            if isinstance(obj, dict):
                children += list(obj.values())
            elif isinstance(obj, (list, tuple)):
                children += list(obj[:50])
            elif not isinstance(obj, (str, bytes, int, float, torch.Tensor, np.ndarray)):
                for name in dir(obj):
                    if not name.startswith("_"):
                        try:
                            children.append(getattr(obj, name))
                        except Exception:  # noqa: BLE001
                            pass
            for c in children:
                if id(c) not in seen and not callable(c) or isinstance(c, torch.utils.data.Dataset):
                    if id(c) in seen:
                        continue
                    seen.add(id(c))
                    out.append(c)
                    nxt.append(c)
        frontier = nxt
    return out


@pytest.mark.parametrize("task_name", ["pastis_r", "africa_crop_type", "tc_primed"])
def test_no_reader_store_or_path_is_reachable_from_what_entries_get(task_name: str, tmp_path: Path) -> None:
    task = registry.load_task(task_name)
    data, identity = task.resolve_data(None, "smoke")
    root = str(Path(identity.root).parent)
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams={}, checkpoint_dir=tmp_path)
    views: list[Any] = []
    for cell in task.spec.cells[:4]:
        if task.spec.family == "segmentation":
            views += [EntryView(task.unlabeled(data, cell, ctx), hidden=("label",)), EntryView(task.labeled(data, "train", cell, ctx))]
        else:
            views += [EntryView(task.windows(data, "train", cell, ctx)), EntryView(task.windows(data, "val", cell, ctx))]
    for view in views:
        for obj in _reachable(view) + _reachable(view[0]):
            assert not isinstance(obj, Path), f"a path is reachable from {view!r}: {obj}"
            assert not (isinstance(obj, str) and root in obj), f"the data folder is reachable from {view!r}: {obj}"
            assert not isinstance(obj, torch.utils.data.Dataset), f"a dataset is reachable from {view!r}: {type(obj).__name__}"
            assert type(obj).__name__ not in ("Store", "DataFrame"), f"{type(obj).__name__} reachable from {view!r}"
    if task.spec.family == "segmentation":
        unlabeled = EntryView(task.unlabeled(data, task.spec.cells[0], ctx), hidden=("label",))
        assert "label" not in unlabeled[0]
        ten = next(c for c in task.spec.cells if c.params.get("label_fraction") == 0.1)
        assert len(EntryView(task.labeled(data, "train", ten, ctx))) < len(data.split_ids["train"])


def test_a_job_that_edits_other_records_fails_and_they_are_restored(tmp_path: Path) -> None:
    runner.run(SEG, [f"{CHEAT}:HonestCentroid"], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    base = tmp_path / "mock_segmentation" / "smoke"
    before = {p: p.read_bytes() for p in base.glob("honest_centroid/*") if p.is_file()}
    summary = runner.run(SEG, [f"{FAIL}:TampersEntry"], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")[0]
    assert summary.status == "failed" and "changed 3 file(s) of the results folder" in summary.message
    assert {p: p.read_bytes() for p in base.glob("honest_centroid/*") if p.is_file()} == before
    assert len(list((base / "_quarantine").rglob("optical-100-seed0.json"))) == 1


# --------------------------------------------------------------------------- identity
def test_a_file_entry_cannot_claim_a_registered_name(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="claims the name 'unet3d_scratch', which is registered by entry point unet3d_scratch"):
        runner.run("pastis_r", [f"{FAIL}:ClaimsFloor"], profile="smoke", results_dir=tmp_path)
    assert registry.resolve_entry("reference_models.s4:UNet3DScratch").name == "unet3d_scratch"  # the real class may be given by path


def test_an_entry_cannot_swap_the_class_a_registered_name_loads(tmp_path: Path) -> None:
    import reference_models.s4 as s4
    from tests.plugins.failing_entries import ClaimsFloor

    real = registry.resolve_entry("unet3d_scratch").cls
    s4.UNet3DScratch = ClaimsFloor  # what an imported plugin module could do
    try:
        for spec in ("unet3d_scratch", "reference_models.s4:UNet3DScratch", f"{FAIL}:ClaimsFloor"):
            with pytest.raises(BenchmarkError, match="something replaced it|claims the name"):
                registry.resolve_entry(spec)
    finally:
        s4.UNet3DScratch = real
    assert registry.resolve_entry("unet3d_scratch").cls is real


def test_two_entries_with_one_name_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path), "--entry", f"{CHEAT}:HonestCentroid",
                 "--entry", "tests/plugins/cheat_entries.py:HonestCentroid"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: two entries are named 'honest_centroid': module tests.plugins.cheat_entries and file ")
    assert len(err.splitlines()) == 1


def test_a_failed_rerun_never_replaces_an_ok_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = dict(profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    first = runner.run(SEG, [f"{FAIL}:FlakyEntry"], **args)
    assert first[0].status == "ok"
    key = JobKey("mock_segmentation", "smoke", "flaky", "radar-100", 0)
    store = ResultStore(tmp_path)
    good = json.loads(store.record_path(key).read_text())
    monkeypatch.setenv("FLAKY_FAIL", "1")  # children take the harness's current environment
    again = runner.run(SEG, [f"{FAIL}:FlakyEntry"], **args)
    assert again[0].status == "failed" and "flaky failure" in again[0].message and "stays current" in again[0].message
    assert json.loads(store.record_path(key).read_text()) == good
    failed = list(store.attempts_dir(key).glob("*.failed.json"))
    assert len(failed) == 1 and json.loads(failed[0].read_text())["status"] == "failed"
    monkeypatch.delenv("FLAKY_FAIL")
    third = runner.run(SEG, [f"{FAIL}:FlakyEntry"], **args)
    assert third[0].status == "ok" and "kept in" in third[0].message
    kept = list(store.attempts_dir(key).glob("*.superseded.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["finished"] == good["finished"]
    assert kept[0].with_suffix(".npz").is_file()
    assert len(list(store.records("mock_segmentation", "smoke"))) == 1  # attempts are never read as records


# --------------------------------------------------------------------------- isolation
def test_exits_crashes_interrupts_and_hangs_end_their_job_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = [f"{FAIL}:{n}" for n in ("ExitsEntry", "InterruptsEntry", "CrashesEntry", "HardExitEntry", "HangsEntry")]
    code = main(["run", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path), "--cell", "radar-100", "--no-progress",
                 "--job-timeout", "20", *sum((["--entry", e] for e in entries), []), "--entry", f"{CHEAT}:HonestCentroid"])
    captured = capsys.readouterr()
    assert code == 1
    errors = {r["entry"]["name"]: r.get("error", "") for r in ResultStore(tmp_path).records("mock_segmentation", "smoke")}
    assert errors["exits"] == "SystemExit: the entry called sys.exit(0)"
    assert errors["interrupts"].startswith("KeyboardInterrupt raised inside the job")
    assert "killed by SIGSEGV" in errors["crashes"]
    assert "exited with status 0 before reporting a result" in errors["hard_exit"]
    assert errors["hangs"].startswith("timed out after 20 s")
    assert errors["honest_centroid"] == ""  # the job after all of them ran
    table = (tmp_path / "mock_segmentation" / "smoke" / "TABLES.md").read_text()
    assert "FAILED hangs / radar-100 seed 0: timed out" in table and "honest_centroid" in table
    assert "jobs: 1 ok, 0 skipped (resume), 5 failed" in captured.out


def test_a_grandchild_that_escapes_the_job_is_killed_with_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmark", "run", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path),
                           "--cell", "radar-100", "--no-progress", "--job-timeout", "12", "--entry", f"{FAIL}:EscapesEntry"],
                          capture_output=True, text=True, timeout=100, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    assert done.returncode == 1 and "timed out after 12 s" in done.stderr
    assert seconds < 60, f"the run waited {seconds:.0f} s for a left-over grandchild (which lives 120 s)"
    time.sleep(2)
    lines = done.stdout.count("grandchild still here")
    assert lines >= 1  # it did run, and wrote to the harness's output


def test_a_run_whose_jobs_all_fail_writes_its_tables_and_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path), "--no-progress", "--entry", f"{FAIL}:ExitsEntry"])
    out = capsys.readouterr()
    assert code == 1 and "jobs: 0 ok, 0 skipped (resume), 4 failed" in out.out and "Traceback" not in out.err
    assert (tmp_path / "mock_segmentation" / "smoke" / "TABLES.md").read_text().count("FAILED exits") == 4


# --------------------------------------------------------------------------- stray and edited files
def test_stray_and_broken_files_are_skipped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner.run(SEG, [f"{CHEAT}:HonestCentroid"], profile="smoke", results_dir=tmp_path, show_progress=False, device="cpu")
    folder = tmp_path / "mock_segmentation" / "smoke" / "honest_centroid"
    good = json.loads((folder / "radar-100-seed0.json").read_text())
    (folder / "notes.json").write_text("{}")
    (folder / "list.json").write_text("[]")
    (folder / "null.json").write_text("null")
    (folder / "latin1.json").write_bytes(b'{"schema": 1, "x": "\xe9"}')
    (folder / "truncated.json").write_text('{"schema": 1, "status": "ok"')
    (folder / "nokey.json").write_text(json.dumps({k: v for k, v in good.items() if k != "metrics"}))
    (folder / "future.json").write_text(json.dumps({**good, "schema": 99}))
    (folder / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (folder / "seedtext.json").write_text(json.dumps({**good, "seed": "0"}))
    store = ResultStore(tmp_path)
    assert len(list(store.records("mock_segmentation", "smoke"))) == 4
    problems = " | ".join(store.skipped)
    for text in ("no 'schema' key", "JSON list", "JSON NoneType", "not UTF-8", "not valid JSON", "needs 'metrics'", "schema 99",
                 "RecursionError", "seed: Input should be a valid integer"):
        assert text in problems, text
    assert main(["table", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    # --resume treats an unreadable record at a job's path as not done, and keeps the file
    (folder / "radar-100-seed0.json").write_text("null")
    again = runner.run(SEG, [f"{CHEAT}:HonestCentroid"], profile="smoke", results_dir=tmp_path, resume=True, show_progress=False, device="cpu")
    assert [s.status for s in again].count("ok") == 1 and [s.status for s in again].count("skipped") == 3
    assert len(list((folder / "_attempts").glob("radar-100-seed0.*.unreadable.json"))) == 1


def test_statistics_are_checked_against_their_record(tmp_path: Path) -> None:
    runner.run(SEG, [f"{CHEAT}:HonestCentroid"], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    store = ResultStore(tmp_path)
    rec = next(store.records("mock_segmentation", "smoke"))
    npz = Path(rec["_path"]).with_suffix(".npz")
    stats = store.load_stats(rec)
    np.savez_compressed(npz, **{**stats, "confusion": stats["confusion"] * 2})
    with pytest.raises(BenchmarkError, match="does not match its record"):
        store.load_stats(rec)
    npz.write_bytes(b"garbage")
    with pytest.raises(BenchmarkError, match="is not a readable statistics file"):
        store.load_stats({k: v for k, v in rec.items() if k != "unit_stats_sha256"})
    text = tables.render(registry.load_task(SEG), tmp_path, "smoke")
    assert "not computed" in text and "does not match its record" in text
    np.savez_compressed(npz, **{**stats, "confusion": stats["confusion"][:, :2, :2]})
    with pytest.raises(BenchmarkError, match="'confusion' has shape"):
        store.load_stats({k: v for k, v in rec.items() if k != "unit_stats_sha256"})
    np.savez_compressed(npz, **{**stats, "unit_id": np.asarray("x")})
    with pytest.raises(BenchmarkError, match="no 1-d 'unit_id'"):
        store.load_stats({k: v for k, v in rec.items() if k != "unit_stats_sha256"})
    (Path(rec["_path"]).parent / "radar-50-seed0.json").mkdir()
    summary = runner.run(SEG, [f"{CHEAT}:HonestCentroid"], profile="smoke", results_dir=tmp_path, cells=["radar-50"], show_progress=False, device="cpu")
    assert summary[0].status == "failed" and "exists and is not a file" in summary[0].message


# --------------------------------------------------------------------------- CLI mistakes
@pytest.mark.parametrize("args, message", [
    (["--device", "mps"], "--device 'mps' is not supported"),
    (["--device", "meta"], "--device 'meta' is not supported"),
    (["--device", "tpu:0"], "invalid --device 'tpu:0'"),
    (["--seed", "-1"], "--seed must be in [0, 2^31), got -1"),
    (["--seed", str(2**40)], "--seed must be in [0, 2^31)"),
    (["--data-root", "README.md"], "--data-root README.md is a file, not a folder"),
    (["--results", "README.md"], "--results README.md is a file, not a folder"),
    (["--results", "README.md/sub"], "README.md is a file, not a folder"),
    (["--job-timeout", "-5"], "--job-timeout must be a number of seconds between 0 (none) and 10 years, got -5"),
    (["--job-timeout", "inf"], "got inf"),
    (["--job-timeout", "nan"], "got nan"),
])
def test_cli_mistakes_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--task", SEG, "--profile", "smoke", "--entry", f"{CHEAT}:HonestCentroid", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_two_current_records_for_one_job_stop_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    runner.run(SEG, [f"{CHEAT}:HonestCentroid"], profile="smoke", results_dir=tmp_path, cells=["radar-100"], show_progress=False, device="cpu")
    base = tmp_path / "mock_segmentation" / "smoke"
    shutil.copytree(base / "honest_centroid", base / "honest_centroid_copy")
    assert main(["table", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: two records for honest_centroid/radar-100 seed 0:") and "honest_centroid_copy" in err
