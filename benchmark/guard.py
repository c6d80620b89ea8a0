"""What an entry may see: views of datasets and copies of batches with the hidden fields removed.

Entries are untrusted code (see ``docs/threat_model.md``). The protocols hand them

* datasets wrapped in :class:`EntryView`: ``len`` and items only. The task's dataset, its reader,
  store, root folder and the ids of other splits sit in a closure, not in any attribute, so no
  walk over public attributes reaches them; items are fresh copies without the fields the cell
  withholds (labels of an unlabeled view, say);
* batches made by :func:`entry_copy`: every tensor cloned, every container rebuilt, so an entry
  editing its batch in place cannot touch the tensors the harness scores with.

The harness keeps truth (labels, hidden targets) and the constants it scores with (the target's
normalisation statistics) in its own objects, which are never passed on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch


def entry_copy(obj: Any) -> Any:
    """A deep copy of a batch or sample: tensors cloned, mappings / lists / tuples rebuilt."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return {k: entry_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [entry_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(entry_copy(v) for v in obj)
    return obj  # str, int, float, None, numpy scalars: immutable or copied by value


def without(obj: Mapping[str, Any], hidden: Iterable[str]) -> dict[str, Any]:
    """``obj`` as a fresh copy without the keys in ``hidden``."""
    drop = set(hidden)
    return {k: entry_copy(v) for k, v in obj.items() if k not in drop}


def _item_function(dataset: Any, hidden: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    def item(key: Any) -> dict[str, Any]:
        return without(dataset[key], hidden)

    return item


class EntryView(torch.utils.data.Dataset):
    """A dataset an entry may read: ``len(view)`` and ``view[i]``, nothing else.

    ``hidden`` names item fields the entry must not see (they are removed from every item). The
    wrapped dataset is reachable only through a closure, so an entry cannot walk from the view to
    the reader, store or files of other splits by attribute access.
    """

    __slots__ = ("_item", "_len", "epoch_seeded")

    def __init__(self, dataset: Any, hidden: Iterable[str] = ()):
        self._item = _item_function(dataset, tuple(hidden))
        self._len = len(dataset)
        # (epoch, index) keys pass through to an epoch-seeded dataset (benchmark.loading.split_key)
        self.epoch_seeded = bool(getattr(dataset, "epoch_seeded", False))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = key if self.epoch_seeded and isinstance(key, tuple) else (None, key)
        if not -self._len <= i < self._len:
            raise IndexError(f"index {i} out of range for a view of {self._len} samples")
        return self._item(i % self._len if epoch is None else (epoch, i % self._len))

    def __repr__(self) -> str:
        return f"EntryView({self._len} samples)"
