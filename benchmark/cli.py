"""``python -m benchmark``: list, run, table, compare, check-entry, and task data commands.

User mistakes (unknown names, bad paths) print one readable line and exit with status 2; an
unexpected crash keeps its traceback, because that is a bug to report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, ranks, registry
from .contracts import PROFILES
from .errors import BenchmarkError
from .estimate_render import add_estimate_parser, cmd_estimate
from .plan import RunOptions, make_plan

DATA_COMMANDS = {
    "download": "download a task's real dataset (resumable, checksum-verified)",
    "prepare": "turn a task's raw files into the prepared layout it reads",
    "make-data": "generate a task's embedded synthetic dataset",
    "plot": "draw a task's figure from stored results (tc_primed: the paper's Figure 1)",
}


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run entries on a task and render its tables",
                       description="Run every (cell, entry, seed) job of a task, write one record per job "
                                   "under --results, then render the task's tables.")
    p.add_argument("--task", required=True, help="task name (see `list`) or module:Class")
    p.add_argument("--entry", action="append", default=None,
                   help="entry name, module:Class or path/file.py:Class (repeatable; default: every registered entry of the task's family)")
    p.add_argument("--profile", default="mini", choices=PROFILES, help="hyper-parameter profile (default: mini)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: $BENCHMARK_DATA, then ~/.cache/benchmark)")
    p.add_argument("--seed", type=int, action="append", default=None, help="seed (repeatable; default: the task's seeds for the profile, 0..2 at mini and paper, 0 at smoke)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="skip jobs whose record exists with the same configuration")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    p.add_argument("--cell", action="append", default=None, help="only this cell (repeatable)")
    p.add_argument("--table", action="append", default=None, dest="tables", help="only the cells of this table (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads per job (default: 1 when --executor auto runs one job per free core; else the "
                        "usable cores that other work leaves free, split between the jobs running at once; OpenMP threads "
                        "beyond the free cores thrash)")
    p.add_argument("--set", action="append", default=None, dest="sets", metavar="KEY=VALUE",
                   help="override a hyper-parameter of every entry of the run (repeatable; typed: 3e-4, 32, true, [16,32], null; "
                        "dotted keys for nested values); goes into the job's hash and record")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="YAML or TOML file of hyper-parameter overrides (top level: every entry; 'entries: {NAME: {...}}': one "
                        "entry); --set applies on top")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write each training stage's curve as TensorBoard events beside its curve.jsonl (needs tensorboard)")
    p.add_argument("--all-entries", action="store_true",
                   help="with no --entry: run third-party registered entries too (by default the paper tables hold the "
                        "suite's own entries; name a plugin with --entry to run it)")
    p.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock limit per job; a job past it is killed and recorded as failed (default: by profile, "
                        "smoke 30 min, mini 6 h, paper 7 days; 0 = none)")
    p.add_argument("--in-process", action="store_true",
                   help="run jobs in this process instead of one child process per job (for debuggers; no timeout, and an "
                        "entry that crashes the interpreter ends the run)")
    g = p.add_argument_group("job grid", "where the jobs run (docs/cluster.md)")
    g.add_argument("--executor", default="auto", choices=("auto", "local", "processes", "slurm"),
                   help="auto (default): processes with one GPU per job when there are several GPUs, one one-thread job "
                        "per free core on CPU (smoke, mini), local otherwise; local: one job after another; processes: "
                        "--workers jobs at once on this machine (one GPU each); slurm: one Slurm job per job, through submitit")
    g.add_argument("--workers", type=int, default=None,
                   help="jobs at once with --executor processes (default: 2; with auto: the free cores or the GPUs)")
    g.add_argument("--slurm-config", type=Path, default=None, help="TOML file with a [slurm] table (partition, time_min, "
                   "gpus_per_job, cpus_per_job, mem_gb, array_parallelism, folder, cluster, additional)")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES", help="time limit per job")
    g.add_argument("--slurm-gpus-per-job", type=int, default=None, help="GPUs per job (>1: one DDP rank per GPU)")
    g.add_argument("--slurm-array-parallelism", type=int, default=None, help="jobs running at once")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and return (render the tables later with `table`)")
    g.add_argument("--list-jobs", action="store_true", help="print the plan (every job, its stage and record path) as JSON and exit")
    g.add_argument("--job-index", type=int, default=None, metavar="I",
                   help="run job I of the plan only (see --list-jobs; e.g. $SLURM_ARRAY_TASK_ID in your own array script)")


def _add_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="render a task's tables from stored records (never re-runs)")
    p.add_argument("--task", required=True)
    p.add_argument("--profile", default="mini", choices=PROFILES)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--format", default="markdown", choices=("markdown", "latex", "csv", "comparisons-csv"),
                   help="markdown, latex, csv (one row per entry, cell and metric) or comparisons-csv")
    p.add_argument("--seed", type=int, default=None, help="only this seed's records (default: every seed, aggregated)")
    p.add_argument("--extended", action="store_true", help="all metrics, not only the paper's")
    p.add_argument("--output", type=Path, default=None, help="also write the rendered text to this file")
    p.add_argument("--entry", action="append", default=None, help="also show this third-party entry's records (repeatable)")
    p.add_argument("--all-entries", action="store_true", help="show every entry's records, third-party ones included")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired bootstrap difference between two stored jobs on the same units")
    p.add_argument("--task", required=True)
    p.add_argument("a", help="ENTRY/CELL of the first job")
    p.add_argument("b", help="ENTRY/CELL of the second job")
    p.add_argument("--profile", default="mini", choices=PROFILES)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--seed", type=int, default=None, help="only this seed (default: every seed of both jobs)")
    p.add_argument("--metric", default=None, help="metric to compare (default: the task's main metric)")
    p.add_argument("--rows-iid", action="store_true",
                   help="resample scored rows as if independent (the TC-PRIMED paper's method) instead of the task's unit (storms)")


def _add_rescore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rescore", help="recompute stored records' metrics under the current scoring (no re-training)",
                       description="Recompute every ok record's metrics and intervals from its stored per-unit statistics, "
                                   "when the record's training configuration equals the current one.")
    p.add_argument("--task", required=True)
    p.add_argument("--profile", default="mini", choices=PROFILES)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--entry", action="append", default=None, help="module:Class or file.py:Class of an unregistered entry (repeatable)")


def _add_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="draw (or export as CSV) the training curves of a run's jobs",
                       description="Training curves of the records under --results: one panel per stage, one line per job.")
    p.add_argument("--task", required=True)
    p.add_argument("--profile", default="mini", choices=PROFILES)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--entry", action="append", default=None, help="only this entry (repeatable)")
    p.add_argument("--cell", action="append", default=None, help="only this cell (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="only this seed")
    p.add_argument("--key", default="loss", help="what to draw: loss, lr, grad_norm, samples_per_s or an entry's own log (default: loss)")
    p.add_argument("--smooth", type=int, default=1, metavar="STEPS", help="trailing mean over this many steps (default: 1, none)")
    p.add_argument("--format", default="png", choices=("png", "csv"), help="png (default: <results>/<task>/<profile>/curves-KEY.png) or csv (stdout)")
    p.add_argument("--out", type=Path, default=None, help="where to write the PNG or CSV")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description="Benchmark suite for self-supervised multi-source satellite learning.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="tasks (with cells), entries and profiles")
    _add_run(sub)
    _add_table(sub)
    _add_compare(sub)
    _add_rescore(sub)
    _add_curves(sub)
    add_estimate_parser(sub)
    p = sub.add_parser("check-entry", help="run an entry through a whole job on a tiny mock task and report problems")
    p.add_argument("spec", help="entry name, module:Class or path/file.py:Class")
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", default="smoke", choices=PROFILES)
    for name, text in DATA_COMMANDS.items():
        p = sub.add_parser(name, help=text, add_help=False, description=f"{text}. Options depend on the task: `{name} TASK --help`.")
        p.add_argument("task", nargs="?", help="task name")
        p.add_argument("rest", nargs=argparse.REMAINDER, help="task-specific options")
    return parser


def cmd_list() -> int:
    from tabulate import tabulate

    task_rows = []
    for name in registry.task_names():
        try:
            spec = registry.load_task(name).spec
            task_rows.append([name, spec.family, spec.version, ", ".join(c.name for c in spec.cells), spec.description])
        except Exception as exc:  # noqa: BLE001 - list what is broken instead of hiding it
            task_rows.append([name, "?", "?", f"cannot load: {exc}", ""])
    entry_rows = []
    for name in registry.entry_names():
        dist = registry.distribution_of(name)
        where = f"{dist[0]} {dist[1]}" if dist else "?"
        try:
            cls = registry.load_entry(name)
            m = cls.metadata
            entry_rows.append([name, m.family, m.version, where, ", ".join(cls.profiles), m.pretraining, m.description])
        except Exception as exc:  # noqa: BLE001 - list what is broken instead of hiding it
            entry_rows.append([name, "?", "?", where, "", "", f"BROKEN, skipped by run: {type(exc).__name__}: {exc}"])
    print("Tasks")
    print(tabulate(task_rows, headers=["task", "family", "version", "cells", "description"]) if task_rows else "  (none registered yet)")
    print("\nEntries")
    print(tabulate(entry_rows, headers=["entry", "family", "version", "distribution", "profiles", "pretraining", "description"]) if entry_rows else "  (none registered yet)")
    print("\nProfiles: smoke (tests, seconds), mini (CPU default, minutes per table), paper (papers' hyper-parameters, GPUs)")
    return 0


def check_folder(path: Path | None, flag: str, must_exist: bool) -> None:
    """A folder argument: refuse a file (or a missing folder where one must exist) in one line."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise BenchmarkError(f"{flag} {path} is a file, not a folder")
    if must_exist and not path.exists():
        raise BenchmarkError(f"{flag} {path} does not exist")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BenchmarkError(f"{flag} {path}: {parent} is a file, not a folder")
            break


