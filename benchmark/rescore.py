"""``rescore``: recompute stored records' metrics under the current scoring, without re-training.

The per-unit statistics beside each record are sufficient for every metric and interval, so a
change of *scoring* protocol (intervals, class-set policy, resampling unit) need not re-run the
training. A record is rescored only if everything that determines its training — task version
and recipe, cell, entry metadata, profile hyper-parameters, data identity — equals what a fresh
job would use now; its configuration hash is then the current one (so ``--resume`` accepts it),
and ``rescored`` records when, by which harness revision, and the hash it replaced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from . import registry
from .contracts import profile_hparams
from .errors import BenchmarkError
from .overrides import apply as apply_overrides
from .plan import cell_dependencies, cell_identity, dependency_identities
from .results import ResultStore, atomic_write_json, config_hash, git_revision, now_iso
from .runner import job_config, task_recipe
from .schema import RecordError, validate
from .scoring import check_defined, score_job

log = logging.getLogger("benchmark")


def _mismatch(record: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first training-relevant field that differs between a record and the current job."""
    checks = {
        "task version": (record["task"]["version"], current["task"]["version"]),
        "task recipe": (record["task"].get("recipe", {}), current["task"]["recipe"]),
        "cell": (record["cell"], current["cell"]),
        "entry metadata": (record["entry"], current["entry"]),
        "hyper-parameters": (record["hparams"], current["hparams"]),
        # where the data lie is not what they are: the checksum and generator say that
        "data identity": ({k: v for k, v in record["data"].items() if k != "root"}, {k: v for k, v in current["data"].items() if k != "root"}),
    }
    for what, (old, new) in checks.items():
        if json.dumps(old, sort_keys=True, default=str) != json.dumps(new, sort_keys=True, default=str):
            return what
    return None


def rescore(task_name: str, profile: str, results_dir: Path, data_root: Path | None = None,
            entries: list[str] | None = None) -> tuple[int, list[str]]:
    """Rescore every ok record of ``task_name`` at ``profile``; returns (rescored, skipped reasons).

    ``entries``: ``module:Class`` / ``file.py:Class`` specs for entries that are not registered
    (records keep only the entry's name).
    """
    task = registry.load_task(task_name)
    spec = task.spec
    _, identity = task.resolve_data(data_root, profile)
    identity_dict = dataclasses.asdict(identity)
    recipe = task_recipe(task, profile)
    depends: dict[str, dict[str, Any]] = {}  # other tasks' data identities, resolved when a record's cell reads them
    store = ResultStore(results_dir)
    by_name = {cls.metadata.name: cls for cls in (registry.load_entry(e) for e in entries or [])}
    done, skipped = 0, []
    for rec in list(store.records(spec.name, profile)):
        path = Path(rec.pop("_path"))
        if rec.get("status") != "ok":
            continue
        try:
            name = rec["entry"]["name"]
            cls = by_name[name] if name in by_name else registry.load_entry(name)
            cell = spec.cell(rec["cell"]["name"])
        except (BenchmarkError, KeyError) as exc:
            skipped.append(f"{path}: {exc}")
            continue
        hparams = {**profile_hparams(cls, profile), **dict(cell.params.get("hparams", {}))}
        changed = ((rec.get("overrides") or {}).get("values") or {}) if isinstance(rec.get("overrides"), dict) else {}
        try:  # a job run with --set / --config is the profile plus what it changed
            hparams = apply_overrides(hparams, changed, name)
        except BenchmarkError as exc:
            skipped.append(f"{path}: its overrides no longer apply ({exc}); re-run it instead")
            continue
        if any(name not in depends for name in cell_dependencies(task, cell)):
            depends.update(dependency_identities(task, [cell], data_root, profile))
        identity_of_cell = cell_identity(task, cell, identity_dict, depends)
        cfg = job_config(spec, cell, cls, profile, int(rec["seed"]), hparams, identity_of_cell, recipe)
        why = _mismatch(rec, cfg)
        if why:
            skipped.append(f"{path}: its {why} differs from the current job's; re-run it instead")
            continue
        stats = store.load_stats({**rec, "_path": str(path)})
        members = (rec.get("extra") or {}).get("members")
        metrics = score_job(spec, stats, members)
        check_defined(spec, metrics)
        new_hash = config_hash(cfg)
        rescored = {"at": now_iso(), "git_sha": git_revision(), "from_config_hash": rec["config_hash"]}
        rec.update(metrics=metrics, config_hash=new_hash, rescored=rescored)
        try:
            validate(rec)
        except RecordError as exc:
            skipped.append(f"{path}: the rescored record {exc}; left unchanged")
            continue
        atomic_write_json(path, rec)
        done += 1
        log.info("rescored %s", path)
    return done, skipped
