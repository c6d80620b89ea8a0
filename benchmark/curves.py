"""Training curves: one JSON line per optimizer step, beside the stage's checkpoint.

Why JSON lines and not CSV: entries log their own scalars (``loss_fn`` may return ``(loss, logs)``),
and the set of keys can change between stages or steps; every line stands alone, and a run
killed mid-write loses at most its last line. ``python -m benchmark curves`` draws them or turns
them into CSV. Each line holds ``step``, ``loss``, ``lr``, ``grad_norm``, ``samples`` (seen by
this stage so far, over all ranks), ``elapsed_s`` (wall time of this ``fit`` call),
``samples_per_s`` (of the step) and the entry's own logs.

A resumed stage cuts the lines after the checkpoint it resumes from, so the file always
describes one run of the steps, and its ``samples`` and ``elapsed_s`` go on from the last kept
line. With ``tensorboard=True`` the same scalars also go to
TensorBoard event files in ``tensorboard/`` beside the curve (``run --tensorboard`` asks for
them in every stage of its jobs).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CURVE_NAME = "curve.jsonl"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_ENV = "BENCHMARK_TENSORBOARD"  # set to 1 in a job's process by `run --tensorboard`


def tensorboard_wanted() -> bool:
    return os.environ.get(TENSORBOARD_ENV) == "1"


class CurveLog:
    """Append-only writer of one stage's curve (rank 0 only)."""

    def __init__(self, path: Path, tensorboard: bool = False) -> None:
        self.path = Path(path)
        self.tensorboard = tensorboard
        self._fh: Any = None
        self._tb: Any = None
        self._offsets: dict[str, float] = {}

    def start(self, resumed_from: int) -> None:
        """Open for writing, keeping only the lines up to ``resumed_from`` (0: a fresh stage)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [row for row in read_curve(self.path) if row["step"] <= resumed_from] if resumed_from and self.path.is_file() else []
        last = kept[-1] if kept else {}
        # fit counts samples and time per call: continue the resumed stage's totals instead of restarting them
        self._offsets = {k: float(last.get(k) or 0.0) for k in ("samples", "elapsed_s")}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(self.path)
        self._fh = self.path.open("a", encoding="utf-8", buffering=1)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path.parent / TENSORBOARD_DIR), purge_step=resumed_from + 1 if resumed_from else None)

    def add(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: _finite(v) for k, v in values.items()}}
        for key, offset in self._offsets.items():
            if offset and row.get(key) is not None:
                row[key] += offset
        self._fh.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._tb.add_scalar(key, value, step)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def read_curve(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a curve file (a torn last line, from a killed run, is dropped)."""
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if any(rest.strip() for rest in fh):  # not the last line: the file is damaged, not torn
                    raise ValueError(f"{path}: line {n} is not JSON") from None
                break
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError(f"{path}: line {n} is not a curve row (needs an integer 'step')")
            rows.append(row)
    return rows
