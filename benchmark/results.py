"""The results store: one JSON record per job, per-unit statistics beside it, atomic writes.

Layout: ``<root>/<task>/<profile>/<entry>/<cell>-seed<k>.json`` (+ ``.npz``). A record carries the
hash of the resolved job configuration, so ``--resume`` skips a job only if exactly the same job
already finished. Tables are rendered from these files alone.

Nothing is lost: a record that a new one supersedes moves to ``<entry>/_attempts/`` with its
statistics, and a failed re-run never replaces an ok record (the failure is kept under
``_attempts/``, the ok record stays current). Reading checks every record against the versioned
schema (``benchmark.schema``): a file that is not a readable record is skipped with a warning
naming it and what is wrong, and statistics are checked against the record that points to them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .environment import environment, git_revision
from .errors import BenchmarkError
from .schema import SCHEMA_VERSION, RecordError, read_record, validate

log = logging.getLogger("benchmark")
__all__ = ["SCHEMA_VERSION", "JobKey", "ResultStore", "config_hash", "environment", "git_revision", "now_iso"]


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


def write_text_atomic(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


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
        self.skipped: list[str] = []  # "path problem" of every file records() could not read

    def record_path(self, key: JobKey) -> Path:
        return self.root / key.task / key.profile / key.entry / f"{key.stem()}.json"

    def stats_path(self, key: JobKey) -> Path:
        return self.record_path(key).with_suffix(".npz")

    def work_dir(self, key: JobKey) -> Path:
        """Checkpoints of an entry for a seed (git-ignored; shared by the entry's cells)."""
        return self.root / key.task / key.profile / key.entry / "_work" / f"seed{key.seed}"

    def attempts_dir(self, key: JobKey) -> Path:
        """Superseded and failed-again records of an entry (never read by tables)."""
        return self.record_path(key).parent / "_attempts"

    def current(self, key: JobKey) -> dict[str, Any] | None:
        """The job's current record, or None when there is none or it is not a readable record."""
        path = self.record_path(key)
        if not path.is_file():
            return None
        try:
            return read_record(path)
        except RecordError:
            return None

    def is_done(self, key: JobKey, cfg_hash: str) -> bool:
        rec = self.current(key)
        return rec is not None and rec.get("status") == "ok" and rec.get("config_hash") == cfg_hash and self.stats_path(key).is_file()

    def _set_aside(self, key: JobKey, stamp: str, tag: str) -> Path:
        """Move the job's current record (and statistics) to ``_attempts/``; returns the new path."""
        folder = self.attempts_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{key.stem()}.{stamp.replace(':', '').replace('+0000', 'Z')}.{tag}"
        target = folder / f"{stem}.json"
        k = 1
        while target.exists():
            target, k = folder / f"{stem}-{k}.json", k + 1
        stats = self.stats_path(key)
        if stats.is_file():
            os.replace(stats, target.with_suffix(".npz"))
        os.replace(self.record_path(key), target)
        return target

    def write(self, key: JobKey, record: dict[str, Any], unit_stats: Mapping[str, np.ndarray] | None) -> tuple[Path, str]:
        """Write a job's record; returns (where it went, a note for the user or "").

        Statistics first, record last: a record on disk always has its statistics beside it. The
        record it supersedes is kept under ``_attempts/``; a failed record never supersedes an ok
        one (it goes to ``_attempts/`` itself).
        """
        path = self.record_path(key)
        try:  # the record as it will be written (the statistics' name is added below)
            validate({**record, **({"unit_stats_file": self.stats_path(key).name} if unit_stats is not None else {})})
        except RecordError as exc:
            raise BenchmarkError(f"the record of {key.entry}/{key.cell} seed {key.seed} was not written: it {exc}") from None
        for p in (path, self.stats_path(key)):
            if p.exists() and not p.is_file():
                raise BenchmarkError(f"cannot write the record of {key.entry}/{key.cell} seed {key.seed}: {p} exists and is not a file")
        old = self.current(key) if path.is_file() else None
        note = ""
        if record.get("status") != "ok" and old is not None and old.get("status") == "ok":
            folder = self.attempts_dir(key)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{key.stem()}.{_stamp(record)}.failed.json"
            atomic_write_json(target, record)
            return target, f"the ok record of {old.get('finished', '?')} stays current; this failure is kept in {target}"
        if path.is_file():
            tag = "superseded" if old is not None else "unreadable"
            moved = self._set_aside(key, str((old or {}).get("finished") or now_iso()), tag)
            note = f"the previous record ({tag}) is kept in {moved}"
            record = {**record, "supersedes": str(moved.relative_to(path.parent))}
        if unit_stats is not None:
            stats_path = self.stats_path(key)
            atomic_write_npz(stats_path, unit_stats)
            record = {**record, "unit_stats_file": stats_path.name, "unit_stats_sha256": _sha256(stats_path),
                      "unit_stats_rows": _rows(unit_stats)}
        atomic_write_json(path, record)
        return path, note

    def records(self, task: str, profile: str | None = None) -> Iterator[dict[str, Any]]:
        """Every readable record of ``task`` (optionally one profile). Files that are not readable
        records are skipped with a warning naming each and the problem; ``self.skipped`` lists them."""
        base = self.root / task
        if not base.is_dir():
            return
        pattern = f"{profile}/*/*.json" if profile else "*/*/*.json"
        for path in sorted(base.glob(pattern)):
            try:
                rec = read_record(path)
            except RecordError as exc:
                self.skipped.append(f"{path} {exc}")
                log.warning("skipping %s: it %s", path, exc)
                continue
            rec["_path"] = str(path)
            yield rec

    def load_stats(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The per-unit statistics of ``record``, checked against it (sha256 and row count when the
        record stores them)."""
        path = Path(record["_path"]).with_suffix(".npz")
        if not path.is_file():
            raise BenchmarkError(f"per-unit statistics missing for {record['_path']}: expected {path}")
        want = record.get("unit_stats_sha256")
        if want and _sha256(path) != want:
            raise BenchmarkError(f"{path} does not match its record {record['_path']} (sha256 differs): the statistics were changed or replaced")
        try:
            with np.load(path, allow_pickle=False) as z:
                stats = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zip, pickle and format errors all mean "not our file"
            raise BenchmarkError(f"{path} is not a readable statistics file ({type(exc).__name__}: {exc})") from None
        rows = record.get("unit_stats_rows")
        if rows is None:  # schema 1: the row count the protocol reported
            extra = record.get("extra") or {}
            rows = extra.get("n_test_units", extra.get("n_rows"))
        if "unit_id" not in stats or stats["unit_id"].ndim != 1:
            raise BenchmarkError(f"{path} has no 1-d 'unit_id' array; it is not the statistics of {record['_path']}")
        n = len(stats["unit_id"])
        if rows is not None and n != int(rows):
            raise BenchmarkError(f"{path} holds {n} rows, its record {record['_path']} says {rows}")
        bad = [k for k, v in stats.items() if v.ndim == 0 or len(v) != n]
        if bad:
            raise BenchmarkError(f"{path}: array(s) {', '.join(bad)} do not have one row per unit ({n})")
        if "confusion" in stats:
            k = (record.get("task") or {}).get("num_classes") or stats["confusion"].shape[-1]
            if stats["confusion"].ndim != 3 or stats["confusion"].shape[1:] != (k, k):
                raise BenchmarkError(f"{path}: 'confusion' has shape {stats['confusion'].shape}, expected ({n}, K, K)")
        return stats


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(unit_stats: Mapping[str, np.ndarray]) -> int | None:
    ids = unit_stats.get("unit_id")
    return None if ids is None else len(ids)


def _stamp(record: Mapping[str, Any]) -> str:
    return str(record.get("finished") or now_iso()).replace(":", "").replace("+0000", "Z")
