"""The contracts between the harness, tasks and entries (docs/design.md, docs/entries.md).

Everything a task or an entry needs from the harness is defined here, so that
``tasks``, ``reference_models`` and ``baselines`` depend on this module and the
harness never depends on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch

from .errors import BenchmarkError

Family = Literal["segmentation", "reconstruction"]
FAMILIES: tuple[str, ...] = ("segmentation", "reconstruction")
PROFILES: tuple[str, ...] = ("smoke", "mini", "paper")
# per-job wall-clock limit by profile (seconds; ``run --job-timeout`` overrides): generous bounds
# that only a hung job reaches (slowest committed mini job: 286 s on a loaded 2-core CPU)
JOB_TIMEOUT_S: Mapping[str, float] = {"smoke": 1800.0, "mini": 6 * 3600.0, "paper": 7 * 24 * 3600.0}
# how a stage's optimizer step was batched (``FitResult`` fields): ranks, samples per forward per
# rank, micro-batches accumulated per step, and the global batch = their product
BATCH_FIELDS: tuple[str, ...] = ("world_size", "micro_batch_size", "accumulate", "global_batch_size")


# --------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class EntryMetadata:
    """Declarative description of an entry, shown by ``benchmark list`` and stored in records."""

    name: str
    version: str
    family: Family
    description: str
    citation: str = ""
    inputs: tuple[str, ...] = ()  # modalities (segmentation) or sources (reconstruction) it consumes
    pretraining: str = "none"  # e.g. "multi-modal contrastive + cross-modal reconstruction"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"entry name {self.name!r} must be non-empty and alphanumeric (_ and - allowed)")
        if self.family not in FAMILIES:
            raise ValueError(f"entry {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if not self.version:
            raise ValueError(f"entry {self.name!r}: version must be non-empty")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Progress(Protocol):
    """What ``RunContext.progress`` returns: a handle you advance and annotate."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values: Any) -> None: ...


