"""``python -m benchmark curves``: the training curves a run's records point to, drawn or as CSV.

A shared stage (one pre-training reused by several cells) has one curve; it is drawn once, under
the cells that used it. Curves live in the git-ignored ``_work/`` folders, so records copied
without them (e.g. the committed ones) have nothing to draw, and the command says so.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .curves import read_curve
from .errors import BenchmarkError
from .results import ResultStore


@dataclass
class Curve:
    entry: str
    seed: int
    stage: str
    cells: list[str]
    path: Path
    rows: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.entry} seed {self.seed} ({', '.join(self.cells)})"


def find_curves(results: Path, task: str, profile: str, entries: Sequence[str] | None = None, cells: Sequence[str] | None = None,
                seed: int | None = None) -> tuple[list[Curve], list[str]]:
    """The curves of the matching ok records, and a line per stage whose curve file is missing."""
    found: dict[Path, Curve] = {}
    missing: list[str] = []
    for rec in ResultStore(results).records(task, profile):
        name, cell = rec["entry"]["name"], rec["cell"]["name"]
        if rec.get("status") != "ok" or (entries and name not in entries) or (cells and cell not in cells) \
                or (seed is not None and int(rec["seed"]) != seed):
            continue
        for stage, info in (rec.get("training") or {}).items():
            rel = info.get("curve") if isinstance(info, dict) else None
            path = Path(results) / rel if isinstance(rel, str) and rel else None
            if path is None or not path.is_file():
                missing.append(f"{name}/{cell} seed {rec['seed']} {stage}: " + (f"{path} is missing" if path else "no curve recorded"))
                continue
            if not _inside(path, Path(results)):
                missing.append(f"{name}/{cell} seed {rec['seed']} {stage}: {path} is a link or lies outside {results}; not read")
                continue
            if path in found:
                found[path].cells.append(cell)
                continue
            try:
                rows = read_curve(path)
            except (OSError, ValueError) as exc:
                missing.append(f"{name}/{cell} seed {rec['seed']} {stage}: {exc}")
                continue
            found[path] = Curve(name, int(rec["seed"]), stage, [cell], path, rows)
    return sorted(found.values(), key=lambda c: (c.stage, c.entry, c.seed, c.cells)), missing


def _inside(path: Path, root: Path) -> bool:
    """A plain file under ``root``, reached through no symbolic link (records come from entries' jobs)."""
    root = root.resolve()
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        return False
    probe = root
    for part in rel.parts:
        probe = probe / part
        if probe.is_symlink():
            return False
    return path.resolve() == (root / rel) and not path.is_symlink()


def _write_atomic(target: Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file and a rename: a link planted at ``target`` is replaced, never followed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def to_csv(curves: Sequence[Curve]) -> str:
    keys = sorted({k for c in curves for row in c.rows for k in row} - {"step"})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["entry", "seed", "stage", "cells", "step", *keys])
    for c in curves:
        for row in c.rows:
            writer.writerow([c.entry, c.seed, c.stage, " ".join(c.cells), row["step"], *("" if row.get(k) is None else row[k] for k in keys)])
    return buf.getvalue()


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` steps (per-step losses of small batches are noisy)."""
    out, total, queue = [], 0.0, []
    for v in values:
        queue.append(v)
        total += v
        if len(queue) > window:
            total -= queue.pop(0)
        out.append(total / len(queue))
    return out


def plot(curves: Sequence[Curve], out: Path, key: str = "loss", smooth: int = 1) -> Path:
    """One panel per stage, one line per (entry, seed, cells); ``key`` against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = sorted({c.stage for c in curves})
    fig, axes = plt.subplots(len(stages), 1, figsize=(8, 3.2 * len(stages)), squeeze=False)
    for ax, stage in zip(axes[:, 0], stages, strict=True):
        for c in (c for c in curves if c.stage == stage):
            points = [(r["step"], r[key]) for r in c.rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, _smooth(list(values), max(1, smooth)), label=c.label, lw=1)
        ax.set_title(f"{stage}: {key}" + (f" (trailing mean over {smooth} steps)" if smooth > 1 else ""))
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out


def curves_command(results: Path, task: str, profile: str, *, entries: Sequence[str] | None, cells: Sequence[str] | None,
                   seed: int | None, fmt: str, out: Path | None, key: str, smooth: int) -> tuple[str, list[str]]:
    """What ``curves`` prints (CSV text or the PNG's path) and the warnings."""
    curves, missing = find_curves(results, task, profile, entries, cells, seed)
    if not curves:
        hint = f" ({len(missing)} stage(s) without a curve file, e.g. {missing[0]})" if missing else ""
        raise BenchmarkError(f"no training curves for {task} at {profile} under {results}{hint}")
    if fmt == "csv":
        text = to_csv(curves)
        if out is not None:
            _write_atomic(out, lambda tmp: tmp.write_text(text))
            return f"wrote {out}", missing
        return text, missing
    if not any(key in row for c in curves for row in c.rows):
        have = sorted({k for c in curves for row in c.rows for k in row} - {"step"})
        raise BenchmarkError(f"no curve has {key!r}; curves hold: {', '.join(have)}")
    target = out or Path(results) / task / profile / f"curves-{key}.png"
    return f"wrote {plot(curves, target, key, smooth)}", missing
