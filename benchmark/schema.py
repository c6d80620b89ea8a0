"""The versioned schema of a job record, checked whenever a record is read.

pydantic does the checking (types, required keys per status) and gives error locations we can
turn into one line naming the file. Records may carry more keys than listed (extra="allow"): the
schema pins what the tools rely on, not everything a record says.

Versions: 1 (first wave); 2 adds the entry's provenance (``entry_source``), the job's isolation and
timeout, the statistics file's sha256 and row count, and ``attempts`` (superseded records kept
under ``_attempts/``); 3 adds the command line, hyper-parameter ``overrides``, ``training`` (per
stage: steps, samples, seconds and the curve file), the entry's distribution, and machine facts
(CPU model, CUDA / cuDNN, GPUs, world size, load, thread source), and hashes the data by content
(its path left out); 4 adds how the job was spread over ranks: ``execution.world_size`` (ranks
under torchrun, 1 otherwise) and per training stage its batching (``world_size``,
``micro_batch_size`` per rank and forward, ``accumulate`` micro-batches per step,
``global_batch_size``). Records of versions 1 to 3 are migrated when read (:func:`migrate`: the
keys they lack are added as unknown, ``migrated_from`` says from which version); every record is
validated before it is written. The schema in full, field by field: docs/records.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, model_validator

SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
BATCH_KEYS = ("world_size", "micro_batch_size", "accumulate", "global_batch_size")  # = contracts.BATCH_FIELDS


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Named(_Open):
    name: str


class _Task(_Named):
    version: str
    family: str


class _Entry(_Named):
    version: str
    family: str


class _Data(_Open):
    kind: str


class _Metric(_Open):
    estimate: float | None


class _EntrySource(_Open):
    spec: str
    source: str
    registered: bool | None


class _Execution(_Open):
    isolation: str
    world_size: StrictInt | None = None  # required in a schema-4 record as written (see _by_status)


class _Stage(_Open):
    steps: StrictInt
    samples: StrictInt
    seconds: float
    curve: str | None = None
    world_size: StrictInt | None = None  # None: the entry's fit did not say
    micro_batch_size: StrictInt | None = None
    accumulate: StrictInt | None = None
    global_batch_size: StrictInt | None = None


class _Environment(_Open):
    git_sha: str
    torch_threads: StrictInt | None = None


class Record(_Open):
    """The keys every reader of records (tables, compare, rescore, resume) depends on."""

    schema_: int
    status: Literal["ok", "failed"]
    task: _Task
    cell: _Named
    entry: _Entry
    profile: str
    seed: StrictInt
    config_hash: str
    data: _Data
    metrics: dict[str, _Metric] | None = None
    unit_stats_file: str | None = None
    error: str | None = None
    entry_source: _EntrySource | None = None
    execution: _Execution | None = None
    training: dict[str, _Stage] | None = None
    environment: _Environment | None = None
    overrides: dict[str, Any] | None = None
    command: str | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _schema_key(cls, values: Any) -> Any:
        if isinstance(values, dict) and "schema" in values:
            values = {**values, "schema_": values["schema"]}
        return values

    @model_validator(mode="after")
    def _by_status(self) -> Record:
        if self.schema_ not in READABLE_VERSIONS:
            raise ValueError(f"schema {self.schema_} is not one this harness reads ({', '.join(map(str, READABLE_VERSIONS))}); "
                             "it was written by another version of the benchmark")
        if self.status == "ok" and (not self.metrics or not self.unit_stats_file):
            raise ValueError("an ok record needs 'metrics' and 'unit_stats_file'")
        if self.status == "failed" and not self.error:
            raise ValueError("a failed record needs 'error'")
        if self.schema_ >= 2 and (self.entry_source is None or self.execution is None):
            raise ValueError(f"a schema-{self.schema_} record needs 'entry_source' and 'execution'")
        if self.schema_ >= 3 and self.status == "ok" and (self.training is None or self.environment is None):
            raise ValueError(f"an ok schema-{self.schema_} record needs 'training' and 'environment'")
        migrated = (self.model_extra or {}).get("migrated_from") is not None
        if self.schema_ >= 4 and not migrated and (self.execution is None or self.execution.world_size is None):
            raise ValueError(f"a schema-{self.schema_} record needs 'execution.world_size'")
        return self


def migrate(obj: dict[str, Any]) -> dict[str, Any]:
    """A record of an older readable version, brought to :data:`SCHEMA_VERSION` (a new dict): what it
    lacks is added as unknown, never guessed. ``migrated_from`` keeps the version it was written in."""
    version = obj.get("schema")
    if version == SCHEMA_VERSION or version not in READABLE_VERSIONS:
        return obj
    out = dict(obj, migrated_from=obj.get("migrated_from", version))
    if version < 2:
        out.setdefault("entry_source", {"spec": (obj.get("entry") or {}).get("name", "?"), "source": "unknown (schema-1 record)",
                                        "registered": None})
        out.setdefault("execution", {"isolation": "unknown", "timeout_s": None})
    if version < 3:
        fit_log = (obj.get("extra") or {}).get("fit_log") or {}
        out.setdefault("training", {stage: {"steps": int(v.get("steps", 0)), "samples": int(v.get("samples", 0)),
                                            "seconds": float(v.get("seconds", 0.0)), "resumed_from": int(v.get("resumed_from", 0)),
                                            "curve": None} for stage, v in fit_log.items() if isinstance(v, dict)})
        out.setdefault("command", None)
        out.setdefault("overrides", None)
        if obj.get("status") == "ok":
            out.setdefault("environment", {"git_sha": "unknown"})
    if version < 4:  # ranks: what the environment recorded (schema 3), the batching per stage unknown
        ranks = (out.get("environment") or {}).get("world_size")
        out["execution"] = {**(out.get("execution") or {}), "world_size": ranks if isinstance(ranks, int) and not isinstance(ranks, bool) else None}
        out["training"] = {stage: {**{key: None for key in BATCH_KEYS}, **info} if isinstance(info, dict) else info
                           for stage, info in (out.get("training") or {}).items()} if out.get("training") is not None else None
    out["schema"] = SCHEMA_VERSION
    return out


def validate(obj: dict[str, Any]) -> None:
    """Refuse to write a record that its readers would skip (:class:`RecordError` saying why)."""
    try:
        Record.model_validate(obj)
    except ValidationError as exc:
        raise RecordError(f"does not match the record schema: {_first_error(exc)}") from None


class RecordError(ValueError):
    """A file under the results folder that is not a readable record (the message names the problem)."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "schema_") or "record"
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def read_record(path: Path) -> dict[str, Any]:
    """The record at ``path`` as a dict, or :class:`RecordError` saying in one line what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecordError(f"cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"is not UTF-8 text (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise RecordError(f"is not JSON a record can be ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"holds a JSON {type(obj).__name__}, not a record")
    if "schema" not in obj:
        raise RecordError("has no 'schema' key: not a job record")
    validate(obj)
    if obj.get("schema") == SCHEMA_VERSION:
        return obj
    try:
        migrated = migrate(obj)
    except Exception as exc:  # noqa: BLE001 - any malformed old field: this file is skipped, the folder still reads
        raise RecordError(f"is a schema-{obj.get('schema')} record that cannot be migrated ({type(exc).__name__}: {exc})") from None
    validate(migrated)
    return migrated
