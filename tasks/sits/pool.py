"""The unlabeled pre-training pool of a SITS task: the training split's imagery plus extra series.

The S4 paper pre-trains on m2s2-SITS, a separate unlabeled collection several times the size of
the labeled sets, which was never released. So each task's self-supervised entries pre-train on
the training split's imagery with labels withheld plus, when the dataset folder holds one, an
extra unlabeled collection in the dataset's own layout (the embedded datasets carry one three
times the labeled training split; on a real copy users may add their own). Every
self-supervised entry sees the same pool; validation and test imagery are never in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmark.errors import DataError


class PoolReader:
    """Readers of the same task concatenated (ids in order, then by part); ids must be unique."""

    def __init__(self, parts: Sequence[Any], where: str):
        self.parts = list(parts)
        self.index: list[tuple[int, int]] = [(p, i) for p, part in enumerate(self.parts) for i in range(len(part))]
        self.ids = [str(i) for part in self.parts for i in part.ids]
        twice = sorted(i for i, n in Counter(self.ids).items() if n > 1)
        if twice:
            raise DataError(f"{where}: {len(twice)} series id(s) are both in the training split and the unlabeled pool, "
                            f"e.g. {twice[:3]}; pool ids must be distinct")

    def __len__(self) -> int:
        return len(self.index)

    @property
    def reads_windows(self) -> bool:
        return all(getattr(p, "reads_windows", False) for p in self.parts)

    def __getitem__(self, k: int) -> dict[str, Any]:
        p, i = self.index[k]
        return self.parts[p][i]

    def read(self, k: int, **kwargs: Any) -> dict[str, Any]:
        p, i = self.index[k]
        return self.parts[p].read(i, **kwargs)
