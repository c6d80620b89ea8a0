"""The harness under torchrun: every rank trains, rank 0 alone scores, records and prints.

The end-to-end test launches ``python -m torch.distributed.run`` with two CPU ranks (gloo) on the
mock segmentation task. Each rank runs the CLI inside a wrapper that logs, through Python's audit
hooks, every file it opens for writing, renames or removes under the results folder; rank 0's
log is the positive control. The entry trains under DDP, then raises on rank 0 alone before
training its second cell, while rank 1 goes on into the training collectives: the run must stop
there on both ranks (no deadlock), with the failure recorded once by rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed as dist

from benchmark import ranks as ranks_module
from benchmark.contracts import RunContext
from benchmark.errors import BenchmarkError
from benchmark.ranks import RankEnded, Ranks, same_exit_status
from benchmark.schema import SCHEMA_VERSION, RecordError, migrate, validate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")

WRAPPER = r'''
import os, runpy, sys
results, log_path = os.path.realpath(sys.argv[1]), f"{sys.argv[2]}.rank{os.environ['RANK']}"
log = open(log_path, "w", buffering=1)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def note(event, path):
    try:
        path = os.path.realpath(os.fsdecode(path))
    except TypeError:
        return
    if path == results or path.startswith(results + os.sep):
        log.write(f"{event} {path}\n")

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (mode is None and isinstance(flags, int) and flags & WRITE_FLAGS):
            note("open", path)
    elif event == "os.rename":
        note("rename", args[1])
    elif event in ("os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link", "shutil.rmtree"):
        note(event, args[0])

sys.addaudithook(hook)
sys.path.insert(0, os.getcwd())
sys.argv = ["benchmark", *sys.argv[3:]]
runpy.run_module("benchmark", run_name="__main__", alter_sys=True)
'''


def torchrun(tmp_path: Path, *args: str, timeout: float = 240.0) -> tuple[subprocess.CompletedProcess, float]:
    wrapper = tmp_path / "audited_cli.py"
    wrapper.write_text(WRAPPER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "--monitor_interval", "0.2",
           str(wrapper), str(tmp_path / "results"), str(tmp_path / "writes"), *args]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the torchrun job did not end in {timeout:.0f} s (a rank hung); output:\n{exc.stdout}\n{exc.stderr}")
    return done, time.monotonic() - start


def test_two_ranks_train_rank_zero_records_once_and_a_rank_zero_failure_stops_both(tmp_path: Path) -> None:
    done, seconds = torchrun(tmp_path, "run", "--task", "tests.plugins.toy_entries:SegTask",
                             "--entry", "tests.plugins.rank_entries:RankZeroFailsOnOptical", "--profile", "smoke",
                             "--results", str(tmp_path / "results"), "--cell", "radar-100", "--cell", "optical-100",
                             "--cell", "optical-50", "--seed", "0", "--no-progress", "--device", "cpu")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # a failed job: exit status 1, not a hang, not a crash
    assert done.stdout.count("Table 1") == 1, output  # rank 0 alone prints the tables ...
    assert done.stdout.count("jobs: 1 ok, 0 skipped (resume), 1 failed") == 1, output  # ... and the summary
    folder = tmp_path / "results" / "mock_segmentation" / "smoke" / "rank0_fails_optical"
    assert sorted(p.name for p in folder.glob("*.json")) == ["optical-100-seed0.json", "radar-100-seed0.json"]
    assert not (folder / "_attempts").exists()  # each record written once, nothing superseded

    ok = json.loads((folder / "radar-100-seed0.json").read_text())
    assert ok["status"] == "ok" and ok["schema"] == SCHEMA_VERSION == 4
    assert ok["execution"]["world_size"] == 2 and ok["environment"]["world_size"] == 2
    stage = ok["training"]["finetune"]
    # the profile's batch of 4 is the global batch: 2 per rank and forward, no accumulation, 6 steps
    assert (stage["world_size"], stage["micro_batch_size"], stage["accumulate"], stage["global_batch_size"]) == (2, 2, 1, 4)
    assert stage["steps"] == 6 and stage["samples"] == 24

    failed = json.loads((folder / "optical-100-seed0.json").read_text())
    assert failed["status"] == "failed" and failed["execution"]["world_size"] == 2
    assert failed["error"].startswith("rank 0: RuntimeError: rank 0 failed before training (test)")
    assert not (folder / "optical-50-seed0.json").exists()  # the run stopped at the failure on every rank

    written = {rank: (tmp_path / f"writes.rank{rank}").read_text().splitlines() for rank in (0, 1)}
    assert written[1] == [], written[1]  # rank 1 wrote, renamed and removed nothing under the results folder
    renamed = [line.split(" ", 1)[1] for line in written[0] if line.startswith("rename ")]
    for name in ("radar-100-seed0.json", "optical-100-seed0.json", "TABLES.md"):  # the control: rank 0's writes are seen
        assert sum(Path(p).name == name for p in renamed) == 1, written[0]
    assert seconds < 180, seconds


# --------------------------------------------------------------------------- the ranks' messages
def two_ranks() -> tuple[Ranks, Ranks]:
    store = dist.HashStore()
    return Ranks(dist.PrefixStore("t/", store), 0, 2), Ranks(dist.PrefixStore("t/", store), 1, 2)


def test_a_rank_waiting_for_another_is_released_by_its_exit_status_or_its_deadline() -> None:
    main, other = two_ranks()
    assert main.from_main("plan", {"jobs": [1]}, 1.0) == {"jobs": [1]}  # rank 0 posts ...
    assert other.from_main("plan", {"jobs": [2]}, 1.0) == {"jobs": [1]}  # ... every other rank takes rank 0's
    main.post("job0", {"error": ""})
    assert other.wait("job0", 0, 1.0) == {"error": ""}
    assert main.posted("job1", 1) is None  # a look that does not wait
    other.post("exit", 3)  # rank 1 stopped: rank 0's wait for its part ends at once, with its status
    with pytest.raises(RankEnded) as ended:
        main.wait("job1", 1, 60.0)
    assert (ended.value.rank, ended.value.code) == (1, 3)
    start = time.monotonic()
    with pytest.raises(BenchmarkError, match="waited 0 s for rank 0's 'job9' and got nothing"):
        other.wait("job9", 0, 0.2)
    assert time.monotonic() - start < 5


def test_every_rank_exits_with_rank_zeros_status(monkeypatch: pytest.MonkeyPatch) -> None:
    main, other = two_ranks()
    monkeypatch.setattr(ranks_module, "_CURRENT", main)
    assert same_exit_status(lambda: 1) == 1  # rank 0 posts its status ...
    monkeypatch.setattr(ranks_module, "_CURRENT", other)
    assert same_exit_status(lambda: 0) == 1  # ... and rank 1, done with its part, exits with it

    main, other = two_ranks()
    monkeypatch.setattr(ranks_module, "_CURRENT", main)

    def broken() -> int:
        raise BenchmarkError("bad table")

    with pytest.raises(BenchmarkError):
        same_exit_status(broken)  # rank 0 raised: it posts the status the CLI exits with (2) first
    monkeypatch.setattr(ranks_module, "_CURRENT", other)

    def waits_for_rank_zero() -> int:
        other.wait("job0-summary", 0, 60.0)
        return 0

    assert same_exit_status(waits_for_rank_zero) == 2  # released at once, with rank 0's status


# --------------------------------------------------------------------------- what the record says
def test_record_fit_keeps_the_batching_and_marks_what_fit_did_not_say_unknown(tmp_path: Path) -> None:
    import torch

    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams={}, checkpoint_dir=tmp_path)
    ctx.record_fit("pretrain", SimpleNamespace(steps_done=3, samples_seen=48, world_size=2, micro_batch_size=4, accumulate=2,
                                               global_batch_size=16))
    ctx.record_fit("train", SimpleNamespace(steps_done=1, world_size=True, micro_batch_size=2.5, accumulate=float("nan")))
    assert {k: ctx.fit_log["pretrain"][k] for k in ("world_size", "micro_batch_size", "accumulate", "global_batch_size")} == \
        {"world_size": 2, "micro_batch_size": 4, "accumulate": 2, "global_batch_size": 16}
    assert [ctx.fit_log["train"][k] for k in ("world_size", "micro_batch_size", "accumulate", "global_batch_size")] == [None] * 4


def _v3_record() -> dict:
    return {"schema": 3, "status": "ok", "task": {"name": "t", "version": "1", "family": "segmentation"}, "cell": {"name": "c"},
            "entry": {"name": "e", "version": "1", "family": "segmentation"}, "profile": "mini", "seed": 0, "config_hash": "abc",
            "data": {"kind": "synthetic"}, "metrics": {"miou": {"estimate": 0.5}}, "unit_stats_file": "c-seed0.npz",
            "entry_source": {"spec": "e", "source": "s", "registered": True}, "execution": {"isolation": "process"},
            "environment": {"git_sha": "x", "world_size": 1},
            "training": {"finetune": {"steps": 10, "samples": 80, "seconds": 1.5, "curve": None}}}


def test_schema_3_records_read_as_schema_4_with_the_batching_unknown() -> None:
    old = _v3_record()
    new = migrate(old)
    validate(new)
    assert new["schema"] == 4 and new["migrated_from"] == 3 and old["schema"] == 3
    assert new["execution"] == {"isolation": "process", "world_size": 1}  # from the v3 environment, which recorded it
    assert new["training"]["finetune"] == {"steps": 10, "samples": 80, "seconds": 1.5, "curve": None, "world_size": None,
                                           "micro_batch_size": None, "accumulate": None, "global_batch_size": None}
    written = {**old, "schema": 4}
    with pytest.raises(RecordError, match="needs 'execution.world_size'"):
        validate(written)  # a record this harness writes always says on how many ranks it ran
    validate({**written, "execution": {"isolation": "none", "world_size": 2}})


def test_every_rank_runs_rank_zeros_to_do_list_and_a_rank_that_planned_otherwise_stops() -> None:
    from benchmark.ranked import agreed_todo
    from benchmark.results import JobKey

    def plan(cells: list[str], done: set[str]) -> SimpleNamespace:
        jobs = [SimpleNamespace(key=JobKey("t", "smoke", "e", c, 0), config_hash=f"h-{c}", timeout=1.0) for c in cells]
        return SimpleNamespace(jobs=jobs, done={j.key for j in jobs if j.key.cell in done})

    main, other = two_ranks()
    # rank 0 found "a" done (its record appeared before rank 1 planned): both ranks run "b" and "c" only
    assert [j.key.cell for j in agreed_todo(plan(["a", "b", "c"], {"a"}), main, "run1/")] == ["b", "c"]
    assert [j.key.cell for j in agreed_todo(plan(["a", "b", "c"], set()), other, "run1/")] == ["b", "c"]
    main.post("run2/plan", {"jobs": [["t", "smoke", "e", "a", 0, "h-a"]], "todo": [0]})
    with pytest.raises(BenchmarkError, match="rank 1 planned other jobs than rank 0 .first difference at job 0"):
        agreed_todo(plan(["x"], set()), other, "run2/")
