"""Frozen splits: JSON files with a recorded sha256, and nested label-fraction subsets.

Label subsets rank training patches by ``sha256(f"{seed}:{id}")`` and keep the first
``ceil(f · n)``: nested for every fraction by construction, independent of file order, and
reproducible on the real data from its ids alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_split_file(path: Path, content: dict[str, Any]) -> str:
    """Write a split file in a canonical form (sorted keys, fixed indent) and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    return file_sha256(path)


def read_split_file(path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read a frozen split file, refusing one whose hash differs from the task spec's."""
    if not path.is_file():
        raise FileNotFoundError(f"split file missing: {path}")
    if expected_sha256 is not None:
        got = file_sha256(path)
        if got != expected_sha256:
            raise ValueError(f"split file {path} has sha256 {got}, the task spec expects {expected_sha256}: splits are frozen; bump the task version to change them")
    return json.loads(path.read_text())


def label_subset(train_ids: Iterable[Any], fraction: float, seed: int) -> list[str]:
    """The ``fraction`` of training ids kept for fine-tuning, nested across fractions (sorted)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    ids = sorted({str(i) for i in train_ids})
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return sorted(ranked[: math.ceil(fraction * len(ids))])


def check_disjoint(splits: dict[str, Sequence[Any]], where: str | None = None) -> None:
    """No id in two splits. ``where`` (the file the splits come from) makes it a one-line
    :class:`~benchmark.errors.DataError` naming that file; without it a ``ValueError``."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            overlap = set(map(str, splits[a])) & set(map(str, splits[b]))
            if overlap:
                message = f"splits {a!r} and {b!r} overlap on {len(overlap)} id(s), e.g. {sorted(overlap)[:3]}"
                if where is None:
                    raise ValueError(message)
                from benchmark.errors import DataError

                raise DataError(f"{where}: {message}; an id must be in one split only")
