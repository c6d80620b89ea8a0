"""Base class of the SITS segmentation tasks: cells, data resolution, views, collate.

A concrete task (``tasks.pastis_r``, ``tasks.africa_crop_type``) supplies its reader, where its
real data lives, and how to write its embedded synthetic dataset in the real layout; this class
turns that into the harness's segmentation-task interface (docs/batch_formats.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchmark.collate import sits_collate
from benchmark.contracts import Cell, DataIdentity, PairedComparison, RunContext, TaskSpec
from benchmark.data import resolve_data_root
from benchmark.errors import DataError
from benchmark.loading import epoch_generator, split_key

from ..common.integrity import generation_lock, record_verified, verify_files
from .pool import PoolReader
from .splits import check_disjoint, file_sha256, label_subset, read_split_file
from .subsample import subsample_sample
from .window import Window, crop_fields, crop_window

log = logging.getLogger(__name__)

MODALITIES = ("radar", "optical")
LABEL_FRACTIONS = (1.0, 0.1)


def floor_comparisons(cells: tuple[str, ...] = ("radar-100", "optical-100", "radar-10", "optical-10"),
                      floor: str = "unet3d_scratch") -> tuple[PairedComparison, ...]:
    """Every entry vs the supervised 3D U-Net trained from scratch, cell by cell: the floor an SSL
    method must beat to be worth its pre-training."""
    return tuple(PairedComparison(f"vs {floor} ({c})", c, c, b_entry=floor) for c in cells)


def ranked_subset(ids: list[Any], n: int, seed: int) -> list[str]:
    """The first ``n`` of ``ids`` ranked by ``sha256(f"{seed}:{id}")`` (the rule of
    ``label_subset``, with a count instead of a fraction), sorted; every id when ``n`` exceeds them."""
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    unique = sorted({str(i) for i in ids})
    ranked = sorted(unique, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return sorted(ranked[:n])


def standard_cells(extra: tuple[Cell, ...] = ()) -> tuple[Cell, ...]:
    """Table 1 cells: radar/optical × 100 %/10 %, sharing one pre-training per entry and seed."""
    cells = tuple(
        Cell(f"{m}-{round(f * 100)}", {"modality": m, "label_fraction": f}, shared={"pretrain": "pretrain-own"},
             label=f"{m.capitalize()} {round(f * 100)} %")
        for f in LABEL_FRACTIONS for m in MODALITIES
    )
    return cells + extra


@dataclass
class SITSData:
    """What ``resolve_data`` hands to the other methods: where the files are and which split ids."""

    root: Path
    identity: DataIdentity
    split_ids: dict[str, list[str]]
    subset_seed: int
    base: Path | None = None  # the data root it was resolved from (other tasks' data live there too)
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    readers: dict[str, Any] = field(default_factory=dict)  # split -> dataset (cached: read files once)
    others: dict[str, Any] = field(default_factory=dict)  # other tasks' (task, data) for cross-region pre-training
    profile: str | None = None  # the profile it was resolved for (the loss weights may depend on it)


def random_crop(sample: dict[str, Any], size: int, ignore_index: int, generator: torch.Generator | None = None) -> dict[str, Any]:
    """The same random ``size × size`` window of every spatial field of a SITS sample.

    With a label, only windows holding at least one labelled pixel are drawn
    (``tasks.sits.window.crop_window``). Samples no larger than ``size`` are returned unchanged.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    sizes = {tuple(sample[m].shape[-2:]) for m in MODALITIES if m in sample}
    if len(sizes) != 1:
        raise ValueError(f"random_crop needs the modalities of sample {sample.get('id')!r} on one grid, got sizes {sorted(sizes)}")
    hw = sizes.pop()
    return crop_fields(sample, hw, crop_window(sample.get("label"), hw, size, ignore_index, generator))


class _View(torch.utils.data.Dataset):
    """A split's samples restricted to ``ids``, optionally without labels, temporally subsampled,
    optionally randomly cropped (training views only).

    Epoch-seeded (``benchmark.loading``): the crop of key ``(epoch, i)`` is drawn from (seed,
    epoch, i) only, so worker processes crop exactly as one process would, a new window every
    epoch, and resumed runs replay them; ``view[i]`` is epoch 0. A reader that can read windows
    (``reads_windows``: memory-mapped arrays) decodes only the kept dates and the crop.
    """

    epoch_seeded = True

    def __init__(self, reader: Any, ids: list[str] | None, with_label: bool, length: int | None,
                 crop: int | None = None, ignore_index: int = -1, seed: int = 0):
        self.reader = reader
        all_ids = [str(i) for i in reader.ids]
        if ids is None:
            self.index = list(range(len(all_ids)))
        else:
            pos = {i: k for k, i in enumerate(all_ids)}
            missing = [i for i in ids if i not in pos]
            if missing:
                raise KeyError(f"{len(missing)} requested id(s) are not in the split, e.g. {missing[:3]}")
            self.index = [pos[i] for i in ids]
        self.with_label = with_label
        self.length = length
        self.crop, self.ignore_index, self.seed = crop, ignore_index, seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = split_key(key)
        generator = epoch_generator(self.seed, epoch, i) if self.crop is not None else None
        if getattr(self.reader, "reads_windows", False):
            def window(label: torch.Tensor | None, hw: tuple[int, int]) -> Window | None:
                return None if self.crop is None else crop_window(label, hw, self.crop, self.ignore_index, generator)

            return self.reader.read(self.index[i], length=self.length, window=window, with_label=self.with_label)
        sample = dict(self.reader[self.index[i]])
        if not self.with_label:
            sample.pop("label", None)
        if self.crop is not None:
            sample = random_crop(sample, self.crop, self.ignore_index, generator)
        return subsample_sample(sample, self.length)