def check_seeds(seeds: Sequence[int] | None) -> None:
    bad = [s for s in seeds or [] if not 0 <= s < 2**31]
    if bad:
        raise BenchmarkError(f"--seed must be in [0, 2^31), got {', '.join(map(str, bad))}")


def resolve_auto_executor(args: argparse.Namespace) -> str | None:
    """Turn ``--executor auto`` into a concrete executor, workers and threads on ``args``; the reason
    (recorded as each job's threads source), or None when the executor was named."""
    if args.executor != "auto":
        if args.workers is None:
            args.workers = 2
        return None
    from .executors import auto_choice

    if args.workers is not None:  # --workers names the processes executor
        args.executor = "processes"
        return None
    if args.list_jobs or args.job_index is not None:  # one job (or none) in this process: all its cores
        args.executor, args.workers = "local", 1
        return None
    choice = auto_choice(args.device, args.threads, args.profile, args.in_process)
    args.executor, args.workers = choice.executor, choice.workers
    if args.threads is None and choice.threads is not None:  # the choice sampled the free cores already
        args.threads = choice.threads
        return choice.why
    return None


def _executor(args: argparse.Namespace) -> object:
    from .executors import LocalExecutor, ProcessesExecutor, SlurmConfig, SlurmExecutor

    if args.executor == "processes":
        if args.in_process:
            raise BenchmarkError("--executor processes runs every job in its own process; drop --in-process")
        return ProcessesExecutor(workers=args.workers, threads=args.threads)
    if args.executor == "slurm":
        config = SlurmConfig.from_file(args.slurm_config, partition=args.slurm_partition, time_min=args.slurm_time,
                                       gpus_per_job=args.slurm_gpus_per_job, array_parallelism=args.slurm_array_parallelism,
                                       wait=False if args.no_wait else None)
        return SlurmExecutor(config)
    return LocalExecutor()


