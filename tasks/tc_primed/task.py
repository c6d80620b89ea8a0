"""The ``tc_primed`` task: spec (Table 1 cells), data resolution, windows, batches, CLI hooks.

Data: a prepared store (``prepare.py``) found at ``<data root>``, ``<data root>/tc_primed`` or
``<data root>/tc_primed/prepared``; otherwise the embedded synthetic TC-PRIMED, generated on first
use into ``<data root>/synthetic/tc_primed-<generator>-seed<k>/`` (raw v01r01 files under
``raw/``, turned into ``prepared/`` by the same ``prepare`` code) with a ``MANIFEST.json``.
Generation runs under a lock (a second process waits for the first); the prepared files are
verified against the manifest's sha256 on first use per process (``tasks.common.integrity``).

Profile knobs (data side, by ``ctx.profile``): ``crop`` = largest H and W kept per observation (a
window centred on the storm after dropping all-NaN borders; None keeps whole swaths as the
authors do) and ``max_windows`` per split (a deterministic subset by id hash, so the cells of a
section still share their samples).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchmark.contracts import (
    BootstrapSpec,
    Cell,
    DataIdentity,
    MetricSpec,
    PairedComparison,
    RunContext,
    TaskSpec,
)
from benchmark.data import resolve_data_root
from benchmark.errors import BenchmarkError, DataError

from ..common.integrity import generation_lock, record_verified, verify_files
from .catalog import SPLIT_RULE
from .sensors import CHANNELS, CHARAC_NAMES, SOURCE_NAMES
from .store import Store, is_store
from .synthetic import DEFAULT_SIZE, GENERATOR_VERSION
from .windows import (
    MAX_TRAIN_SOURCES,
    TARGET_SEED,
    EvalWindows,
    TrainWindows,
    candidates,
    cap,
    collate,
    one_per_bin,
)

log = logging.getLogger(__name__)
SPLITS_DIR = Path(__file__).parent / "splits"
SYNTHETIC_SEED = 0
PROFILE_DATA: dict[str, dict[str, Any]] = {
    "smoke": {"crop": 32, "max_windows": {"train": 96, "val": 24, "test": 48}},
    "mini": {"crop": 64, "max_windows": {"train": None, "val": 256, "test": None}},
    "paper": {"crop": None, "max_windows": {"train": None, "val": None, "test": None}},
}


def _cell(train: int, eval_: int, min_s: int, max_s: int | None) -> Cell:
    name = f"train{train}h-eval{eval_}h-min{min_s}-{'all' if max_s is None else f'max{max_s}'}"
    return Cell(name, {"train_window_h": train, "eval_window_h": eval_, "min_sources": min_s, "max_sources": max_s},
                shared={"fit": f"train{train}h"},
                label=f"train {train} h, eval {eval_} h, min {min_s} sources, {'all inputs' if max_s is None else f'max {max_s}'}")


SPEC = TaskSpec(
    name="tc_primed",
    version="1",
    family="reconstruction",
    description="TC-PRIMED cross-sensor PMW reconstruction (37/89 GHz H/V, 11 sensors), storm-level split (CRPS in K)",
    cells=(_cell(1, 1, 2, None), _cell(6, 1, 2, None), _cell(6, 6, 3, 2), _cell(6, 6, 3, None), _cell(6, 6, 4, 2), _cell(6, 6, 4, None)),
    metric=MetricSpec(name="crps", crps_estimator="standard", ensemble_size=10, units="K", higher_is_better=False),
    # storms are the independent unit (rows of one storm are correlated); the paper's interval
    # over (sample, channel) rows as if independent is kept as a labelled extra
    bootstrap=BootstrapSpec(unit="storm", resamples=1000, level=0.95, seed=0, cluster="storm", row_unit="sample-channel"),
    split_files={
        "rule.json": "7053a1a1a308568956417eea4f7160133adb80c139001a8850c555ac6781c26c",
        f"synthetic-{GENERATOR_VERSION}-seed{SYNTHETIC_SEED}.json": "63a2132454d3d748ce4dc808cb2f52a10f1ff83c3c76d2b80f65bdbf73448409",
    },
    paper="Dauvilliers & Monteleoni, A self-supervised multi-source framework and architecture for generative cross-sensor harmonization, Table 1",
    tables={"main": "Table 1 (TC-PRIMED)"},
    # the paper's comparisons: the training window (on the same 1 h evaluation windows) and
    # limiting the inputs to two sources (on the same 6 h windows and targets)
    comparisons=(
        PairedComparison("train 1 h vs 6 h (eval 1 h)", "train1h-eval1h-min2-all", "train6h-eval1h-min2-all"),
        PairedComparison("max 2 vs all inputs (min 3)", "train6h-eval6h-min3-max2", "train6h-eval6h-min3-all"),
        PairedComparison("max 2 vs all inputs (min 4)", "train6h-eval6h-min4-max2", "train6h-eval6h-min4-all"),
    ),
    extended_table=True,
)


def hash_files(root: Path, rels: list[str]) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in sorted(rels)}


@dataclass
class TcData:
    store: Store
    identity: DataIdentity
    cache: dict[tuple, list] = field(default_factory=dict)


class TcPrimedTask:
    """Reconstruction task on TC-PRIMED; see the module docstring and ``windows.py``."""

    spec: ClassVar[TaskSpec] = SPEC

    def __init__(self, synthetic_size: dict[str, Any] | None = None):
        self.synthetic_size = {**DEFAULT_SIZE, **(synthetic_size or {})}

    # -- data
    def synthetic_dir(self, data_root: Path) -> Path:
        tag = "" if self.synthetic_size == DEFAULT_SIZE else "-" + hashlib.sha256(json.dumps(self.synthetic_size, sort_keys=True).encode()).hexdigest()[:8]
        return data_root / "synthetic" / f"{self.spec.name}-{GENERATOR_VERSION}-seed{SYNTHETIC_SEED}{tag}"

    def build_synthetic(self, out: Path, seed: int, *, workers: int | None = None, scheduler: str | None = None, progress: bool = False) -> dict[str, Any]:
        """Generate raw v01r01 files, prepare them, write MANIFEST.json; returns the manifest."""
        from .prepare import prepare_store
        from .synthetic import generate

        workers = workers or min(2, os.cpu_count() or 1)
        t0 = time.perf_counter()
        raw = generate(out, seed, workers=workers, **self.synthetic_size)
        t1 = time.perf_counter()
        # a LocalCluster pays off with real cores to spare; on 2 vCPUs dask's process pool (no cluster start-up) reads the files on both
        scheduler = scheduler or ("local" if (os.cpu_count() or 1) > 2 and len(raw) > 400 else ("processes" if workers > 1 and len(raw) > 400 else "sync"))
        prepare_store(out / "raw", out / "prepared", scheduler=scheduler, workers=workers, progress=progress, say=log.info)
        t2 = time.perf_counter()
        prepared_rels = sorted(p.relative_to(out).as_posix() for p in (out / "prepared").rglob("*")
                               if p.is_file() and p.name not in ("files.jsonl", "report.json"))
        prepared = hash_files(out, prepared_rels)
        manifest = {"generator": GENERATOR_VERSION, "seed": seed, "size": self.synthetic_size, "raw": raw, "prepared": prepared,
                    "content_checksum": hashlib.sha256(json.dumps(prepared, sort_keys=True).encode()).hexdigest(),
                    "seconds": {"generate": round(t1 - t0, 1), "prepare": round(t2 - t1, 1)},
                    "note": "raw sha256 are byte hashes (netCDF4 embeds its library version); content_checksum hashes the prepared store"}
        (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return manifest

    def ensure_synthetic(self, data_root: Path) -> Path:
        """Generate on first use (under a lock: a second process waits, then uses the finished data);
        then verify the prepared store against MANIFEST.json (``tasks.common.integrity``)."""
        out = self.synthetic_dir(data_root)
        if not self._complete(out):
            with generation_lock(out):
                if not self._complete(out):  # not finished by another process while we waited
                    self._generate(out)
        self.verify_synthetic(out)
        return out

    @staticmethod
    def _complete(out: Path) -> bool:
        return (out / "MANIFEST.json").is_file() and is_store(out / "prepared")

    def _generate(self, out: Path) -> None:
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        manifest = self.build_synthetic(tmp, SYNTHETIC_SEED)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        record_verified(out, manifest["prepared"])
        log.warning("generated the embedded synthetic tc_primed dataset at %s (generate %.1f s, prepare %.1f s)", out,
                    manifest["seconds"]["generate"], manifest["seconds"]["prepare"])

    def verify_synthetic(self, out: Path) -> None:
        """The prepared store (what runs read) is what MANIFEST.json lists, byte for byte, and the
        manifest's content_checksum (the data identity) is the hash of that list. The raw files are
        not verified: runs never read them, and their byte hashes depend on the netCDF library that
        wrote them (the manifest's note)."""
        path = out / "MANIFEST.json"
        regenerate = f"delete {out} to regenerate it (it is rebuilt on next use)"
        try:
            manifest = json.loads(path.read_text())
            prepared, checksum = manifest["prepared"], manifest["content_checksum"]
            if not isinstance(prepared, dict):
                raise TypeError("'prepared' is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable manifest ({exc}); {regenerate}") from None
        if hashlib.sha256(json.dumps(prepared, sort_keys=True).encode()).hexdigest() != checksum:
            raise DataError(f"{path}: content_checksum is not the hash of its 'prepared' file list (edited?); {regenerate}")
        verify_files(out, prepared, regenerate=regenerate)

    def resolve_data(self, data_root: Path | None, profile: str, *, show_progress: bool | None = None) -> tuple[TcData, DataIdentity]:
        """A prepared store under ``data_root`` if there is one, else the embedded synthetic
        TC-PRIMED (generated and prepared on first use, with a start line, a bar per phase and an
        end line per phase on stderr; ``show_progress`` False hides the bars, None shows them only on
        a terminal)."""
        from tasks.sits.synthetic import generation_progress, note

        base = resolve_data_root(data_root)
        self.check_split_files()
        for candidate in (base, base / "tc_primed", base / "tc_primed" / "prepared"):
            if is_store(candidate):
                store = Store.open(candidate)
                digest = hashlib.sha256(b"".join((candidate / n).read_bytes() for n in ("index.csv", "splits.json", "stats.json"))).hexdigest()
                identity = DataIdentity(kind="real", root=str(candidate), checksum=digest)
                return TcData(store, identity), identity
        if not self._complete(self.synthetic_dir(base)):
            note(f"tc_primed: first use: generating the embedded synthetic TC-PRIMED ({self.synthetic_size['n_storms']} storms) into "
                 f"{self.synthetic_dir(base)} (raw netCDF overpass files, then prepare) ...")
        with generation_progress(show_progress):
            out = self.ensure_synthetic(base)
        manifest = json.loads((out / "MANIFEST.json").read_text())
        store = Store.open(out / "prepared")
        identity = DataIdentity(kind="synthetic", root=str(out / "prepared"), checksum=manifest["content_checksum"],
                                generator_version=GENERATOR_VERSION, seed=SYNTHETIC_SEED)
        if self.synthetic_size == DEFAULT_SIZE:
            frozen = self.frozen_splits()
            if {k: store.splits[k] for k in ("train", "val", "test")} != frozen:
                raise DataError(f"{out}: its storm splits differ from the frozen {self.frozen_split_path()}; delete {out} to regenerate")
        return TcData(store, identity), identity

    # -- splits
    def frozen_split_path(self) -> Path:
        return SPLITS_DIR / f"synthetic-{GENERATOR_VERSION}-seed{SYNTHETIC_SEED}.json"

    def frozen_splits(self) -> dict[str, list[str]]:
        doc = json.loads(self.frozen_split_path().read_text())
        return {k: doc[k] for k in ("train", "val", "test")}

    def check_split_files(self) -> None:
        for rel, sha in self.spec.split_files.items():
            path = SPLITS_DIR / rel
            if not path.is_file():
                raise DataError(f"split file missing: {path}")
            got = hashlib.sha256(path.read_bytes()).hexdigest()
            if got != sha:
                raise DataError(f"split file {path} has sha256 {got}, the task spec expects {sha}: splits are frozen; bump the task version to change them")

    @staticmethod
    def split_rule() -> dict[str, Any]:
        return {**SPLIT_RULE, "target_seed": TARGET_SEED, "eval_bin_h": 6, "max_train_sources": MAX_TRAIN_SOURCES}

    # -- the harness's reconstruction interface
    def recipe(self, profile: str) -> dict[str, Any]:
        """Crop and window caps at ``profile`` (the harness hashes them into every job)."""
        return dict(PROFILE_DATA.get(profile, PROFILE_DATA["paper"]))

    def estimate_data(self, profile: str) -> Any:
        """Real-size stand-ins of the windows, for ``benchmark estimate`` (``tasks.tc_primed.estimate``)."""
        from .estimate import tc_estimate_data

        return tc_estimate_data(self, profile)

    def info(self, data: TcData, cell: Cell) -> dict[str, Any]:
        return {"sources": list(SOURCE_NAMES), "channels": len(CHANNELS), "channel_names": list(CHANNELS),
                "characs_dim": len(CHARAC_NAMES), "characs_names": list(CHARAC_NAMES), "max_train_sources": MAX_TRAIN_SOURCES,
                "dt_units": "hours before t0", **dict(cell.params), "data_kind": data.identity.kind}

    def _windows(self, data: TcData, split: str, window_h: float, min_sources: int, per_bin: bool, limit: int | None) -> list:
        key = (split, window_h, min_sources, per_bin, limit)
        if key not in data.cache:
            found = candidates(data.store, split, window_h, min_sources)
            data.cache[key] = cap(one_per_bin(found) if per_bin else found, limit)
        return data.cache[key]

    def windows(self, data: TcData, split: str, cell: Cell, ctx: RunContext) -> torch.utils.data.Dataset:
        knobs = PROFILE_DATA.get(ctx.profile, PROFILE_DATA["paper"])
        limit = knobs["max_windows"].get(split)
        p = cell.params
        if split in ("train", "val"):
            ws = self._windows(data, split, float(p["train_window_h"]), 2, False, limit)
            return TrainWindows(data.store, ws, float(p["train_window_h"]), knobs["crop"], seed=ctx.seed, fixed=split == "val")
        if split != "test":
            raise BenchmarkError(f"tc_primed has splits train, val, test; got {split!r}")
        ws = self._windows(data, "test", float(p["eval_window_h"]), int(p["min_sources"]), True, limit)
        return EvalWindows(data.store, ws, float(p["eval_window_h"]), knobs["crop"], p["max_sources"])

    collate = staticmethod(collate)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B, C, H, W] normalized target values, NaN where not observed (and in padding)."""
        h, w = (int(x) for x in batch["target_size"])
        first = batch["sources"][batch["target"][0]]["values"]
        out = torch.full((len(batch["target"]), first.shape[1], h, w), float("nan"))
        for i, key in enumerate(batch["target"]):
            v = batch["sources"][key]["values"][i]
            out[i, :, : v.shape[-2], : v.shape[-1]] = v
        return out

    def inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch an entry sees: the target's values hidden (NaN); its coords, dt, land mask, characs and avail kept."""
        sources = {k: dict(v) for k, v in batch["sources"].items()}
        for key in set(batch["target"]):
            values = sources[key]["values"].clone()
            for i, t in enumerate(batch["target"]):
                if t == key:
                    values[i] = float("nan")
            sources[key]["values"] = values
        return {**batch, "sources": sources}

    def denormalize(self, x: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Normalized [..., B, C, H, W] -> Kelvin with the target source's training statistics."""
        if "target_mean" not in batch:
            raise BenchmarkError("denormalize needs an evaluation batch (with target_mean/target_std)")
        mean = batch["target_mean"].to(x.dtype)[..., None, None]
        std = batch["target_std"].to(x.dtype)[..., None, None]
        return x * std + mean

    def units(self, batch: dict[str, Any]) -> list[str]:
        return list(batch["storm"])

    def sample_ids(self, batch: dict[str, Any]) -> list[str]:
        return list(batch["id"])

    # -- CLI: prepare and make-data
    def add_prepare_arguments(self, parser: argparse.ArgumentParser) -> None:
        from .cli import add_prepare_arguments

        add_prepare_arguments(parser)

    def prepare(self, args: argparse.Namespace) -> int:
        from .cli import run_prepare

        return run_prepare(args)

    def add_make_data_arguments(self, parser: argparse.ArgumentParser) -> None:
        from .cli import add_make_data_arguments

        add_make_data_arguments(parser)

    def make_data(self, args: argparse.Namespace) -> int:
        from .cli import run_make_data

        return run_make_data(self, args)

    # -- CLI: plot (a figure like the paper's Figure 1)
    def add_plot_arguments(self, parser: argparse.ArgumentParser) -> None:
        from .plot import add_plot_arguments

        add_plot_arguments(parser)

    def plot(self, args: argparse.Namespace) -> int:
        from .plot import run_plot

        return run_plot(self, args)

    # -- CLI: download (a season/basin subset of the public bucket; tasks/tc_primed/download.py)
    def add_download_arguments(self, parser: argparse.ArgumentParser) -> None:
        from .download import add_download_arguments

        add_download_arguments(parser)

    def download(self, args: argparse.Namespace) -> int:
        from .download import run_download

        return run_download(args)
