"""Find tasks and entries: entry points first, then ``module:Class`` or ``path/to/file.py:Class``.

Built-in tasks and entries are declared as entry points in ``pyproject.toml`` exactly like a
third-party package would declare its own, so the harness never imports them by name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from .contracts import FAMILY_METHODS, EntryMetadata
from .errors import BenchmarkError

log = logging.getLogger("benchmark")
TASK_GROUP = "benchmark.tasks"
ENTRY_GROUP = "benchmark.entries"


@cache
def _group(group: str) -> dict[str, EntryPoint]:
    """Name -> entry point. When two distributions register one name, the suite's own wins and the
    other is reported: a plugin must not replace a suite entry (or task) under its name."""
    out: dict[str, EntryPoint] = {}
    own = own_distribution()
    for ep in entry_points(group=group):
        have = out.get(ep.name)
        if have is None:
            out[ep.name] = ep
            continue
        keep, drop = (have, ep) if _dist_name(have) == own else (ep, have) if _dist_name(ep) == own else (have, ep)
        out[ep.name] = keep
        log.warning("%s %r is registered twice: using %s, ignoring %s (give the plugin's entry point another name)",
                    group, ep.name, _ep_source(keep), _ep_source(drop))
    return out


def _dist_name(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def task_names() -> list[str]:
    return sorted(_group(TASK_GROUP))


def entry_names() -> list[str]:
    return sorted(_group(ENTRY_GROUP))


def _load_spec(spec: str) -> Any:
    """Load ``module:attr`` or ``path/to/file.py:attr``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise BenchmarkError(f"{spec!r} is neither a registered name nor a 'module:Class' / 'file.py:Class' spec")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise BenchmarkError(f"entry file not found: {path}")
        mod_name = f"_benchmark_plugin_{path.stem}_{abs(hash(str(path.resolve()))):x}"
        if mod_name in sys.modules:
            module = sys.modules[mod_name]
        else:
            file_spec = importlib.util.spec_from_file_location(mod_name, path)
            if file_spec is None or file_spec.loader is None:
                raise BenchmarkError(f"cannot import {path}")
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[mod_name] = module
            file_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise BenchmarkError(f"cannot import module {target!r} from spec {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BenchmarkError(f"{target} has no attribute {attr!r}") from None


def _resolve(name: str, group: str, kind: str) -> Any:
    eps = _group(group)
    if name in eps:
        return eps[name].load()
    if ":" in name:
        return _load_spec(name)
    have = ", ".join(sorted(eps)) or "none registered"
    raise BenchmarkError(f"unknown {kind} {name!r}; available: {have} (or give 'module:Class' / 'file.py:Class')")


def load_task(name: str) -> Any:
    """An instance of the task registered as ``name`` (or given as a spec)."""
    obj = _resolve(name, TASK_GROUP, "task")
    task = obj() if isinstance(obj, type) else obj
    if not hasattr(task, "spec"):
        raise BenchmarkError(f"task {name!r} has no 'spec' attribute (see benchmark.contracts.Task)")
    return task


def load_entry(name: str) -> type:
    """The entry class registered as ``name`` (or given as a spec), checked against its family."""
    cls = _resolve(name, ENTRY_GROUP, "entry")
    check_entry_class(cls, name)
    return cls


def check_entry_class(cls: Any, name: str) -> None:
    """Structural checks: metadata, profiles and the family's methods."""
    meta = getattr(cls, "metadata", None)
    if not isinstance(meta, EntryMetadata):
        raise BenchmarkError(f"entry {name!r} must define 'metadata' as a benchmark.contracts.EntryMetadata")
    profiles = getattr(cls, "profiles", None)
    if not isinstance(profiles, dict) or "smoke" not in profiles:
        raise BenchmarkError(f"entry {name!r} must define a 'profiles' dict with at least a 'smoke' profile")
    missing = [m for m in FAMILY_METHODS[meta.family] if not callable(getattr(cls, m, None))]
    if missing:
        raise BenchmarkError(f"entry {name!r} ({meta.family}) is missing method(s): {', '.join(sorted(missing))}")


@cache
def _packages() -> dict[str, list[str]]:
    """Top-level package -> distributions (one scan of the installed metadata per process)."""
    try:
        return dict(importlib.metadata.packages_distributions())
    except Exception:  # noqa: BLE001 - metadata of a broken environment: no package has a known distribution
        return {}


@cache
def own_distribution() -> str | None:
    """The distribution this harness is installed from (its entry points are the suite's own)."""
    return (_packages().get(__package__ or "benchmark") or [None])[0]


def distribution_of(name: str) -> tuple[str, str] | None:
    """(distribution, version) that registers entry ``name``, when the entry point has one."""
    dist = getattr(_group(ENTRY_GROUP).get(name), "dist", None)
    return (dist.name, dist.version) if dist is not None else None


def is_third_party(name: str) -> bool:
    dist, own = distribution_of(name), own_distribution()
    return dist is not None and own is not None and dist[0] != own


def entries_of_family(family: str, third_party: bool = False) -> list[str]:
    """Registered entry names of a family: the suite's own, and other packages' with ``third_party``
    (the paper tables hold the suite's entries unless asked; a plugin runs when named). An entry
    point that fails to load is reported (one warning line naming it and the error) and left out:
    one broken plugin must not stop a run."""
    names, others = [], []
    for name in entry_names():
        try:
            cls = load_entry(name)
        except Exception as exc:  # noqa: BLE001 - a third-party package's bug, not the user's
            log.warning("skipping entry %r (entry point %s): %s: %s", name, _group(ENTRY_GROUP)[name].value, type(exc).__name__, exc)
            continue
        if cls.metadata.family != family:
            continue
        if is_third_party(name) and not third_party:
            others.append(f"{name} ({distribution_of(name)[0]})")
            continue
        names.append(name)
    if others:
        log.warning("not running third-party entries %s by default: name them with --entry, or pass --all-entries", ", ".join(others))
    return names


@dataclass(frozen=True)
class ResolvedEntry:
    """An entry with its identity: the name its records are kept under, and where it came from."""

    spec: str  # as the user gave it
    cls: type
    name: str
    source: str  # "entry point NAME = module:Class (dist VERSION)", "module M", "file PATH (sha256 ...)"
    registered: bool

    def provenance(self) -> dict[str, Any]:
        dist = _distribution(self)
        return {"spec": self.spec, "source": self.source, "registered": self.registered,
                "distribution": dist[0] if dist else None, "distribution_version": dist[1] if dist else None,
                "third_party": own_distribution() is not None and (dist is None or dist[0] != own_distribution())}


def _distribution(entry: ResolvedEntry) -> tuple[str, str] | None:
    """The distribution an entry's code comes from: its entry point's; for a ``module:Class`` spec,
    the package of the module the spec names (not the class's ``__module__``, which a class can
    set to anything); a ``file.py:Class`` spec belongs to no distribution."""
    if entry.registered:
        return distribution_of(entry.name)
    target = entry.spec.rpartition(":")[0]
    if not target or target.endswith(".py"):
        return None
    top = target.split(".")[0]
    try:
        dists = _packages().get(top) or []
        return (dists[0], importlib.metadata.version(dists[0])) if dists else None
    except Exception:  # noqa: BLE001 - a file entry or broken metadata has no distribution
        return None


def _ep_source(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" ({dist.name} {dist.version})" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{where}"


@cache
def _registered_classes() -> dict[str, Any]:
    """Every registered entry's class, loaded once, before any ``module:Class`` or ``file.py``
    spec runs: a plugin that later replaces a registered module's attribute cannot pass for it."""
    out: dict[str, Any] = {}
    for name, ep in _group(ENTRY_GROUP).items():
        try:
            out[name] = ep.load()
        except Exception:  # noqa: BLE001 - a broken entry point is reported when it is used
            out[name] = None
    return out


def resolve_entry(spec: str) -> ResolvedEntry:
    """Load ``spec`` and fix its identity. A registered entry is known by its entry-point name (its
    ``metadata.name`` must agree, and it must be the class the entry point loaded before any spec
    ran); a ``module:Class`` / ``file.py:Class`` entry by its ``metadata.name``, which must not be a
    registered entry's name unless it is that very class. So no file can write its numbers under,
    say, the ``unet3d_scratch`` floor."""
    genuine = _registered_classes()
    cls = load_entry(spec)
    name = cls.metadata.name
    eps = _group(ENTRY_GROUP)
    if spec in eps:
        if name != spec:
            raise BenchmarkError(f"entry point {spec!r} ({eps[spec].value}) loads a class whose metadata.name is {name!r}; they must agree")
        if cls is not genuine.get(spec):
            raise BenchmarkError(f"entry point {spec!r} ({eps[spec].value}) now loads another class than it did: something replaced it "
                                 "(another entry's module?)")
        return ResolvedEntry(spec, cls, name, _ep_source(eps[spec]), True)
    if name in eps:
        if cls is not genuine.get(name):
            raise BenchmarkError(f"entry {spec!r} claims the name {name!r}, which is registered by {_ep_source(eps[name])}; "
                                 "give it its own metadata.name")
        return ResolvedEntry(spec, cls, name, _ep_source(eps[name]), True)
    target = spec.rpartition(":")[0]
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        source = f"file {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})"
    else:
        source = f"module {target}"
    return ResolvedEntry(spec, cls, name, source, False)
