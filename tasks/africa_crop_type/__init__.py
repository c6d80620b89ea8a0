"""Task ``africa_crop_type``: crop-type segmentation on South Sudan (S4 paper, Table 1).

Protocol (``docs/design.md``, protocol decisions): the SustainBench release of South Sudan, partitions from its
``list_eval_partition.csv`` (0 train, 1 val, 2 test), 10 % label subsets of the training tiles
by :func:`tasks.sits.splits.label_subset` (seed 0, nested in 100 %), labels 1–4 (sorghum, maize,
rice, groundnut) → classes 0–3, raw 0 (unlabelled) ignored, mIoU over the 4 crops; radar = S1
(VV, VH, VH/VV), optical = S2 RGB; time sorted by the dates files. Without the real data the
embedded synthetic set (:mod:`.synthetic`) is generated in the same layout and read by the same
reader (:mod:`.dataset`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, ClassVar

from benchmark.contracts import BootstrapSpec, Cell, MetricSpec, TaskSpec
from benchmark.data import resolve_data_root
from benchmark.errors import BenchmarkError, DataError
from benchmark.estimate_data import EstimateData
from tasks.sits.estimate import RealSizes, sits_estimate_data
from tasks.sits.splits import check_disjoint, file_sha256
from tasks.sits.task import SITSData, SITSTask, floor_comparisons, standard_cells

from .dataset import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PARTITION_CSV,
    PARTITIONS,
    POOL_DIR,
    REFERENCE_DATE,
    SouthSudanDataset,
    read_partitions,
)

log = logging.getLogger(__name__)

DRIVE_URL = "https://drive.google.com/drive/folders/1WhVObtFOzYFiXBsbbrEGy1DUtv7ov7wF"
RELEASE_DIR = "africa_crop_type_mapping_v1.0"  # top folder of SustainBench's archive
SPLITS_DIR = Path(__file__).parent / "splits"
RULE_FILE = "rule.json"
SYNTHETIC_SPLIT_FILE = "synthetic-3-seed0.json"  # SITSTask.split_file_names(): synthetic-{version}-seed{seed}
EXPECTED_REAL_COUNTS = {"train": 554, "val": 66, "test": 67}
SPLIT_FILES = {
    RULE_FILE: "4663e8a07dfecc032df95bfcd7b613338a0186b0dc2610386c0196b957feb78a",
    SYNTHETIC_SPLIT_FILE: "c623b53a581fa9d1e245b10687fae22c4978ddb715ff482d15ebd6afcbf679c7",
}
# Where a real copy may sit under the data root (the first is what the archive extracts to).
CANDIDATE_DIRS = (f"{RELEASE_DIR}/southsudan", "southsudan", "africa_crop_type_mapping/southsudan", "africa_crop_type/southsudan")


def partition_ids(root: Path) -> dict[str, list[str]]:
    """Tile ids of train/val/test from the csv under ``root`` (file order)."""
    rows = read_partitions(root)
    return {name: [t for t, p in rows if p == code] for name, code in PARTITIONS.items()}


class AfricaCropTypeTask(SITSTask):
    spec: ClassVar[TaskSpec] = TaskSpec(
        name="africa_crop_type",
        version="1",
        family="segmentation",
        description="South Sudan crop-type segmentation (SustainBench layout) from S1 radar or S2 RGB series, 100 % / 10 % labels (mIoU over 4 crops)",
        cells=standard_cells(),
        metric=MetricSpec(name="miou", num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX, class_names=CLASS_NAMES, averaging="macro", absent_class_policy="test-labels"),
        bootstrap=BootstrapSpec(unit="tile", method="percentile", resamples=1000, level=0.95, seed=0),
        split_files=SPLIT_FILES,
        paper="Shenoy et al. 2024, S4: Self-Supervised Sensing Across the Spectrum (arXiv 2405.01656)",
        tables={"main": "Table 1 (Africa Crop Type / South Sudan)"},
        comparisons=floor_comparisons(),
    )
    dataset_dirname: ClassVar[str] = CANDIDATE_DIRS[0]
    synthetic_version: ClassVar[str] = "3"
    channels: ClassVar[dict[str, int]] = {"radar": 3, "optical": 3}
    real_sizes: ClassVar[RealSizes] = RealSizes(
        side=64, radar_dates=80, optical_dates=60, n_train=554, n_val=66, n_test=67,
        source="South Sudan (SustainBench layout): 554 / 66 / 67 tiles of 64 x 64 px; series lengths "
               "are upper bounds assumed for 2017 (S1 mixing both orbits: 80, S2: 60), not counted on the files")
    # Rustowicz et al.'s South Sudan recipe weights the loss by 1 − class frequency
    # (frequencies 0.72 / 0.11 / 0.10 / 0.07 for sorghum / maize / rice / groundnut): without it
    # the minority crops are never predicted at small training budgets.
    class_weights: ClassVar[tuple[float, ...] | None] = (0.28, 0.89, 0.90, 0.93)
    # the embedded tiles are 16 × 16 px (the real ones 64 × 64): whole tiles at every profile
    train_crop: ClassVar[dict[str, int | None]] = {"smoke": None, "mini": None, "paper": None}

    # -- what SITSTask needs
    def estimate_data(self, profile: str) -> EstimateData:
        """Real-size stand-ins of the views, for ``benchmark estimate``."""
        return sits_estimate_data(self, profile)

    def reader(self, root: Path, split: str, **kwargs: Any) -> SouthSudanDataset:
        return SouthSudanDataset(root, [split], **kwargs)

    def is_dataset(self, root: Path) -> bool:
        root = Path(root)
        return (root / PARTITION_CSV).is_file() and (root / "npy").is_dir() and (root / "truth").is_dir()

    def generate_synthetic(self, out: Path, seed: int, **size: Any) -> dict[str, str]:
        from .synthetic import EMBEDDED_POOL_FACTOR, write_south_sudan

        return write_south_sudan(out, seed, **{"pool_factor": EMBEDDED_POOL_FACTOR, **size})

    def pool_reader(self, root: Path, **kwargs: Any) -> SouthSudanDataset | None:
        """``unlabeled_pool/`` under the ``southsudan`` folder (SustainBench layout without
        ``truth/``; every tile in its csv is used, whatever its partition code)."""
        pool = Path(root) / POOL_DIR
        if not (pool / PARTITION_CSV).is_file():
            return None
        return SouthSudanDataset(pool, ["train", "val", "test"], labels=False, **kwargs)

    def split_rule(self) -> dict[str, Any]:
        return {**super().split_rule(),
                "source": f"{PARTITION_CSV} of the release (columns id, partition); ids are the six-digit tile ids of the file names",
                "partition": dict(PARTITIONS),
                "expected_real_counts": dict(EXPECTED_REAL_COUNTS),
                "expected_real_counts_source": "Rustowicz crop-type-mapping dataset_splits/ssudan_{train,val,test}.txt, kept by SustainBench [not verified on the csv]"}

    def split_ids(self, root: Path) -> dict[str, list[str]]:
        splits = partition_ids(root)
        check_disjoint(splits, where=str(Path(root) / PARTITION_CSV))
        if not splits["train"] or not splits["test"]:
            raise DataError(f"{Path(root) / PARTITION_CSV}: no {'train' if not splits['train'] else 'test'} tiles (partition codes 0 train, 1 val, 2 test)")
        got = {k: len(v) for k, v in splits.items()}
        if not (Path(root) / "MANIFEST.json").is_file() and got != EXPECTED_REAL_COUNTS:
            log.warning("%s: partitions have %s tiles, the published South Sudan split has %s", Path(root) / PARTITION_CSV, got, EXPECTED_REAL_COUNTS)
        return splits

    def split_source(self, root: Path) -> str:
        return str(Path(root) / PARTITION_CSV)

    def real_checksum(self, root: Path) -> str:
        return file_sha256(Path(root) / PARTITION_CSV)

    def info(self, data: SITSData, cell: Cell) -> dict[str, Any]:
        return {**super().info(data, cell), "reference_date": REFERENCE_DATE.isoformat()}

    # -- where a real copy is
    def find_dataset(self, base: Path) -> Path | None:
        base = Path(base)
        for cand in (base, *(base / d for d in CANDIDATE_DIRS)):
            if self.is_dataset(cand):
                return cand
        return None

    def resolve_data(self, data_root: Path | None, profile: str, *, show_progress: bool | None = None) -> tuple[SITSData, Any]:
        found = self.find_dataset(resolve_data_root(data_root))
        return super().resolve_data(found if found is not None else data_root, profile, show_progress=show_progress)

    # -- python -m benchmark download africa_crop_type
    def add_download_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-root", type=Path, default=None, help=f"data root (default: $BENCHMARK_DATA or {resolve_data_root(None)})")
        parser.add_argument("--from-archive", type=Path, metavar="FILE", help="install an archive you already downloaded (.tar.gz or .zip)")
        parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the archive (verified before extracting)")
        parser.add_argument("--md5", metavar="HEX", help="expected md5 of the archive")

    def instructions(self, data_root: Path) -> str:
        target = data_root / CANDIDATE_DIRS[0]
        return f"""South Sudan crop types (SustainBench "africa_crop_type_mapping" v1.0) has no stable direct download URL.

