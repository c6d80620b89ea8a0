"""Reader throughput on the embedded-layout data (patches/s), cold (from disk) and cached."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._ratio import paired_speedup


class PastisRReader:
    timeout = 120

    def setup_cache(self) -> str:
        from tasks.pastis_r.synthetic import generate

        root = Path(tempfile.mkdtemp(prefix="asv-pastis-")) / "PASTIS-R"
        generate(root, seed=0, n_patches=20, size=32)
        return str(root)

    def time_read_all_patches_cold(self, root: str) -> None:
        from tasks.pastis_r.dataset import PastisRDataset

        ds = PastisRDataset(root, [1, 2, 3, 4, 5], cache=False)
        for i in range(len(ds)):
            ds[i]

    def track_patches_per_second(self, root: str) -> float:
        import time

        from tasks.pastis_r.dataset import PastisRDataset

        ds = PastisRDataset(root, [1, 2, 3, 4, 5], cache=False)
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        return len(ds) / (time.perf_counter() - start)

    track_patches_per_second.unit = "patches/s"

    def track_reader_speedup_vs_np_load(self, root: str) -> float:
        """Our reader (decode, normalise, dates, labels) against a plain loop of ``np.load`` over
        the same files (no normalisation, no dates), side by side in this process: how much the
        reader's work costs relative to reading the bytes. Gated in CI (a drop means the reader got slower)."""
        import numpy as np

        from tasks.pastis_r.dataset import PastisRDataset

        files = sorted(Path(root).rglob("*.npy"))

        def naive() -> None:
            for f in files:
                np.load(f)

        def ours() -> None:
            ds = PastisRDataset(root, [1, 2, 3, 4, 5], cache=False)
            for i in range(len(ds)):
                ds[i]

        return paired_speedup(naive, ours)

    track_reader_speedup_vs_np_load.unit = "x"
