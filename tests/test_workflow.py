"""The daily workflow: overrides, training curves, portable and validated records, plugins, threads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmark import cli, registry, runner, tables
from benchmark.curves import CurveLog, read_curve
from benchmark.environment import auto_threads
from benchmark.errors import BenchmarkError
from benchmark.overrides import apply, load_overrides, parse_sets
from benchmark.plan import RunOptions, job_config, make_plan, portable_identity
from benchmark.results import ResultStore
from benchmark.schema import SCHEMA_VERSION, RecordError, migrate, read_record, validate

SEG = "tests.plugins.toy_entries:SegTask"
LINEAR = "examples/minimal_entry.py:PixelLinear"
RESULTS = Path(__file__).resolve().parents[1] / "results"


# --------------------------------------------------------------------------- overrides
def test_set_values_are_typed_and_nested() -> None:
    got = parse_sets(["lr=3e-4", "steps=1e3", "widths=[16,32]", "amp=false", "clip=null", "model.depth=4", "model.name=unet"])
    assert got == {"lr": 3e-4, "steps": 1000.0, "widths": [16, 32], "amp": False, "clip": None, "model": {"depth": 4, "name": "unet"}}


def test_apply_checks_keys_and_types_against_the_profile() -> None:
    profile = {"lr": 0.01, "steps": 80, "widths": [8, 16], "amp": True, "model": {"depth": 2}}
    out = apply(profile, {"lr": 1, "steps": 1e3, "widths": [4], "model": {"depth": 3}}, "e")
    assert out == {"lr": 1.0, "steps": 1000, "widths": [4], "amp": True, "model": {"depth": 3}}
    assert isinstance(out["lr"], float) and isinstance(out["steps"], int)
    assert profile["model"] == {"depth": 2}  # the profile itself is never changed
    with pytest.raises(BenchmarkError, match=r"no hyper-parameter 'lrr'; valid keys: amp, lr, model, steps, widths"):
        apply(profile, {"lrr": 1.0}, "e")
    with pytest.raises(BenchmarkError, match=r"no hyper-parameter 'model.width'; valid keys under model: depth"):
        apply(profile, {"model": {"width": 3}}, "e")
    with pytest.raises(BenchmarkError, match="steps is int"):
        apply(profile, {"steps": 2.5}, "e")
    with pytest.raises(BenchmarkError, match="amp is bool"):
        apply(profile, {"amp": 1}, "e")


def test_config_files_yaml_and_toml_with_per_entry_tables(tmp_path: Path) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text("lr: 0.001\nentries:\n  pixel_linear:\n    steps: 5\n")
    toml = tmp_path / "c.toml"
    toml.write_text("lr = 0.001\n[entries.pixel_linear]\nsteps = 5\n")
    for path in (yaml, toml):
        ovr = load_overrides(["lr=2e-3"], path)
        assert ovr.for_entry("pixel_linear") == {"lr": 2e-3, "steps": 5} and ovr.for_entry("other") == {"lr": 2e-3}
        assert ovr.sources == (f"config {path}", "--set lr=2e-3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(BenchmarkError, match=f"config file {bad} cannot be read"):
        load_overrides((), bad)
    with pytest.raises(BenchmarkError, match="unknown format '.json'"):
        (tmp_path / "c.json").write_text("{}")
        load_overrides((), tmp_path / "c.json")
    with pytest.raises(BenchmarkError, match="expected KEY=VALUE"):
        parse_sets(["lr"])


def _plan(tmp_path: Path, **kw: object):
    opts = RunOptions(task=SEG, entries=[LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"], seeds=[0],
                      show_progress=False, device="cpu", **kw)
    return make_plan(opts)[0]


def test_set_changes_the_hash_and_the_record_and_a_config_does_the_same(tmp_path: Path) -> None:
    base = _plan(tmp_path).jobs[0]
    by_set = _plan(tmp_path, overrides=load_overrides(["lr=3e-4"])).jobs[0]
    cfg = tmp_path / "lr.yaml"
    cfg.write_text("lr: 3.0e-4\n")
    by_file = _plan(tmp_path, overrides=load_overrides((), cfg)).jobs[0]
    assert base.config_hash != by_set.config_hash == by_file.config_hash
    assert base.request.checkpoint_dir != by_set.request.checkpoint_dir  # no checkpoint made under other settings is reused
    assert by_set.record["hparams"]["lr"] == 3e-4 and by_set.request.hparams["lr"] == 3e-4
    assert by_set.record["overrides"] == {"values": {"lr": 3e-4}, "sources": ["--set lr=3e-4"]}
    assert base.record["overrides"] is None


def test_unknown_key_fails_the_run_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--task", SEG, "--entry", LINEAR, "--profile", "smoke", "--results", str(tmp_path), "--set", "lrr=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: entry 'pixel_linear' has no hyper-parameter 'lrr'; valid keys: batch_size, lr, steps"]
    assert not any(tmp_path.iterdir())  # nothing ran


# --------------------------------------------------------------------------- curves
def test_each_training_stage_leaves_a_curve_referenced_from_its_record(tmp_path: Path) -> None:
    [summary] = runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"], seeds=[0], show_progress=False,
                           device="cpu", overrides=load_overrides(["steps=12"]))
    rec = read_record(summary.path)
    [(stage, info)] = rec["training"].items()
    rows = read_curve(tmp_path / info["curve"])
    assert [r["step"] for r in rows] == list(range(1, 13)) and info["steps"] == 12
    assert {"loss", "lr", "grad_norm", "samples", "elapsed_s", "samples_per_s"} <= set(rows[0])
    assert rows[-1]["samples"] == info["samples"] == 12 * 4
    code = cli.main(["curves", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path), "--format", "csv",
                     "--out", str(tmp_path / "c.csv")])
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert code == 0 and len(lines) == 13 and lines[0].startswith("entry,seed,stage,cells,step,")
    assert cli.main(["curves", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "mock_segmentation" / "smoke" / "curves-loss.png").stat().st_size > 1000


def test_a_resumed_curve_keeps_only_the_steps_up_to_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "curve.jsonl"
    log = CurveLog(path)
    log.start(0)
    for step in range(1, 8):
        log.add(step, {"loss": 1.0 / step, "lr": float("nan")})
    log.close()
    assert read_curve(path)[0]["lr"] is None  # non-finite values are written as null, never as NaN text
    log = CurveLog(path)
    log.start(4)  # the checkpoint was at step 4: steps 5-7 are redone
    log.add(5, {"loss": 0.5})
    log.close()
    assert [r["step"] for r in read_curve(path)] == [1, 2, 3, 4, 5]
    with path.open("a") as fh:
        fh.write('{"step": 6, "lo')  # a run killed mid-line
    assert [r["step"] for r in read_curve(path)] == [1, 2, 3, 4, 5]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_curve(path)


# --------------------------------------------------------------------------- portable records
def test_the_data_hash_leaves_the_path_out() -> None:
    task = registry.load_task(SEG)
    spec, cell = task.spec, task.spec.cells[0]
    cls = registry.load_entry(LINEAR)
    a = {"kind": "synthetic", "root": "/a", "checksum": "x", "generator_version": "1", "seed": 0}
    b = {**a, "root": "/elsewhere/b"}
    assert portable_identity(a) == portable_identity(b)
    assert job_config(spec, cell, cls, "smoke", 0, {}, a) == job_config(spec, cell, cls, "smoke", 0, {}, b)
    assert job_config(spec, cell, cls, "smoke", 0, {}, a) != job_config(spec, cell, cls, "smoke", 0, {}, {**a, "checksum": "y"})


@pytest.mark.slow
def test_resume_on_a_copy_of_the_data_at_another_path_skips_finished_jobs(tmp_path: Path) -> None:
    first, copy, results = tmp_path / "data", tmp_path / "moved" / "data", tmp_path / "results"
    opts = {"profile": "smoke", "results_dir": results, "cells": ["radar-100"], "seeds": [0], "show_progress": False, "device": "cpu"}
    [done] = runner.run("pastis_r", ["pixel_rf"], data_root=first, **opts)
    assert done.status == "ok"
    shutil.copytree(first, copy)
    shutil.rmtree(first)
    plan, _ = make_plan(RunOptions(task="pastis_r", entries=["pixel_rf"], data_root=copy, resume=True, **opts))
    assert [j.key for j in plan.jobs] == [done.key] and plan.done == {done.key}
    [again] = runner.run("pastis_r", ["pixel_rf"], data_root=copy, resume=True, **opts)
    assert again.status == "skipped"


def test_records_carry_where_and_how_they_were_made(tmp_path: Path) -> None:
    code = cli.main(["run", "--task", SEG, "--entry", LINEAR, "--profile", "smoke", "--results", str(tmp_path), "--cell", "radar-100",
                     "--seed", "0", "--no-progress", "--set", "steps=3"])
    assert code == 0
    rec = json.loads((tmp_path / "mock_segmentation/smoke/pixel_linear/radar-100-seed0.json").read_text())
    assert rec["schema"] == SCHEMA_VERSION == 4 and rec["execution"]["world_size"] == 1
    assert rec["command"].startswith("python -m benchmark run --task ") and rec["command"].endswith("--set steps=3")
    env = rec["environment"]
    assert {"cpu_model", "cuda", "cudnn", "gpus", "world_size", "load_avg_1m", "usable_cores", "hostname"} <= set(env)
    assert env["cpu_model"] not in ("x86_64", "") and env["world_size"] == 1
    assert rec["execution"]["threads_source"].startswith("auto: ") and env["torch_threads"] >= 1
    src = rec["entry_source"]
    assert src["third_party"] is True and src["distribution"] is None  # a file spec belongs to no distribution
    assert registry.resolve_entry("pixel_rf").provenance()["distribution"] == registry.own_distribution()


def test_every_committed_record_validates_against_the_schema() -> None:
    paths = sorted(p for p in RESULTS.glob("*/*/*/*.json"))
    assert len(paths) > 100
    for path in paths:
        rec = read_record(path)  # raises RecordError naming the problem
        assert rec["schema"] == SCHEMA_VERSION


def test_schema_1_and_2_records_are_migrated_without_guessing() -> None:
    v1 = {"schema": 1, "status": "ok", "task": {"name": "t", "version": "1", "family": "segmentation"}, "cell": {"name": "c"},
          "entry": {"name": "e", "version": "1", "family": "segmentation"}, "profile": "mini", "seed": 0, "config_hash": "abc",
          "data": {"kind": "synthetic"}, "metrics": {"miou": {"estimate": 0.5}}, "unit_stats_file": "c-seed0.npz",
          "extra": {"fit_log": {"finetune": {"steps": 10, "samples": 80, "seconds": 1.5, "resumed_from": 0}}}}
    out = migrate(v1)
    validate(out)
    assert out["schema"] == SCHEMA_VERSION and out["migrated_from"] == 1 and v1["schema"] == 1
    assert out["entry_source"]["source"] == "unknown (schema-1 record)" and out["execution"]["isolation"] == "unknown"
    assert out["training"]["finetune"] == {"steps": 10, "samples": 80, "seconds": 1.5, "resumed_from": 0, "curve": None,
                                           "world_size": None, "micro_batch_size": None, "accumulate": None, "global_batch_size": None}
    assert out["environment"] == {"git_sha": "unknown"} and out["command"] is None
    with pytest.raises(RecordError, match="needs 'training' and 'environment'"):
        validate({**out, "training": None})


def test_an_invalid_record_is_never_written(tmp_path: Path) -> None:
    from benchmark.results import JobKey

    store = ResultStore(tmp_path)
    key = JobKey("t", "smoke", "e", "c", 0)
    good = {"schema": 3, "status": "failed", "error": "x", "task": {"name": "t", "version": "1", "family": "segmentation"},
            "cell": {"name": "c"}, "entry": {"name": "e", "version": "1", "family": "segmentation"}, "profile": "smoke", "seed": 0,
            "config_hash": "abc", "data": {"kind": "synthetic"}, "entry_source": {"spec": "e", "source": "s", "registered": False},
            "execution": {"isolation": "process"}}
    validate(good)
    with pytest.raises(BenchmarkError, match="was not written: it does not match the record schema: seed"):
        store.write(key, {**good, "seed": "0"}, None)
    assert not any(tmp_path.rglob("*.json"))


def test_tables_flag_mixed_commits_and_threads(tmp_path: Path) -> None:
    runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"], seeds=[0, 1], show_progress=False, device="cpu",
               overrides=load_overrides(["steps=3"]))
    path = tmp_path / "mock_segmentation/smoke/pixel_linear/radar-100-seed1.json"
    rec = json.loads(path.read_text())
    rec["environment"] = {**rec["environment"], "git_sha": "0123abc", "torch_threads": 7}
    path.write_text(json.dumps(rec))
    text = tables.render(registry.load_task(SEG), tmp_path, "smoke")
    assert "MIXED PROVENANCE (commit)" in text and "pixel_linear/radar-100 seed 1 (0123abc)" in text
    assert "MIXED PROVENANCE (torch threads)" in text and "seed 1 (7)" in text


# --------------------------------------------------------------------------- plugins and threads
def test_a_broken_entry_point_is_listed_and_skipped(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from importlib.metadata import EntryPoint

    good = dict(registry._group(registry.ENTRY_GROUP))
    broken = EntryPoint("broken_plugin", "no_such_module_xyz:Entry", registry.ENTRY_GROUP)
    monkeypatch.setattr(registry, "_group", lambda group: {**good, "broken_plugin": broken} if group == registry.ENTRY_GROUP else {})
    names = registry.entries_of_family("segmentation")
    assert "broken_plugin" not in names and "pixel_rf" in names
    assert any("skipping entry 'broken_plugin'" in r.getMessage() and "ModuleNotFoundError" in r.getMessage() for r in caplog.records)
    assert cli.cmd_list() == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("broken_plugin"))
    assert "BROKEN, skipped by run: ModuleNotFoundError" in line


def test_auto_threads_leaves_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import environment

    monkeypatch.setattr(environment, "usable_cores", lambda: 8)
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(environment, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(environment, "busy_cores", lambda: 3.2)
    assert auto_threads(1) == (5, "auto: 8 usable core(s), 3.2 busy, 1 job(s) at once")
    assert auto_threads(2)[0] == 2
    monkeypatch.setattr(environment, "busy_cores", lambda: 12.0)
    assert auto_threads(1)[0] == 1
    # without /proc/stat: the 1-minute load average
    monkeypatch.setattr(environment, "busy_cores", lambda: None)
    monkeypatch.setattr(environment, "load_average", lambda: 3.2)
    assert auto_threads(1) == (5, "auto: 8 usable core(s), load 3.2, 1 job(s) at once")


def test_a_cgroup_cpu_quota_bounds_the_free_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside ``docker --cpus=2.5`` on a 64-core host the machine-wide idle cores are not ours."""
    from benchmark import environment

    cpu_max = tmp_path / "cpu.max"
    for text, expected in (("250000 100000\n", 3), ("50000 100000\n", 1), ("max 100000\n", None), ("garbage", None)):
        cpu_max.write_text(text)
        assert environment.cgroup_cpu_quota(cpu_max) == expected, text
    assert environment.cgroup_cpu_quota(tmp_path / "missing") is None
    monkeypatch.setattr(environment, "usable_cores", lambda: 64)
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(environment, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(environment, "cgroup_cpu_quota", lambda: 3)
    assert environment.free_cores() == (3, "3 of 64 cores (cgroup CPU quota)")
    monkeypatch.setattr(environment, "cgroup_cpu_quota", lambda: None)
    assert environment.free_cores()[0] == 64


def test_busy_cores_sees_work_now_not_a_minute_ago() -> None:
    """A core kept busy during the sample counts; the 1-minute load average would still count a
    run that ended seconds ago (and did make a run started right after another take one core)."""
    import threading

    from benchmark import environment

    if environment.busy_cores(0.05) is None:
        pytest.skip("no /proc/stat here")
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        busy = environment.busy_cores(0.5)
    finally:
        stop.set()
        worker.join()
    assert busy is not None and 0.7 <= busy <= (environment.os.cpu_count() or 1)


# --------------------------------------------------------------------------- found by review
def test_set_applies_last_even_over_a_config_entry_table(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.001\nentries:\n  pixel_linear:\n    lr: 0.1\n")
    assert load_overrides(["lr=0.5"], cfg).for_entry("pixel_linear") == {"lr": 0.5}
    assert load_overrides((), cfg).for_entry("pixel_linear") == {"lr": 0.1}


def test_a_key_for_every_entry_changes_those_that_declare_it() -> None:
    from benchmark.overrides import check_keys

    declared = {"a": {"lr": 0.1, "steps": 3}, "b": {"trees": 10}}
    ovr = load_overrides(["lr=0.2"])
    assert check_keys(ovr, declared) == ["'lr' changes a; left alone (not a key of theirs): b"]
    assert ovr.for_entry("a", declared["a"]) == {"lr": 0.2} and ovr.for_entry("b", declared["b"]) == {}
    with pytest.raises(BenchmarkError, match=r"no entry of this run \(a, b\) has a hyper-parameter 'lrr'; the keys they declare: lr, steps, trees"):
        check_keys(load_overrides(["lrr=1"]), declared)
    with pytest.raises(BenchmarkError, match="must be a finite number"):
        apply({"lr": 0.1}, parse_sets(["lr=.nan"]), "a")


def test_tables_say_when_seeds_differ_in_hyper_parameters_or_were_overridden(tmp_path: Path) -> None:
    common = {"profile": "smoke", "results_dir": tmp_path, "cells": ["radar-100"], "show_progress": False, "device": "cpu"}
    runner.run(SEG, [LINEAR], seeds=[0], overrides=load_overrides(["steps=3", "lr=0.01"]), **common)
    runner.run(SEG, [LINEAR], seeds=[1], overrides=load_overrides(["steps=3"]), **common)
    text = tables.render(registry.load_task(SEG), tmp_path, "smoke")
    assert "MIXED HYPER-PARAMETERS: pixel_linear/radar-100 averages seeds [0, 1] trained with different values of lr" in text
    assert "OVERRIDDEN HYPER-PARAMETERS" in text and "pixel_linear/radar-100 seed 0: lr=0.01, steps=3" in text


def test_the_job_process_cannot_forge_the_harness_facts_or_break_the_tables() -> None:
    from benchmark.environment import git_revision
    from benchmark.runner import job_environment
    from benchmark.tables import _provenance_notes

    env = job_environment("cpu", {"git_sha": "0000000", "hostname": ["x"], "versions": {}, "torch_threads": 3, "gpus": ["A", 7]})
    assert env["git_sha"] == git_revision() and env["hostname"] != ["x"] and env["torch_threads"] == 3 and env["gpus"] == []
    recs = [{"entry": {"name": "e"}, "cell": {"name": "c"}, "seed": s, "environment": {"hostname": h}} for s, h in ((0, ["x"]), (1, {"a": 1}))]
    assert any("MIXED PROVENANCE (host)" in n for n in _provenance_notes(recs))  # unhashable values from old records: no crash


def test_a_malformed_old_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "t" / "mini" / "e"
    folder.mkdir(parents=True)
    rec = {"schema": 1, "status": "ok", "task": {"name": "t", "version": "1", "family": "segmentation"}, "cell": {"name": "c"},
           "entry": {"name": "e", "version": "1", "family": "segmentation"}, "profile": "mini", "seed": 0, "config_hash": "abc",
           "data": {"kind": "synthetic"}, "metrics": {"miou": {"estimate": 0.5}}, "unit_stats_file": "c-seed0.npz",
           "extra": {"fit_log": {"pretrain": {"steps": None}}}}
    (folder / "c-seed0.json").write_text(json.dumps(rec))
    store = ResultStore(tmp_path)
    assert list(store.records("t")) == [] and "cannot be migrated" in store.skipped[0]


def test_a_file_entry_cannot_pass_for_a_suite_entry(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    examples = str(Path(__file__).resolve().parents[1] / "examples")
    sneaky.write_text(f"import sys\nsys.path.insert(0, {examples!r})\nfrom minimal_entry import PixelLinear\n\n"
                      "class Sneaky(PixelLinear):\n    __module__ = 'baselines.sneaky'\n")
    prov = registry.resolve_entry(f"{sneaky}:Sneaky").provenance()
    assert prov["third_party"] is True and prov["distribution"] is None


def test_a_plugin_registering_a_suite_name_does_not_replace_it(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from importlib.metadata import EntryPoint

    real = list(registry.entry_points(group=registry.ENTRY_GROUP))
    shadow = EntryPoint("unet3d_scratch", "goodplug:Shadow", registry.ENTRY_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [shadow, *real] if group == registry.ENTRY_GROUP else [])
    registry._group.cache_clear()
    try:
        assert registry._group(registry.ENTRY_GROUP)["unet3d_scratch"].value == "reference_models.s4:UNet3DScratch"
        assert any("'unet3d_scratch' is registered twice" in r.getMessage() and "ignoring entry point unet3d_scratch = goodplug:Shadow"
                   in r.getMessage() for r in caplog.records)
    finally:
        registry._group.cache_clear()


def test_curves_are_never_read_or_written_through_links(tmp_path: Path) -> None:
    from benchmark.curve_plot import curves_command

    [summary] = runner.run(SEG, [LINEAR], profile="smoke", results_dir=tmp_path, cells=["radar-100"], seeds=[0], show_progress=False,
                           device="cpu", overrides=load_overrides(["steps=4"]))
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    target = outside / "planted.png"
    link = tmp_path / "mock_segmentation" / "smoke" / "curves-loss.png"
    link.symlink_to(target)  # dangling link planted where the PNG goes
    curves_command(tmp_path, "mock_segmentation", "smoke", entries=None, cells=None, seed=None, fmt="png", out=None, key="loss", smooth=1)
    assert not target.exists() and link.is_file() and not link.is_symlink()
    rec = read_record(summary.path)
    curve = tmp_path / next(iter(rec["training"].values()))["curve"]
    secret = outside / "secret.jsonl"
    secret.write_text('{"step": 1, "loss": 42}\n')
    curve.unlink()
    curve.symlink_to(secret)
    with pytest.raises(BenchmarkError, match="is a link or lies outside"):
        curves_command(tmp_path, "mock_segmentation", "smoke", entries=None, cells=None, seed=None, fmt="csv", out=None, key="loss", smooth=1)


def test_a_resumed_curve_continues_its_sample_and_time_totals(tmp_path: Path) -> None:
    path = tmp_path / "curve.jsonl"
    log = CurveLog(path)
    log.start(0)
    for step in (1, 2, 3):
        log.add(step, {"loss": 1.0, "samples": 4.0 * step, "elapsed_s": float(step)})
    log.close()
    log = CurveLog(path)
    log.start(2)
    log.add(3, {"loss": 1.0, "samples": 4.0, "elapsed_s": 0.5})  # fit counts from 0 again after a resume
    log.close()
    assert [(r["samples"], r["elapsed_s"]) for r in read_curve(path)] == [(4.0, 1.0), (8.0, 2.0), (12.0, 2.5)]


def test_auto_threads_uses_every_core_of_a_confined_job(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import environment

    monkeypatch.setattr(environment, "usable_cores", lambda: 4)
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(environment, "load_average", lambda: 60.0)
    assert auto_threads(1) == (4, "auto: 4 of 64 cores (confined), 1 job(s) at once")


def test_run_replaces_a_link_planted_where_its_tables_go(tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    folder = tmp_path / "mock_segmentation" / "smoke"
    folder.mkdir(parents=True)
    (folder / "TABLES.md").symlink_to(outside / "TABLES.md")
    code = cli.main(["run", "--task", SEG, "--entry", LINEAR, "--profile", "smoke", "--results", str(tmp_path), "--cell", "radar-100",
                     "--seed", "0", "--no-progress", "--set", "steps=2"])
    assert code == 0 and not (outside / "TABLES.md").exists()
    assert not (folder / "TABLES.md").is_symlink() and "pixel_linear" in (folder / "TABLES.md").read_text()