def _threads(args: argparse.Namespace) -> tuple[int, str]:
    """The torch threads per job and where the number came from."""
    if args.threads is not None:
        if args.threads < 1:
            raise BenchmarkError("--threads must be at least 1")
        return args.threads, "--threads"
    if args.executor == "slurm":  # the node's cores are not this machine's: the job gets what it asks Slurm for
        from .executors import SlurmConfig

        cpus = SlurmConfig.from_file(args.slurm_config).cpus_per_job
        return max(1, int(cpus)), f"slurm: cpus_per_job {cpus}"
    from .environment import auto_threads

    return auto_threads(args.workers if args.executor == "processes" else 1)


def _require(module: str, flag: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BenchmarkError(f"{flag} needs the {module!r} package: pip install {module}")


def cmd_run(args: argparse.Namespace) -> int:
    from . import runner, tables

    check_folder(args.data_root, "--data-root", must_exist=True)
    check_folder(args.results, "--results", must_exist=False)
    check_seeds(args.seed)
    auto_why = resolve_auto_executor(args)
    threads, threads_source = _threads(args)
    if auto_why is not None:  # the threads came with the executor's choice
        threads_source = auto_why
    import torch

    torch.set_num_threads(threads)  # recorded in every record's environment.torch_threads and execution.threads_source
    args.threads = threads
    from .overrides import load_overrides

    overrides = load_overrides(args.sets or (), args.config)
    if args.tensorboard:
        _require("tensorboard", "--tensorboard")
    if args.job_timeout is not None and not (math.isfinite(args.job_timeout) and 0 <= args.job_timeout <= 10 * 365 * 86400):
        raise BenchmarkError(f"--job-timeout must be a number of seconds between 0 (none) and 10 years, got {args.job_timeout:g}")
    opts = RunOptions(task=args.task, entries=args.entry, profile=args.profile, seeds=args.seed, data_root=args.data_root,
                      device=args.device, resume=args.resume, results_dir=args.results, cells=args.cell, tables=args.tables,
                      show_progress=not args.no_progress, isolation="none" if args.in_process else None, job_timeout=args.job_timeout,
                      overrides=overrides, tensorboard=args.tensorboard, all_entries=args.all_entries,
                      command=args.command_line, threads_source=threads_source)
    if args.list_jobs:
        plan, _ = make_plan(opts)
        print(json.dumps(plan.to_dict(), indent=1))
        return 0
    if args.job_index is not None:
        summary = runner.one_job(opts, args.job_index)
        print(f"job {args.job_index}: {summary.status} {summary.key.entry} / {summary.key.cell} seed {summary.key.seed}: {summary.path}"
              + (f" ({summary.message})" if summary.message else ""))
        return 0 if summary.status == "ok" else 1
    from .isolation import reap_orphans_of_jobs
    from .results import git_revision

    git_revision()  # cached before any job runs (reaping kills unknown children of this process)
    reap_orphans_of_jobs()  # processes a job leaves behind are killed when it ends
    executor = _executor(args)
    summaries = runner.run(args.task, args.entry, executor=executor, **{k: v for k, v in vars(opts).items() if k not in ("task", "entries")})
    if not ranks.is_main():  # under torchrun rank 0 alone renders, prints and writes the tables; its status is all ranks'
        return 0
    if args.executor == "slurm" and args.no_wait:
        print(f"submitted; render the tables when the jobs are done: python -m benchmark table --task {args.task} --profile {args.profile}")
        return 0
    counts = {s: sum(1 for x in summaries if x.status == s) for s in ("ok", "skipped", "failed")}
    task = registry.load_task(args.task)
    folder = args.results / task.spec.name / args.profile
    out = folder / "TABLES.md"
    try:  # the jobs' records are safe whatever happens here; a table problem must not hide the summary
        shown = ["*"] if args.all_entries else [s.key.entry for s in summaries]  # what this run ran is shown
        rendered = tables.render_all(task, args.results, args.profile, ("markdown", "csv", "comparisons-csv"), include=shown)
    except BenchmarkError as exc:
        rendered, table_error = None, str(exc)
    if rendered is not None:
        from .results import write_text_atomic

        # through a temporary file and a rename: a link planted where a table goes is replaced, never followed
        write_text_atomic(out, rendered["markdown"])
        write_text_atomic(folder / "TABLES.csv", rendered["csv"])
        if task.spec.comparisons:
            write_text_atomic(folder / "COMPARISONS.csv", rendered["comparisons-csv"])
        print(rendered["markdown"])
    where = f"tables in {out}" if rendered is not None else "tables NOT rendered"
    print(f"jobs: {counts['ok']} ok, {counts['skipped']} skipped (resume), {counts['failed']} failed; records under {folder}; {where}")
    for s in summaries:
        if s.status == "failed":
            print(f"  failed: {s.key.entry} / {s.key.cell} seed {s.key.seed}: {s.message}", file=sys.stderr)
        elif s.message and s.status == "ok":
            print(f"  note: {s.key.entry} / {s.key.cell} seed {s.key.seed}: {s.message}", file=sys.stderr)
    if rendered is None:
        print(f"error: the tables could not be rendered: {table_error}", file=sys.stderr)
        return 2
    return 1 if counts["failed"] else 0


def cmd_table(args: argparse.Namespace) -> int:
    from . import tables

    check_folder(args.results, "--results", must_exist=True)
    check_seeds(None if args.seed is None else [args.seed])
    task = registry.load_task(args.task)
    include = ["*"] if args.all_entries else (args.entry or [])
    text = tables.render(task, args.results, args.profile, fmt=args.format, seed=args.seed, extended=args.extended, include=include)
    if args.output:
        args.output.write_text(text)
    print(text, end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_jobs

    check_folder(args.results, "--results", must_exist=True)
    check_seeds(None if args.seed is None else [args.seed])
    task = registry.load_task(args.task)
    result = compare_jobs(task, args.results, args.profile, args.a, args.b, seed=args.seed, metric=args.metric, rows_iid=args.rows_iid)
    print(result.describe())
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from .rescore import rescore

    check_folder(args.results, "--results", must_exist=True)
    check_folder(args.data_root, "--data-root", must_exist=True)
    done, skipped = rescore(args.task, args.profile, args.results, args.data_root, args.entry)
    print(f"rescored {done} record(s) of {args.task} at {args.profile} under {args.results}")
    for line in skipped:
        print(f"  skipped {line}", file=sys.stderr)
    return 1 if skipped else 0


def cmd_curves(args: argparse.Namespace) -> int:
    from .curve_plot import curves_command

    check_folder(args.results, "--results", must_exist=True)
    check_seeds(None if args.seed is None else [args.seed])
    task = registry.load_task(args.task)
    text, missing = curves_command(args.results, task.spec.name, args.profile, entries=args.entry, cells=args.cell, seed=args.seed,
                                   fmt=args.format, out=args.out, key=args.key, smooth=args.smooth)
    for line in missing:
        print(f"  no curve: {line}", file=sys.stderr)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_check_entry(args: argparse.Namespace) -> int:
    from .check_entry import check_entry

    rep = check_entry(args.spec, device=args.device, profile=args.profile)
    status = "OK" if rep.ok else "FAILED"
    print(f"{status}: {rep.entry} ({rep.family}) — {rep.message} in {rep.seconds:.1f} s")
    if rep.ok:
        print(f"  mock-task score: {rep.main_metric:.4f}; parameters: {rep.parameters if rep.parameters is not None else 'n/a'}")
    for line in rep.warnings:
        print(f"  warning: {line}")
    return 0 if rep.ok else 1


def cmd_data(command: str, task_name: str | None, rest: Sequence[str]) -> int:
    if not task_name or task_name in ("-h", "--help"):
        print(f"usage: python -m benchmark {command} TASK [task options]\n\n{DATA_COMMANDS[command]}.\nTasks: {', '.join(registry.task_names()) or 'none registered'}")
        return 0 if task_name else 2
    task = registry.load_task(task_name)
    method = command.replace("-", "_")
    if not callable(getattr(task, method, None)):
        raise BenchmarkError(f"task {task.spec.name!r} does not support `{command}`")
    parser = argparse.ArgumentParser(prog=f"python -m benchmark {command} {task.spec.name}", description=DATA_COMMANDS[command])
    add_args = getattr(task, f"add_{method}_arguments", None)
    if callable(add_args):
        add_args(parser)
    return int(getattr(task, method)(parser.parse_args(list(rest))) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `plot --task tc_primed ...` = `plot tc_primed ...`, like `run --task` (after any global flags)
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is not None and argv[at] in DATA_COMMANDS and at + 1 < len(argv):
        nxt = argv[at + 1]
        if nxt == "--task" and at + 2 < len(argv):
            argv = [*argv[:at + 1], *argv[at + 2:]]
        elif nxt.startswith("--task="):
            argv = [*argv[:at + 1], nxt.split("=", 1)[1], *argv[at + 2:]]
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "benchmark", *argv])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "run":
            return ranks.same_exit_status(lambda: cmd_run(args))
        if args.command == "table":
            return cmd_table(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "rescore":
            return cmd_rescore(args)
        if args.command == "curves":
            return cmd_curves(args)
        if args.command == "check-entry":
            return cmd_check_entry(args)
        if args.command == "estimate":
            return cmd_estimate(args)
        return cmd_data(args.command, args.task, args.rest)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished jobs are saved (re-run with --resume)", file=sys.stderr)
        return 130