1. Open the SustainBench Google Drive folder
     {DRIVE_URL}
   (dataset africa_crop_type_mapping; the folder PANGAEA downloads too) and download its archive
   (archive.tar.gz, which unpacks to {RELEASE_DIR}/ with the southsudan/ folder), in a browser or
   with `gdown --folder {DRIVE_URL}`.
2. Install it (checksum verified, safe extraction):
     python -m benchmark download africa_crop_type --data-root {data_root} --from-archive archive.tar.gz [--sha256 HEX]
   or extract it yourself so that this layout exists (only southsudan/ is used; ghana/ is ignored):
     {target}/
       list_eval_partition.csv          columns id, partition (0 train, 1 val, 2 test)
       npy/southsudan_{{id:06d}}.npz      arrays s1, s2, planet (C x H x W x T)
       truth/southsudan_{{id:06d}}.npz    array truth (64 x 64; 0 unlabelled, 1-4 crops)
       s1/s1_southsudan_{{id:06d}}.json   {{"dates": ["YYYY-MM-DD", ...]}}
       s2/s2_southsudan_{{id:06d}}.json
   ({data_root}/southsudan/ is found too.)
3. Check: python -m benchmark run --task africa_crop_type --data-root {data_root} ... reports "real" data.
Until then the task runs on its embedded synthetic dataset (reported as synthetic)."""

    def download(self, args: argparse.Namespace) -> int:
        data_root = resolve_data_root(getattr(args, "data_root", None))
        archive = getattr(args, "from_archive", None)
        if archive is None:
            found = self.find_dataset(data_root)
            print(self.instructions(data_root))
            if found is not None:
                print(f"\nA copy is already installed at {found}.")
            return 0
        from tasks.common.download import install_archive

        archive = Path(archive)
        try:
            tops = install_archive(archive, data_root, sha256=getattr(args, "sha256", None), md5=getattr(args, "md5", None))
        except (ValueError, OSError) as exc:  # checksum mismatch, unsafe or corrupt archive, missing file, existing folder
            raise BenchmarkError(f"cannot install {archive}: {exc}") from exc
        found = self.find_dataset(data_root)
        if found is None:
            print(f"extracted {archive} into {data_root} ({', '.join(p.name for p in tops) or 'nothing'}), but found no South Sudan dataset "
                  f"(a folder with {PARTITION_CSV}, npy/ and truth/) at {data_root} or under {', '.join(CANDIDATE_DIRS)}")
            return 1
        rows = read_partitions(found)
        counts = {name: sum(p == code for _, p in rows) for name, code in PARTITIONS.items()}
        print(f"installed South Sudan at {found}: {len(rows)} tiles ({', '.join(f'{k} {v}' for k, v in counts.items())})")
        return 0
