"""The results store: one JSON record per job, per-unit statistics beside it, atomic writes.

Layout: ``<root>/<task>/<profile>/<entry>/<cell>-seed<k>.json`` (+ ``.npz``). A record carries the
hash of the resolved job configuration, so ``--resume`` skips a job only if exactly the same job
already finished. Tables are rendered from these files alone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import BenchmarkError

SCHEMA_VERSION = 1


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable job configuration."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    _atomic_write_bytes(path, buf.getvalue())


@cache
def git_revision() -> str:
    """Harness git sha (``+dirty`` when the work tree has changes), or ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str) -> dict[str, Any]:
    """Library versions and machine facts stored in every record."""
    import torch

    versions = {"benchmark": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("sklearn", "pandas", "xarray"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    dev_name = platform.processor() or platform.machine()
    if device.startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(torch.device(device))
    return {
        "git_sha": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": dev_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobKey:
    task: str
    profile: str
    entry: str
    cell: str
    seed: int

    def stem(self) -> str:
        return f"{self.cell}-seed{self.seed}"


class ResultStore:
    """Reads and writes records under one results folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def record_path(self, key: JobKey) -> Path:
        return self.root / key.task / key.profile / key.entry / f"{key.stem()}.json"

    def stats_path(self, key: JobKey) -> Path:
        return self.record_path(key).with_suffix(".npz")

    def work_dir(self, key: JobKey) -> Path:
        """Checkpoints of an entry for a seed (git-ignored; shared by the entry's cells)."""
        return self.root / key.task / key.profile / key.entry / "_work" / f"seed{key.seed}"

    def is_done(self, key: JobKey, cfg_hash: str) -> bool:
        path = self.record_path(key)
        if not path.is_file():
            return False
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return rec.get("status") == "ok" and rec.get("config_hash") == cfg_hash and self.stats_path(key).is_file()

    def write(self, key: JobKey, record: dict[str, Any], unit_stats: Mapping[str, np.ndarray] | None) -> Path:
        """Statistics first, record last: a record on disk always has its statistics beside it."""
        path = self.record_path(key)
        if unit_stats is not None:
            atomic_write_npz(self.stats_path(key), unit_stats)
            record = {**record, "unit_stats_file": self.stats_path(key).name}
        atomic_write_json(path, record)
        return path

    def records(self, task: str, profile: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record of ``task`` (optionally one profile); unreadable files raise naming the file."""
        base = self.root / task
        if not base.is_dir():
            return
        pattern = f"{profile}/*/*.json" if profile else "*/*/*.json"
        for path in sorted(base.glob(pattern)):
            try:
                rec = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"corrupt result record {path}: {exc}") from None
            rec["_path"] = str(path)
            yield rec

    def load_stats(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        path = Path(record["_path"]).with_suffix(".npz")
        if not path.is_file():
            raise BenchmarkError(f"per-unit statistics missing for {record['_path']}: expected {path}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