class SITSTask(ABC):
    """Implements the segmentation-task interface over a reader of the real layout."""

    spec: ClassVar[TaskSpec]
    dataset_dirname: ClassVar[str]  # folder under the data root holding the real dataset
    synthetic_version: ClassVar[str]
    synthetic_seed: ClassVar[int] = 0
    subset_seed: ClassVar[int] = 0
    # dates kept per modality (evenly spaced) by profile; None keeps the whole series
    temporal_length: ClassVar[dict[str, int | None]] = {"smoke": 6, "mini": 8, "paper": None}
    # side of the random square crop of training / pre-training samples by profile (None: whole
    # patches); evaluation always sees whole patches
    train_crop: ClassVar[dict[str, int | None]] = {"smoke": None, "mini": None, "paper": None}
    channels: ClassVar[dict[str, int]]
    # per-class loss weights of the reference training recipe (None: uniform); passed to entries as
    # ``task_info["class_weights"]`` so every fine-tuned network uses the same loss
    class_weights: ClassVar[tuple[float, ...] | None] = None
    # per-profile overrides of ``class_weights`` (e.g. a short CPU budget that must still learn rare classes)
    profile_class_weights: ClassVar[dict[str, tuple[float, ...]]] = {}

    def loss_weights(self, profile: str | None) -> list[float] | None:
        """The per-class loss weights at ``profile`` (None: uniform)."""
        weights = self.profile_class_weights.get(profile or "", self.class_weights)
        return None if weights is None else list(weights)

    # -- what a concrete task provides
    @abstractmethod
    def reader(self, root: Path, split: str, **kwargs: Any) -> Any:
        """The dataset of a split, reading the real layout (``.ids`` lists sample ids in order)."""

    @abstractmethod
    def split_ids(self, root: Path) -> dict[str, list[str]]:
        """Ids of train/val/test, from the dataset's own metadata and the frozen split rule."""

    @abstractmethod
    def is_dataset(self, root: Path) -> bool:
        """Whether ``root`` holds this dataset in its real layout."""

    @abstractmethod
    def generate_synthetic(self, out: Path, seed: int, **size: Any) -> dict[str, str]:
        """Write the embedded synthetic dataset in the real layout; returns {relative path: sha256}."""

    def pool_reader(self, root: Path, **kwargs: Any) -> Any | None:
        """The extra unlabeled collection stored with the dataset at ``root`` (same layout, no
        labels), or None when there is none (``tasks.sits.pool``)."""
        return None

    def recipe(self, profile: str) -> dict[str, Any]:
        """What this task does to the data at ``profile`` (the harness hashes it into every job)."""
        return {"temporal_length": self.temporal_length.get(profile), "train_crop": self.train_crop.get(profile),
                "class_weights": self.loss_weights(profile)}

    # -- data resolution
    def synthetic_dir(self, data_root: Path) -> Path:
        return data_root / "synthetic" / f"{self.spec.name}-{self.synthetic_version}-seed{self.synthetic_seed}"

    def ensure_synthetic(self, data_root: Path) -> Path:
        """Generate the embedded dataset on first use (under a lock: a second process waits, then
        uses the finished data); verify its files against MANIFEST.json (``tasks.common.integrity``)."""
        out = self.synthetic_dir(data_root)
        manifest = out / "MANIFEST.json"
        if not manifest.is_file():
            with generation_lock(out):
                if not manifest.is_file():  # not finished by another process while we waited
                    self._generate(out)
        self.verify_synthetic(out)
        return out

    def _generate(self, out: Path) -> None:
        import shutil

        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        start = time.perf_counter()
        files = self.generate_synthetic(tmp, self.synthetic_seed)
        (tmp / "MANIFEST.json").write_text(json.dumps({"generator": self.synthetic_version, "seed": self.synthetic_seed, "files": files}, indent=1, sort_keys=True))
        if out.exists():  # a folder without its manifest: an incomplete copy
            shutil.rmtree(out)
        tmp.rename(out)
        record_verified(out, files)
        log.warning("generated the embedded synthetic %s dataset in %.1f s at %s", self.spec.name, time.perf_counter() - start, out)

    def verify_synthetic(self, out: Path) -> None:
        """The embedded files are those MANIFEST.json lists, byte for byte (a one-line DataError otherwise)."""
        path = out / "MANIFEST.json"
        try:
            files = json.loads(path.read_text())["files"]
            if not isinstance(files, dict):
                raise TypeError("'files' is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable manifest ({exc}); delete {out} to regenerate it") from None
        verify_files(out, files, regenerate=f"delete {out} to regenerate it (it is rebuilt on next use)")

    def resolve_data(self, data_root: Path | None, profile: str, *, show_progress: bool | None = None) -> tuple[SITSData, DataIdentity]:
        """The real copy under ``data_root`` if there is one, else the embedded synthetic dataset
        (generated on first use, with a start line, a bar and an end line on stderr; ``show_progress``
        False hides the bar, None shows it only on a terminal)."""
        from .synthetic import generation_progress, note

        base = resolve_data_root(data_root)
        for candidate in (base, base / self.dataset_dirname):
            if self.is_dataset(candidate):
                identity = DataIdentity(kind="real", root=str(candidate), checksum=self.real_checksum(candidate))
                root = candidate
                break
        else:
            out = self.synthetic_dir(base)
            if not (out / "MANIFEST.json").is_file():
                note(f"{self.spec.name}: first use: generating the embedded synthetic {self.spec.name} dataset into {out} ...")
            with generation_progress(show_progress):
                root = self.ensure_synthetic(base)
            manifest = root / "MANIFEST.json"
            identity = DataIdentity(kind="synthetic", root=str(root), checksum=file_sha256(manifest),
                                    generator_version=self.synthetic_version, seed=self.synthetic_seed)
        split_ids = self.split_ids(root)
        check_disjoint(split_ids, where=self.split_source(root))
        data = SITSData(root=root, identity=identity, split_ids=split_ids, subset_seed=self.subset_seed, base=base, profile=profile)
        self.check_split_files()
        self.check_materialized(data)
        return data, identity

    def split_source(self, root: Path) -> str:
        """The file the splits of the copy at ``root`` come from (named by split errors)."""
        return str(root)

    def real_checksum(self, root: Path) -> str:
        """Identity of a real copy: hash of its metadata file(s) (hashing 50 GB of arrays is not done per run)."""
        return ""

    # -- the harness's segmentation interface
    def info(self, data: SITSData, cell: Cell) -> dict[str, Any]:
        m = self.spec.metric
        return {"num_classes": m.num_classes, "ignore_index": m.ignore_index, "class_names": list(m.class_names),
                "channels": dict(self.channels), "dataset": self.spec.name,
                "class_weights": self.loss_weights(data.profile)}

    def _reader(self, data: SITSData, split: str) -> Any:
        if split not in data.readers:
            data.readers[split] = self.reader(data.root, split, **data.reader_kwargs)
        return data.readers[split]

    def _pretrain_reader(self, data: SITSData) -> Any:
        """The pre-training pool: the training split's imagery, then the extra unlabeled collection."""
        if "pretrain" not in data.readers:
            extra = self.pool_reader(data.root, **data.reader_kwargs)
            train = self._reader(data, "train")
            data.readers["pretrain"] = train if extra is None else PoolReader([train, extra], where=str(data.root))
        return data.readers["pretrain"]

    def pretrain_ids(self, data: SITSData) -> list[str]:
        """Ids of every series in the pre-training pool (training split first)."""
        return [str(i) for i in self._pretrain_reader(data).ids]

    def train_ids(self, data: SITSData, fraction: float) -> list[str]:
        return label_subset(data.split_ids["train"], fraction, data.subset_seed)

    def _pools(self, cell: Cell) -> tuple[str, str | None]:
        """(whose pool ``cell`` pre-trains on, whose pool it is matched to in size or None): a pool
        from another task is always matched to ours (:meth:`unlabeled`)."""
        source = cell.params.get("pretrain_source") or self.spec.name
        match = cell.params.get("pretrain_match") or (self.spec.name if source != self.spec.name else None)
        return source, match

    def data_dependencies(self, cell: Cell) -> tuple[str, ...]:
        """Other tasks whose data the jobs of ``cell`` read: the pool it pre-trains on and the pool it
        is matched to in size. The harness puts their data identities into those jobs' hashes and
        records."""
        return tuple(dict.fromkeys(n for n in self._pools(cell) if n and n != self.spec.name))

    def dependency_recipe(self, profile: str) -> dict[str, Any]:
        """What of this task's recipe another task's jobs use when they pre-train on (or match) its
        pool: the pool view's training crop and the hash-rank seed that subsamples it. It joins
        their hashes, unlike the loss weights, which those jobs never use."""
        return {"train_crop": self.train_crop.get(profile), "subset_seed": self.subset_seed}

    def unlabeled(self, data: SITSData, cell: Cell, ctx: RunContext) -> torch.utils.data.Dataset:
        """Both modalities of every series of the pre-training pool, without labels (the S4
        pre-training view): the training split's imagery plus the unlabeled collection
        (``tasks.sits.pool``).

        The S4 geographic ablation (Fig. 6a) fixes both pre-training pools to the same number of
        series. ``pretrain_source`` (a task name; default this task) says whose pool the view
        holds, ``pretrain_match`` (a task name) whose pool it is matched to in size; a pool from
        another task is always matched to ours. A matched pool holds ``n = min(len(pool),
        len(matched))`` series: the pool's first ``n`` ids ranked by ``sha256(f"{seed}:{id}")``
        (the label-subset rule, ``ranked_subset``), never a sorted prefix. Without either
        parameter the view is our whole pool.
        """
        length = self.temporal_length.get(ctx.profile)
        source, match = self._pools(cell)
        if source == self.spec.name and match in (None, self.spec.name):
            return _View(self._pretrain_reader(data), None, with_label=False, length=length, crop=self.train_crop.get(ctx.profile),
                         seed=getattr(ctx, "seed", 0))
        task, pool = self._pretrain_pool(data, source, ctx)
        if match is None or match == source:
            ids = None
        else:
            matched_task, matched = self._pretrain_pool(data, match, ctx)
            pool_ids = task.pretrain_ids(pool)
            n = min(len(pool_ids), len(matched_task.pretrain_ids(matched)))
            ids = ranked_subset(pool_ids, n, pool.subset_seed)
        return _View(task._pretrain_reader(pool), ids, with_label=False, length=length, crop=task.train_crop.get(ctx.profile),
                     seed=getattr(ctx, "seed", 0))

    def _pretrain_pool(self, data: SITSData, name: str, ctx: RunContext) -> tuple[SITSTask, SITSData]:
        """(task, resolved data) of a pre-training pool: ours, or another task's resolved from the
        same data root at the same profile (cached in ``data.others``)."""
        if name == self.spec.name:
            return self, data
        if name not in data.others:
            from benchmark.registry import load_task

            other = load_task(name)
            data.others[name] = (other, other.resolve_data(data.base, ctx.profile)[0])
        return data.others[name]

    def labeled(self, data: SITSData, split: str, cell: Cell, ctx: RunContext) -> torch.utils.data.Dataset:
        ids = self.train_ids(data, float(cell.params["label_fraction"])) if split == "train" else None
        crop = self.train_crop.get(ctx.profile) if split == "train" else None
        return _View(self._reader(data, split), ids, with_label=True, length=self.temporal_length.get(ctx.profile),
                     crop=crop, ignore_index=self.spec.metric.ignore_index, seed=getattr(ctx, "seed", 0))

    collate = staticmethod(sits_collate)

    def split_rule(self) -> dict[str, Any]:
        """The frozen rule that turns a copy of the dataset into splits (stored as ``rule.json``)."""
        return {"task": self.spec.name, "label_fractions": list(LABEL_FRACTIONS), "subset_seed": self.subset_seed,
                "subset_rule": "rank training ids by sha256(f'{seed}:{id}'), keep the first ceil(fraction * n)"}

    def materialized_splits(self, root: Path) -> dict[str, list[str]]:
        """The ids of every split and label fraction for the copy at ``root``."""
        ids = self.split_ids(root)
        out = {k: sorted(v) for k, v in ids.items()}
        for f in LABEL_FRACTIONS:
            out[f"train@{f:g}"] = label_subset(ids["train"], f, self.subset_seed)
        return out

    def split_file_names(self) -> tuple[str, str]:
        return "rule.json", f"synthetic-{self.synthetic_version}-seed{self.synthetic_seed}.json"

    def splits_dir(self) -> Path:
        import inspect

        return Path(inspect.getfile(type(self))).parent / "splits"

    def check_split_files(self) -> None:
        """Every split file of the spec exists with its recorded sha256."""
        for rel, sha in self.spec.split_files.items():
            read_split_file(self.splits_dir() / rel, sha)

    def check_materialized(self, data: SITSData) -> None:
        """For the embedded data, the frozen id lists must equal what the rule computes."""
        if data.identity.kind != "synthetic":
            return
        frozen = read_split_file(self.splits_dir() / self.split_file_names()[1], self.spec.split_files.get(self.split_file_names()[1]))
        if frozen != self.materialized_splits(data.root):
            raise DataError(f"{data.root}: its splits differ from the frozen {self.splits_dir() / self.split_file_names()[1]}; regenerate the embedded data")
