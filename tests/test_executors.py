"""The job grid: plan as data, --list-jobs / --job-index, and executors that give the same records
as one job after another (processes on this machine; Slurm through submitit's local executor)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import runner
from benchmark.cli import main
from benchmark.executors import ProcessesExecutor, SlurmConfig, SlurmExecutor
from benchmark.plan import RunOptions, make_plan
from benchmark.results import ResultStore

SEG = "tests.plugins.toy_entries:SegTask"
ENTRIES = ["tests.plugins.cheat_entries:HonestCentroid", "examples/minimal_entry.py:PixelLinear"]


def _records(results: Path) -> dict[str, tuple[dict, np.ndarray]]:
    store = ResultStore(results)
    return {f"{r['entry']['name']}/{r['cell']['name']}/{r['seed']}": (r["metrics"], store.load_stats(r)["confusion"])
            for r in store.records("mock_segmentation", "smoke")}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    out = tmp_path_factory.mktemp("sequential")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the processes executor gives each of its 2 workers 1 thread on 2 cores
    try:
        runner.run(SEG, ENTRIES, profile="smoke", results_dir=out, show_progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return out


def _same(a: Path, b: Path) -> None:
    ra, rb = _records(a), _records(b)
    assert set(ra) == set(rb) and len(ra) == 8
    for key in ra:
        assert ra[key][0] == rb[key][0], key
        assert np.array_equal(ra[key][1], rb[key][1]), key


def test_processes_executor_gives_the_sequential_records(sequential: Path, tmp_path: Path) -> None:
    summaries = runner.run(SEG, ENTRIES, profile="smoke", results_dir=tmp_path, show_progress=False, device="cpu",
                           executor=ProcessesExecutor(workers=2, threads=1))
    assert [s.status for s in summaries] == ["ok"] * 8
    _same(sequential, tmp_path)
    again = runner.run(SEG, ENTRIES, profile="smoke", results_dir=tmp_path, resume=True, show_progress=False, device="cpu",
                       executor=ProcessesExecutor(workers=2, threads=1))
    assert [s.status for s in again] == ["skipped"] * 8  # --resume works across executors


def test_slurm_executor_through_submitit_local_gives_the_sequential_records(sequential: Path, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    config = SlurmConfig(cluster="local", folder=tmp_path / "slurm", time_min=20, cpus_per_job=1)
    executor = SlurmExecutor(config)
    summaries = runner.run(SEG, ENTRIES, profile="smoke", results_dir=tmp_path / "results", show_progress=False, device="cpu",
                           executor=executor, seeds=[0])
    assert [s.status for s in summaries] == ["ok"] * 8, [s.message for s in summaries]
    assert len(executor.submitted) == 8
    _same(sequential, tmp_path / "results")


def test_list_jobs_and_job_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--task", SEG, "--profile", "smoke", "--results", str(tmp_path), "--no-progress", "--entry", ENTRIES[0]]
    assert main([*args, "--list-jobs"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [j["index"] for j in plan["jobs"]] == [0, 1, 2, 3]
    assert len(plan["stages"]) == 1 and plan["stages"][plan["jobs"][0]["stage"]] == [0, 1, 2, 3]  # one pre-training, four cells
    assert main([*args, "--job-index", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("job 2: ok honest_centroid / optical-100 seed 0")
    assert [p.name for p in (tmp_path / "mock_segmentation" / "smoke" / "honest_centroid").glob("*.json")] == ["optical-100-seed0.json"]
    assert main([*args, "--job-index", "9"]) == 2
    assert "--job-index 9 is out of range: the plan has 4 job(s)" in capsys.readouterr().err


def test_plan_is_data_with_stable_indices(tmp_path: Path) -> None:
    opts = RunOptions(task=SEG, entries=ENTRIES, profile="smoke", results_dir=tmp_path, seeds=[0, 1])
    plan, _ = make_plan(opts)
    assert len(plan.jobs) == 16 and len(plan.stages()) == 4  # (entry, seed) pairs: one pre-training each
    assert [j.key.seed for j in plan.jobs] == [0] * 8 + [1] * 8
    json.dumps(plan.to_dict())


def test_slurm_config_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('[slurm]\npartition = "gpu"\ntime_min = 600\ngpus_per_job = 1\nadditional = { account = "proj" }\n')
    config = SlurmConfig.from_file(path, time_min=30)
    assert (config.partition, config.time_min, config.gpus_per_job, config.additional) == ("gpu", 30, 1, {"account": "proj"})
    path.write_text('[slurm]\npartiton = "gpu"\n')
    with pytest.raises(Exception, match="unknown key\\(s\\) partiton"):
        SlurmConfig.from_file(path)


# --------------------------------------------------------------------------- --executor auto
@pytest.fixture()
def cores(monkeypatch: pytest.MonkeyPatch):
    """Set the free cores and visible GPUs ``auto_choice`` sees."""
    import benchmark.environment as environment
    import benchmark.executors as executors

    def set_(free: int, gpus: int = 0) -> None:
        monkeypatch.setattr(environment, "free_cores", lambda: (free, f"{free} free core(s)"))
        monkeypatch.setattr(executors, "visible_gpus", lambda: [str(i) for i in range(gpus)])
        monkeypatch.setattr(executors, "_cuda_available", lambda: gpus > 0)
    return set_


@pytest.mark.parametrize(("free", "threads", "profile", "expected"), [
    (2, None, "mini", ("processes", 2, 1)),  # a 2-core CPU: two one-thread jobs at once
    (1, None, "mini", ("local", 1, 1)),  # one free core: one job at a time, on it
    (4, 2, "mini", ("processes", 2, 2)),  # --threads 2 on 4 free cores: two jobs of two threads
    (2, 2, "mini", ("local", 1, 2)),  # --threads 2 on 2 free cores: one job at a time
    (32, None, "smoke", ("processes", 8, 4)),  # many cores: at most 8 jobs, the rest as threads
    (16, None, "paper", ("local", 1, None)),  # paper on CPU: one job needs the machine
])
def test_auto_executor_on_cpu(cores, free: int, threads: int | None, profile: str, expected: tuple) -> None:
    from benchmark.executors import auto_choice

    cores(free)
    choice = auto_choice("cpu", threads, profile, in_process=False)
    assert (choice.executor, choice.workers, choice.threads) == expected
    assert auto_choice("auto", threads, profile, in_process=False).executor == expected[0]  # no GPU: the CPU
    cores(free, gpus=2)  # GPUs on the machine change nothing when the run asks for the CPU
    assert auto_choice("cpu", threads, profile, in_process=False).executor == expected[0]


def test_auto_executor_on_gpus_and_in_process(cores, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.executors import auto_choice

    cores(16, gpus=4)
    for device in (None, "auto", "cuda"):  # "auto" is the CLI's default --device
        choice = auto_choice(device, None, "paper", False)
        assert (choice.executor, choice.workers) == ("processes", 4), device
    assert auto_choice("cuda:1", None, "paper", False).executor == "local"  # one named device
    cores(16, gpus=1)
    assert auto_choice("auto", None, "mini", False).executor == "local"  # one GPU: never 8 jobs on it
    cores(16)
    assert auto_choice("cpu", None, "mini", in_process=True).executor == "local"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert auto_choice("cpu", None, "mini", False).executor == "local"  # under torchrun every rank runs the jobs in turn


def test_auto_executor_records_one_thread_per_job_and_the_reason(cores, sequential: Path, tmp_path: Path) -> None:
    """The default run on a 2-core machine: two jobs at once, one thread each, and the records say so;
    the records equal the sequential one-thread records."""
    cores(2)
    out = tmp_path / "auto"
    assert main(["run", "--task", SEG, "--entry", ENTRIES[0], "--profile", "smoke", "--device", "cpu",
                 "--results", str(out), "--no-progress"]) == 0
    records = list(ResultStore(out).records("mock_segmentation", "smoke"))
    assert records and all(r["environment"]["torch_threads"] == 1 for r in records)
    assert all(r["execution"]["threads_source"].startswith("auto: 2 free core(s), 2 jobs at once") for r in records)
    got, want = _records(out), _records(sequential)
    assert got and set(got) <= set(want)
    for key, (metrics, confusion) in got.items():
        assert metrics == want[key][0] and np.array_equal(confusion, want[key][1])


def test_auto_executor_leaves_list_jobs_and_job_index_one_local_job(cores) -> None:
    """``--job-index I`` runs one job in this process (an array task's): it keeps every core it was given."""
    import argparse

    from benchmark.cli import resolve_auto_executor

    cores(8)
    for extra in ({"list_jobs": True, "job_index": None}, {"list_jobs": False, "job_index": 3}):
        args = argparse.Namespace(executor="auto", workers=None, threads=None, device="auto", profile="mini", in_process=False, **extra)
        assert resolve_auto_executor(args) is None
        assert (args.executor, args.workers, args.threads) == ("local", 1, None)
    args = argparse.Namespace(executor="auto", workers=None, threads=None, device="auto", profile="mini", in_process=False,
                              list_jobs=False, job_index=None)
    assert resolve_auto_executor(args).startswith("auto: 8 free core(s), 8 jobs at once")
    assert (args.executor, args.workers, args.threads) == ("processes", 8, 1)
