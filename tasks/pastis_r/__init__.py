"""Task ``pastis_r``: crop-type semantic segmentation on PASTIS-R from radar or optical series.

The S4 paper's Table 1 protocol: one split (folds 1–3 train, 4 val, 5 test), 100 % or 10 % of the
training patches labelled, inference from S1 radar or S2 RGB alone, mIoU over classes 0–18 with
void (19) ignored, 1000-resample percentile bootstrap over test patches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar

from benchmark.contracts import (
    BootstrapSpec,
    Cell,
    MetricSpec,
    PairedComparison,
    TableSpec,
    TaskSpec,
)
from benchmark.data import resolve_data_root
from benchmark.errors import BenchmarkError, DataError
from benchmark.estimate_data import EstimateData

from ..sits.estimate import RealSizes, sits_estimate_data
from ..sits.task import SITSTask, floor_comparisons, standard_cells
from .dataset import CLASS_NAMES, TRAIN_FOLDS, VOID, PastisRDataset, read_metadata
from .synthetic import (
    EMBEDDED_POOL_FACTOR,
    GENERATOR_VERSION,
    MINI_CLASS_WEIGHTS,
    POOL_DIR,
    generate,
)

SPLITS_DIR = Path(__file__).parent / "splits"
ZENODO_URL = "https://zenodo.org/records/5735646/files/PASTIS-R.zip?download=1"
ZENODO_MD5 = "4887513d6c2d2b07fa935d325bd53e09"
FOLDS = {"train": TRAIN_FOLDS, "val": (4,), "test": (5,)}

# S4 Fig. 6a: pre-training on the same location (SL, PASTIS-R's own training imagery) vs a different
# location (DL, South Sudan imagery), both pools holding the same number of series: min(ours,
# theirs), the larger pool subsampled by hash rank (``SITSTask.unlabeled``). With the same epochs
# and batch, both pre-trainings then take the same number of steps.
DL_CELLS = tuple(
    Cell(f"{m}-{f}-dl", {"modality": m, "label_fraction": f / 100, "pretrain_source": "africa_crop_type"},
         shared={"pretrain": "pretrain-africa_crop_type"}, label=f"{m.capitalize()} {f} %, DL pre-training")
    for f in (100, 10) for m in ("radar", "optical")
)
SL_CELLS = tuple(
    Cell(f"{m}-{f}-sl", {"modality": m, "label_fraction": f / 100, "pretrain_source": "pastis_r",
                         "pretrain_match": "africa_crop_type"},
         shared={"pretrain": "pretrain-sl-matched"}, label=f"{m.capitalize()} {f} %, SL pre-training (matched)")
    for f in (100, 10) for m in ("radar", "optical")
)
MAIN_CELLS = ("radar-100", "optical-100", "radar-10", "optical-10")

SPEC = TaskSpec(
    name="pastis_r",
    version="1",
    family="segmentation",
    description="PASTIS-R crop-type segmentation from S1 radar or S2 RGB series, 100 % / 10 % labels (mIoU)",
    cells=standard_cells((*DL_CELLS, *SL_CELLS)),
    metric=MetricSpec(name="miou", num_classes=19, ignore_index=VOID, class_names=CLASS_NAMES, averaging="macro",
                      absent_class_policy="test-labels"),
    bootstrap=BootstrapSpec(unit="patch", method="percentile", resamples=1000, level=0.95, seed=0),
    split_files={
        "rule.json": "06b0f46bded3fe7f200c855abfc28e8e7d89b5bdcaf021ecd409d50a96a7f4c7",
        f"synthetic-{GENERATOR_VERSION}-seed0.json": "3a5f8c08e80f3daf50a027a957dbcfeceeae587d7e6590ca61c94a8794d6228a",
    },
    paper="Shenoy et al., S4: Self-Supervised Sensing Across the Spectrum (2024), Table 1",
    tables={
        "main": TableSpec("Table 1 (PASTIS-R)", cells=MAIN_CELLS),
        "ablation_5a": TableSpec("Fig. 5a: loss ablation", cells=("optical-100", "radar-100"), entries=("s4_contrastive", "s4_reconstruction", "s4")),
        "ablation_5b": TableSpec("Fig. 5b: modality ablation", cells=("optical-100", "radar-100"), entries=("s4_single_modal", "s4")),
        # only the size-matched pair: Table 1's cells pre-train on PASTIS-R's whole (larger) pool,
        # and set beside DL they would confound location with data and compute
        "ablation_6a": TableSpec("Fig. 6a: geographic ablation (SL = same location, DL = South Sudan pre-training, "
                                 "as many series each)",
                                 cells=(*(c.name for c in SL_CELLS), *(c.name for c in DL_CELLS)), entries=("s4",)),
    },
    comparisons=(*floor_comparisons(MAIN_CELLS),
                 *(PairedComparison(f"DL vs SL pre-training ({c})", f"{c}-dl", f"{c}-sl") for c in MAIN_CELLS)),
)


class PastisRTask(SITSTask):
    spec: ClassVar[TaskSpec] = SPEC
    dataset_dirname: ClassVar[str] = "PASTIS-R"
    synthetic_version: ClassVar[str] = GENERATOR_VERSION
    channels: ClassVar[dict[str, int]] = {"radar": 3, "optical": 3}
    real_sizes: ClassVar[RealSizes] = RealSizes(
        side=128, radar_dates=70, optical_dates=61, n_train=1455, n_val=482, n_test=496, coords=True,
        source="PASTIS-R: 2,433 patches of 128 x 128 px in 5 folds (train = folds 1-3, val 4, test 5); "
               "S2 38-61 dates, S1A ~70 (longest series, as the collate pads to it)")

    # At ``mini`` (a few hundred CPU steps) the loss weights each class by 1 / sqrt(its parcel share
    # in the embedded data), normalised to mean 1: without it the six rarest classes (1.5 % of the
    # parcels each) are never predicted within the budget. ``paper`` keeps the official recipe's
    # uniform weights (utae-paps ``train_semantic.py``: void alone weighted 0).
    profile_class_weights: ClassVar[dict[str, tuple[float, ...]]] = {"mini": MINI_CLASS_WEIGHTS}

    def __init__(self, radar: str = "S1A", optical_bands: str = "rgb"):
        self.radar, self.optical_bands = radar, optical_bands
        self.channels = {"radar": 3, "optical": 3 if optical_bands == "rgb" else 10}

    def estimate_data(self, profile: str) -> EstimateData:
        """Real-size stand-ins of the views, for ``benchmark estimate``."""
        return sits_estimate_data(self, profile)

    def split_rule(self) -> dict[str, Any]:
        return {**super().split_rule(), "folds": {k: list(v) for k, v in FOLDS.items()}}

    def is_dataset(self, root: Path) -> bool:
        return (root / "metadata.geojson").is_file() and (root / "DATA_S2").is_dir() and (root / "ANNOTATIONS").is_dir()

    def split_ids(self, root: Path) -> dict[str, list[str]]:
        props = read_metadata(root)
        return {split: [str(p["ID_PATCH"]) for p in props if int(p["Fold"]) in folds] for split, folds in FOLDS.items()}

    def reader(self, root: Path, split: str, **kwargs: Any) -> PastisRDataset:
        return PastisRDataset(root, FOLDS[split], radar=self.radar, optical_bands=self.optical_bands, **kwargs)

    def generate_synthetic(self, out: Path, seed: int, **size: Any) -> dict[str, str]:
        return generate(out, seed, **{"pool_factor": EMBEDDED_POOL_FACTOR, **size})

    def pool_reader(self, root: Path, **kwargs: Any) -> PastisRDataset | None:
        """``UNLABELED_POOL/`` under the dataset folder (PASTIS-R layout without annotations),
        normalised with the dataset's own training-fold statistics."""
        pool = Path(root) / POOL_DIR
        if not (pool / "metadata.geojson").is_file():
            return None
        folds = sorted({int(p["Fold"]) for p in read_metadata(pool)})
        return PastisRDataset(pool, folds, radar=self.radar, optical_bands=self.optical_bands, labels=False, norm_root=root, **kwargs)

    def split_source(self, root: Path) -> str:
        return str(root / "metadata.geojson")

    def real_checksum(self, root: Path) -> str:
        from ..sits.splits import file_sha256

        return "metadata.geojson:" + file_sha256(root / "metadata.geojson")

    # -- `python -m benchmark download pastis_r`
    def add_download_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-root", type=Path, default=None, help="where PASTIS-R/ goes (default: $BENCHMARK_DATA or ~/.cache/benchmark)")
        parser.add_argument("--url", default=ZENODO_URL, help="archive URL (default: the Zenodo record 5735646)")
        parser.add_argument("--md5", default=ZENODO_MD5, help="expected md5 of the archive (the published one by default)")
        parser.add_argument("--from-archive", type=Path, default=None, help="install a PASTIS-R.zip you already have instead of downloading")
        parser.add_argument("--keep-archive", action="store_true", help="keep the zip after extraction")
        parser.add_argument("--no-progress", action="store_true")

    def download(self, args: argparse.Namespace) -> int:
        from ..common.download import download_file, install_archive

        root = resolve_data_root(args.data_root)
        target = root / self.dataset_dirname
        if self.is_dataset(target):
            print(f"PASTIS-R is already installed at {target}")
            return 0
        root.mkdir(parents=True, exist_ok=True)
        archive = args.from_archive
        try:
            if archive is None:
                archive = root / "PASTIS-R.zip"
                print(f"downloading {args.url} -> {archive} (54 GB for the real archive; kept only once its md5 matches; "
                      "an interrupted transfer is retried from the start and leaves no partial file)")
                download_file(args.url, archive, md5=args.md5, progress=not args.no_progress)
            elif not archive.is_file():
                raise BenchmarkError(f"--from-archive {archive} does not exist")
            install_archive(archive, root, md5=args.md5)
        except (ValueError, OSError) as exc:  # checksum mismatch, unsafe archive, network failure
            raise BenchmarkError(str(exc)) from None
        if not self.is_dataset(target):
            raise DataError(f"{archive} extracted, but {target} does not hold metadata.geojson, DATA_S2/ and ANNOTATIONS/")
        if args.from_archive is None and not args.keep_archive:
            archive.unlink()
        print(f"PASTIS-R installed at {target}")
        return 0