@dataclass
class RunContext:
    """Everything a job hands to an entry: where to run, with what settings, where to keep state.

    ``hparams`` is the entry's profile dict (``Entry.profiles[profile]``) merged with the cell's
    overrides. ``checkpoint_dir`` is private to (task, profile, entry, seed, stage): stages that
    share a key (e.g. one pre-training reused by several cells) share a folder, which is how
    ``benchmark.training.fit`` resumes or skips finished work.
    """

    device: torch.device
    seed: int
    profile: str
    hparams: dict[str, Any]
    checkpoint_dir: Path
    cell: Mapping[str, Any] = field(default_factory=dict)
    task_info: Mapping[str, Any] = field(default_factory=dict)  # e.g. num_classes, ignore_index, channels
    collate: Callable[[list[Any]], Any] | None = None  # the task's batch collate (time padding + masks, ...)
    show_progress: bool = True
    fit_log: dict[str, dict[str, Any]] = field(default_factory=dict)  # shared by stage() copies
    job_dir: Path | None = None  # the job's own folder (stage() copies keep it); curves are referenced from it

    def __post_init__(self) -> None:
        if self.job_dir is None:
            self.job_dir = self.checkpoint_dir

    @contextlib.contextmanager
    def progress(self, total: int | None, desc: str) -> Iterator[Progress]:
        """A tqdm bar (or a silent stand-in when progress is off)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, disable=not self.show_progress, leave=False, dynamic_ncols=True)
        try:
            yield bar
        finally:
            bar.close()

    def stage(self, key: str, **overrides: Any) -> RunContext:
        """A copy whose checkpoint folder is ``<checkpoint_dir>/<key>`` (shared by every job using ``key``)."""
        path = self.checkpoint_dir / key
        path.mkdir(parents=True, exist_ok=True)
        return dataclasses.replace(self, checkpoint_dir=path, **overrides)

    def record_fit(self, stage: str, result: Any) -> None:
        """Let the harness see training throughput and the curve: pass the ``FitResult`` of
        ``benchmark.training.fit``, or any object with the attributes ``steps_done``,
        ``resumed_from``, ``samples_seen``, ``wall_time_s`` (missing ones count as 0) and optionally
        ``curve_file`` (a file under the job's folder; see ``benchmark.curves``) and the batching
        of a step, :data:`BATCH_FIELDS` (missing ones are recorded as unknown, ``None``)."""
        curve = getattr(result, "curve_file", None)
        if curve is not None:
            try:
                curve = Path(curve).resolve().relative_to(Path(self.job_dir or self.checkpoint_dir).resolve()).as_posix()
            except ValueError:
                curve = None  # only files in the job's own folder are referenced from its record
        self.fit_log[stage] = {
            "steps": int(getattr(result, "steps_done", 0)),
            "resumed_from": int(getattr(result, "resumed_from", 0)),
            "samples": int(getattr(result, "samples_seen", 0)),
            "seconds": float(getattr(result, "wall_time_s", 0.0)),
            "curve": curve,
            **{key: _whole_or_none(getattr(result, key, None)) for key in BATCH_FIELDS},
        }

    def generator(self, offset: int = 0) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + offset)
        return g


def _whole_or_none(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (not a bool), else None: unknown, not guessed."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


class Entry(Protocol):
    """Common part of every entry class. ``profiles`` maps profile name to hyper-parameters."""

    metadata: ClassVar[EntryMetadata]
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]]

    def parameter_count(self) -> int: ...


@runtime_checkable
class SegmentationEntry(Protocol):
    """Segmentation family: self-supervised pre-training, fine-tuning, per-pixel logits."""

    metadata: ClassVar[EntryMetadata]
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]]

    def pretrain(self, unlabeled: torch.utils.data.Dataset, ctx: RunContext) -> None: ...
    def finetune(self, labeled: torch.utils.data.Dataset, modality: str, ctx: RunContext) -> None: ...
    def predict(self, batch: Mapping[str, Any], modality: str) -> torch.Tensor: ...


@runtime_checkable
class ReconstructionEntry(Protocol):
    """Reconstruction family: fit on windows, then sample the target source in normalized units."""

    metadata: ClassVar[EntryMetadata]
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]]

    def fit(self, train: torch.utils.data.Dataset, val: torch.utils.data.Dataset, ctx: RunContext) -> None: ...
    def sample(self, batch: Mapping[str, Any], n: int, generator: torch.Generator) -> torch.Tensor: ...


FAMILY_PROTOCOLS: dict[str, type] = {
    "segmentation": SegmentationEntry,
    "reconstruction": ReconstructionEntry,
}
FAMILY_METHODS: dict[str, tuple[str, ...]] = {
    "segmentation": ("pretrain", "finetune", "predict"),
    "reconstruction": ("fit", "sample"),
}


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Cell:
    """One configuration of a task's table (a row/column of the paper's Table 1).

    ``params`` are task-defined (e.g. ``modality``, ``label_fraction``, ``train_window_h``);
    ``shared`` maps a training stage to the key under which its state is shared between cells
    (e.g. ``{"pretrain": "unlabeled-train"}``), so expensive stages run once.
    """

    name: str
    params: Mapping[str, Any]
    shared: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # what tables print (e.g. "Radar 100 %"); the name when empty

    @property
    def title(self) -> str:
        return self.label or self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "shared": dict(self.shared)}


@dataclass(frozen=True)
class PairedComparison:
    """A paired-bootstrap difference ``metric(a) − metric(b)`` rendered with the tables.

    ``a`` and ``b`` are cells. Without entries it compares two cells of the same entry (e.g. 1 h
    vs 6 h training), one row per entry; with ``b_entry`` every other entry's ``a`` cell is
    compared with ``b_entry``'s ``b`` cell (e.g. each method vs the from-scratch floor).
    """

    title: str
    a: str
    b: str
    b_entry: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """One of a task's tables: which cells (columns/rows) and which entries it shows.

    Empty ``cells`` means every cell of the task; empty ``entries`` means every entry with
    records. ``python -m benchmark run`` runs the union of the tables' (cells × entries) jobs.
    """

    title: str
    cells: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricSpec:
    """How a task is scored. Segmentation uses the IoU fields, reconstruction the CRPS fields."""

    name: str  # "miou" or "crps"
    num_classes: int | None = None
    ignore_index: int | None = None
    class_names: tuple[str, ...] = ()
    averaging: str = "macro"
    # "test-labels": the mean runs over the classes present in the test labels, the same set in
    # every bootstrap replicate and on both sides of a comparison
    absent_class_policy: str = "test-labels"
    crps_estimator: str = "standard"
    ensemble_size: int | None = None
    units: str = ""  # e.g. "K"
    higher_is_better: bool = True


@dataclass(frozen=True)
class BootstrapSpec:
    """How a task's intervals are computed.

    ``unit`` is what the headline interval resamples: the independent unit of the test set
    (a PASTIS-R patch, a South Sudan tile, a TC-PRIMED storm). When the scored rows are finer
    than that unit (TC-PRIMED scores (sample, channel) rows, grouped in storms), ``cluster``
    names the unit and the rows' stored ``cluster`` column holds it; ``row_unit`` names the rows,
    and the interval that treats them as independent (the TC-PRIMED paper's) is kept as a
    labelled extra. Comparisons use ``comparison_resamples``; with fewer than ``min_units``
    units tables warn and comparisons add a sign-flip p over units.
    """

    unit: str  # "patch", "tile", "storm", ...
    method: str = "percentile"
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    cluster: str | None = None  # the rows' stored cluster column holds `unit` (e.g. "storm")
    row_unit: str | None = None  # the finer scored rows (e.g. "sample-channel")
    comparison_resamples: int = 10_000
    min_units: int = 30


DEFAULT_SEEDS: Mapping[str, int] = {"smoke": 1, "mini": 3, "paper": 3}


@dataclass(frozen=True)
class TaskSpec:
    """Declarative task metadata. Bump ``version`` on any change of data, split or metric."""

    name: str
    version: str
    family: Family
    description: str
    cells: tuple[Cell, ...]
    metric: MetricSpec
    bootstrap: BootstrapSpec
    split_files: Mapping[str, str] = field(default_factory=dict)  # relative path -> sha256
    paper: str = ""  # citation of the paper whose table this reproduces
    tables: Mapping[str, str | TableSpec] = field(default_factory=lambda: {"main": "Table 1"})
    comparisons: tuple[PairedComparison, ...] = ()
    extended_table: bool = False  # also render every metric in a second, wide table (long-layout tasks)
    seeds: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEEDS))  # default seeds per profile

    def __post_init__(self) -> None:
        self.check_comparisons()

    def default_seeds(self, profile: str) -> list[int]:
        """Seeds ``run`` uses at ``profile`` when none are given: 0 .. n-1."""
        return list(range(int(self.seeds.get(profile, 1))))

    def table_specs(self) -> dict[str, TableSpec]:
        """Tables with their cells resolved (a plain title stands for every cell and entry)."""
        out = {}
        for key, t in self.tables.items():
            t = TableSpec(t) if isinstance(t, str) else t
            unknown = [c for c in t.cells if c not in {x.name for x in self.cells}]
            if unknown:
                raise ValueError(f"task {self.name!r}: table {key!r} names unknown cell(s) {unknown}")
            out[key] = TableSpec(t.title, t.cells or tuple(c.name for c in self.cells), t.entries)
        return out

    def check_comparisons(self) -> None:
        names = {c.name for c in self.cells}
        for comp in self.comparisons:
            unknown = [c for c in (comp.a, comp.b) if c not in names]
            if unknown:
                raise ValueError(f"task {self.name!r}: comparison {comp.title!r} names unknown cell(s) {unknown}")

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise KeyError(f"task {self.name!r} has no cell {name!r}; cells: {', '.join(c.name for c in self.cells)}")


@dataclass(frozen=True)
class DataIdentity:
    """Which data a job saw: real (with checksum) or the embedded synthetic set (generator + seed)."""

    kind: Literal["real", "synthetic"]
    root: str
    checksum: str = ""
    generator_version: str = ""
    seed: int | None = None

    @property
    def is_real(self) -> bool:
        return self.kind == "real"


class Task(Protocol):
    """A task: its spec plus the code that finds data and yields datasets.

    Family-specific methods (called only by the matching protocol runner):

    segmentation
        ``unlabeled(data, cell, ctx)``, ``labeled(data, split, cell, ctx)`` (split in
        train/val/test, train already cut to the cell's label fraction), ``collate``.
    reconstruction
        ``windows(data, split, cell, ctx)``, ``collate``, ``denormalize(values, batch)`` to
        Kelvin, and per-sample ``units(batch)`` (e.g. storm ids) for cluster bootstrap.

    Optional CLI hooks: ``download(args)``, ``prepare(args)``, ``make_data(args)``, each with a
    matching ``add_<command>_arguments(parser)``.
    """

    spec: TaskSpec

    def resolve_data(self, data_root: Path | None, profile: str) -> tuple[Any, DataIdentity]: ...


EntryFactory = Callable[[], Any]


def profile_hparams(entry_cls: type, profile: str) -> dict[str, Any]:
    """The entry's hyper-parameters for ``profile`` (a clear error if it does not define it)."""
    profiles = getattr(entry_cls, "profiles", None) or {}
    if profile not in profiles:
        name = getattr(getattr(entry_cls, "metadata", None), "name", entry_cls.__name__)
        have = ", ".join(profiles) or "none"
        raise BenchmarkError(f"entry {name!r} has no profile {profile!r} (it defines: {have})")
    return dict(profiles[profile])
