"""Options and actions of ``python -m benchmark prepare|make-data tc_primed``."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from benchmark.data import resolve_data_root
from benchmark.errors import BenchmarkError, DataError


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", type=Path, required=True,
                        help="folder of raw TC-PRIMED v01r01 files (searched recursively for *.nc, e.g. a copy of v01r01/final/)")
    parser.add_argument("--out", type=Path, default=None, help="prepared store folder (default: <data root>/tc_primed)")
    parser.add_argument("--data-root", type=Path, default=None, help="data root for the default --out ($BENCHMARK_DATA, then ~/.cache/benchmark)")
    parser.add_argument("--scheduler", default="local",
                        help="local (a dask LocalCluster, default), processes, sync, or the address of a running dask scheduler (tcp://host:8786)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for local/processes (default: CPU count)")
    parser.add_argument("--splits", type=Path, default=None,
                        help="a splits JSON ({train,val,test: [ATCF ids]}) whose assignments are kept; other storms are split by the rule")
    parser.add_argument("--force", action="store_true", help="re-read every file and redo the split (default: incremental)")
    parser.add_argument("--no-progress", action="store_true")


def run_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare_store

    out = args.out or resolve_data_root(args.data_root) / "tc_primed"
    splits = None
    if args.splits is not None:
        try:
            doc = json.loads(args.splits.read_text())
            splits = {k: list(doc[k]) for k in ("train", "val", "test")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"--splits {args.splits}: not a splits file with train/val/test lists ({exc})") from None
    report = prepare_store(args.raw, out, scheduler=args.scheduler, workers=args.workers, force=args.force, splits=splits,
                           progress=not args.no_progress, splits_from=None if args.splits is None else f"--splits {args.splits}")
    if report["errors"]:
        print(f"{report['errors']} file(s) could not be used; every one is listed with its reason in {out / 'report.json'}")
    return 0


def add_make_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the embedded-data folder under the data root)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storms", type=int, default=None, help="number of storms (default 210)")
    parser.add_argument("--half-box-km", type=float, default=None, help="half size of the storm-centred swath subsets (default 150)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--scheduler", default=None, help="prepare scheduler (default: local for large sets, else sync)")
    parser.add_argument("--overwrite", action="store_true")


def run_make_data(task: Any, args: argparse.Namespace) -> int:
    size: dict[str, Any] = {}
    if args.storms is not None:
        size["n_storms"] = args.storms
    if args.half_box_km is not None:
        size["half_box_km"] = args.half_box_km
    built = type(task)(synthetic_size=size)
    out = args.out or built.synthetic_dir(resolve_data_root(args.data_root))
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise BenchmarkError(f"{out} exists and is not empty (use --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = built.build_synthetic(out, args.seed, workers=args.workers, scheduler=args.scheduler, progress=True)
    report = json.loads((out / "prepared" / "report.json").read_text())
    print(f"wrote {len(manifest['raw'])} raw files and the prepared store to {out} "
          f"(generate {manifest['seconds']['generate']} s, prepare {manifest['seconds']['prepare']} s); "
          f"observations {report['observations']}, storms {report['storms']}")
    return 0
