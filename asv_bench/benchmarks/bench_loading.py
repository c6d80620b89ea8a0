"""Training-view read throughput (samples/s) of the PASTIS-R reader against a plain per-item
``np.load`` loader on the same real-size files (128 × 128 px, 38–61 S2 and 60–75 S1 dates).

Why: a GPU step at ``mini`` uses 8 evenly spaced dates per modality, at ``paper`` whole series;
the reader memory-maps the arrays and decodes only the kept dates (``tasks.pastis_r.dataset``),
where a plain loader decodes each whole file and then drops what it does not use. ``mini`` is
8 dates, ``paper`` the whole series. The plain loader does less work per kept value (no
normalisation, no checks, no dates), so a ratio above 1 is the saving of reading less.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ._ratio import paired_speedup

LENGTHS = {"mini": 8, "paper": None}
FOLDS = [1, 2, 3, 4, 5]


def training_view(root: str, length: int | None) -> Any:
    """A training view (``length`` dates per modality, labels kept) over a fresh reader."""
    from tasks.pastis_r.dataset import PastisRDataset
    from tasks.sits.task import _View

    return _View(PastisRDataset(root, FOLDS, cache=False), None, with_label=True, length=length)


def read_view(view: Any) -> int:
    for i in range(len(view)):
        view[i]
    return len(view)


def read_with_reader(root: str, length: int | None) -> int:
    """Every sample through a training view over a fresh reader: a first epoch, nothing known yet
    (the float arrays' non-finite dates are scanned once per file and process)."""
    return read_view(training_view(root, length))


def read_with_np_load(root: str, length: int | None) -> int:
    """The plain loader: per item, ``np.load`` each whole file, then keep RGB and the dates used."""
    import json

    import numpy as np

    from tasks.sits.subsample import even_indices

    ids = [f["properties"]["ID_PATCH"] for f in json.loads((Path(root) / "metadata.geojson").read_text())["features"]]
    for pid in ids:
        label = np.load(Path(root) / "ANNOTATIONS" / f"TARGET_{pid}.npy")[0].astype(np.int64)
        for sat, channels in (("S2", [2, 1, 0]), ("S1A", [0, 1, 2])):
            series = np.load(Path(root) / f"DATA_{sat}" / f"{sat}_{pid}.npy")
            keep = slice(None) if length is None else even_indices(len(series), length).numpy()
            np.asarray(series[keep][:, channels], dtype=np.float32)
        del label
    return len(ids)


class PastisRTrainingReads:
    params = list(LENGTHS)
    param_names = ["profile"]
    timeout = 300

    def setup_cache(self) -> str:
        from tasks.pastis_r.synthetic import generate

        root = Path(tempfile.mkdtemp(prefix="asv-pastis-real-size-")) / "PASTIS-R"
        generate(root, seed=0, n_patches=10, size=128, s2_dates=(38, 61), s1_dates=(60, 75), progress=False)
        return str(root)

    def time_reader(self, root: str, profile: str) -> None:
        read_with_reader(root, LENGTHS[profile])

    def time_np_load(self, root: str, profile: str) -> None:
        read_with_np_load(root, LENGTHS[profile])

    def track_reader_samples_per_second(self, root: str, profile: str) -> float:
        return _rate(read_with_reader, root, LENGTHS[profile])

    track_reader_samples_per_second.unit = "samples/s"

    def track_np_load_samples_per_second(self, root: str, profile: str) -> float:
        return _rate(read_with_np_load, root, LENGTHS[profile])

    track_np_load_samples_per_second.unit = "samples/s"

    def track_reader_speedup_vs_np_load(self, root: str, profile: str) -> float:
        """samples/s of the reader / samples/s of the plain loader, side by side (median of pairs),
        in the steady state of a training run: later epochs of one reader (persistent workers)."""
        length = LENGTHS[profile]
        view = training_view(root, length)
        read_view(view)
        return paired_speedup(lambda: read_with_np_load(root, length), lambda: read_view(view))

    track_reader_speedup_vs_np_load.unit = "x"

    def track_first_epoch_speedup_vs_np_load(self, root: str, profile: str) -> float:
        """The same ratio for a first epoch (a fresh reader per pass)."""
        length = LENGTHS[profile]
        return paired_speedup(lambda: read_with_np_load(root, length), lambda: read_with_reader(root, length))

    track_first_epoch_speedup_vs_np_load.unit = "x"


def _rate(read: Any, root: str, length: int | None) -> float:
    """samples/s of one pass on one thread (as ``paired_speedup`` measures), after a warm-up pass
    that puts the files in the page cache: both sides read from memory, not from the disk."""
    import time

    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            read(root, length)
            start = time.perf_counter()
            n = read(root, length)
            return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
