"""Hyper-parameter overrides from the command line (``--set key=value``) and config files (``--config``).

OmegaConf parses both: its dotlist grammar gives typed values (``3e-4`` is a float, ``[16,32]`` a
list, ``null`` None, ``true`` a bool) and dotted keys for nested values, and it reads YAML; TOML
is read with the standard library. What OmegaConf does not do is know an entry's keys, so the
checks against the entry's profile live here: an override may only change a key the profile
declares, and must keep its type (an int stays an int, a float accepts an int, a list a list).

Layers, lowest first: the entry's profile, the cell's own overrides, the config file's top level,
its ``entries: {NAME: {...}}`` table for one entry, then ``--set``. Keys for every entry (top level,
``--set``) change the entries that declare them and leave the others alone (each run says which);
a key no entry of the run declares is an error, as is a key an ``entries:`` table gives an entry
that does not declare it. Non-finite numbers are refused.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchmarkError

ENTRY_SECTION = "entries"


@dataclass(frozen=True)
class Overrides:
    """What the user asked to change, layer by layer, and where it came from."""

    common: dict[str, Any] = field(default_factory=dict)  # the config file's top level: every entry
    per_entry: dict[str, dict[str, Any]] = field(default_factory=dict)  # the config file's ``entries:``
    sets: dict[str, Any] = field(default_factory=dict)  # --set, applied last
    sources: tuple[str, ...] = ()  # e.g. ("config lr.yaml", "--set lr=3e-4")

    def for_entry(self, name: str, declared: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The changes for entry ``name``: config top level, its ``entries:`` table, then ``--set``.
        With ``declared`` (the entry's hyper-parameters), keys for *every* entry (top level and
        ``--set``) that the entry does not declare are left out: a run of several entries changes
        each where it can (:func:`check_keys` makes sure every key reaches at least one)."""
        common, sets = self.common, self.sets
        if declared is not None:
            common, sets = _declared(common, declared), _declared(sets, declared)
        return _merge(_merge(common, self.per_entry.get(name, {})), sets)


def _declared(changes: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if k in declared}


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _plain(obj: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=3e-4", "model.width=32"]`` -> ``{"lr": 0.0003, "model": {"width": 32}}``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    out: dict[str, Any] = {}
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise BenchmarkError(f"--set {item!r}: expected KEY=VALUE (e.g. --set lr=3e-4)")
        try:
            parsed = _plain(OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise BenchmarkError(f"--set {item!r}: {str(exc).splitlines()[0]}") from None
        out = _merge(out, parsed)
    return out


def read_config(path: Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) file of hyper-parameters, as a plain dict."""
    if not path.is_file():
        raise BenchmarkError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            from omegaconf import OmegaConf

            data = _plain(OmegaConf.load(path))
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            raise BenchmarkError(f"config file {path}: unknown format {suffix!r} (use .yaml, .yml or .toml)")
    except BenchmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser's error becomes one line naming the file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchmarkError(f"config file {path} cannot be read: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BenchmarkError(f"config file {path}: expected a mapping of hyper-parameters, got {type(data).__name__}")
    return data


def load_overrides(sets: Sequence[str] = (), config: Path | None = None) -> Overrides:
    """The overrides of one run: the config file's, then ``--set``'s on top."""
    common: dict[str, Any] = {}
    per_entry: dict[str, dict[str, Any]] = {}
    sources: list[str] = []
    if config is not None:
        data = read_config(config)
        section = data.pop(ENTRY_SECTION, {}) or {}
        if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
            raise BenchmarkError(f"config file {config}: '{ENTRY_SECTION}' must map entry names to hyper-parameter tables")
        common, per_entry = data, {str(k): dict(v) for k, v in section.items()}
        sources.append(f"config {config}")
    parsed: dict[str, Any] = {}
    if sets:
        parsed = parse_sets(sets)
        sources.extend(f"--set {s}" for s in sets)
    return Overrides(common, per_entry, parsed, tuple(sources))


def _coerce(path: str, old: Any, new: Any, entry: str) -> Any:
    if isinstance(new, float) and not math.isfinite(new):
        raise BenchmarkError(f"entry {entry!r}: {path} must be a finite number, got {new!r}")
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
        raise BenchmarkError(f"entry {entry!r}: {path} is {type(old).__name__} ({old!r}), got {new!r}")
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, int) and isinstance(new, float) and new.is_integer():
        return int(new)  # 1e3 steps
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return list(new)
    if type(old) is not type(new):
        raise BenchmarkError(f"entry {entry!r}: {path} is {type(old).__name__} ({old!r}), got {type(new).__name__} {new!r}")
    return new


def apply(hparams: Mapping[str, Any], changes: Mapping[str, Any], entry: str, prefix: str = "") -> dict[str, Any]:
    """``hparams`` with ``changes`` applied; a key the profile lacks fails, listing the valid keys."""
    out = copy.deepcopy(dict(hparams))
    for key, value in changes.items():
        path = f"{prefix}{key}"
        if key not in out:
            valid = ", ".join(sorted(out)) or "none"
            where = f" under {prefix[:-1]}" if prefix else ""
            raise BenchmarkError(f"entry {entry!r} has no hyper-parameter {path!r}; valid keys{where}: {valid}")
        old = out[key]
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = apply(old, value, entry, f"{path}.")
        elif isinstance(value, Mapping):
            raise BenchmarkError(f"entry {entry!r}: {path} is {type(old).__name__} ({old!r}), not a table")
        else:
            out[key] = _coerce(path, old, value, entry)
    return out


def check_entries(overrides: Overrides, entries: Sequence[str]) -> None:
    """Fail before anything runs if the config names an entry the run does not have."""
    unknown = sorted(set(overrides.per_entry) - set(entries))
    if unknown:
        raise BenchmarkError(f"the config's '{ENTRY_SECTION}' names {', '.join(unknown)}, not among this run's entries "
                             f"({', '.join(entries)})")


def check_keys(overrides: Overrides, declared: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every key meant for all entries (config top level, ``--set``) must be declared by at least
    one entry of the run; an entry-specific key by that entry (``apply`` checks those). Returns a
    line per entry left unchanged by a key, for the user to see."""
    notes = []
    for key in sorted(set(overrides.common) | set(overrides.sets)):
        have = [name for name, hp in declared.items() if key in hp]
        if not have:
            names = sorted(declared)
            if len(names) == 1:
                valid = ", ".join(sorted(declared[names[0]])) or "none"
                raise BenchmarkError(f"entry {names[0]!r} has no hyper-parameter {key!r}; valid keys: {valid}")
            union = ", ".join(sorted({k for hp in declared.values() for k in hp}))
            raise BenchmarkError(f"no entry of this run ({', '.join(names)}) has a hyper-parameter {key!r}; "
                                 f"the keys they declare: {union}")
        if len(have) < len(declared):
            notes.append(f"{key!r} changes {', '.join(have)}; left alone (not a key of theirs): "
                         f"{', '.join(sorted(set(declared) - set(have)))}")
    return notes
