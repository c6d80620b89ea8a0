"""What ``benchmark estimate`` needs from a task: stand-ins of its datasets at the real sizes.

A task opts in with a method ``estimate_data(profile) -> EstimateData``. The stand-ins have the
real datasets' lengths (so epochs turn into the real number of steps) and yield samples with the
real shapes, keys and dtypes but no content: ``estimate`` builds them under a fake-tensor mode, so
a 26 MB PASTIS-R patch costs nothing. The numbers come from the datasets' documentation (each task
says where in ``source``); they are facts about data nobody here has to download.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset


class ShapeDataset(Dataset):
    """``length`` samples, each made by ``make(index)`` (all zeros at the real sizes)."""

    def __init__(self, length: int, make: Callable[[int], dict[str, Any]]):
        if length < 1:
            raise ValueError(f"ShapeDataset needs a positive length, got {length}")
        self.length, self.make = int(length), make

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Small tensors are real even under ``estimate``'s fake mode (an entry may read them on
        the host, as it reads real data); large ones are fake (``zeros``)."""
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        if isinstance(index, tuple):  # an epoch-seeded sampler's (epoch, index)
            index = index[-1]
        with unset_fake_temporarily():
            return self.make(int(index))


@dataclass
class EstimateData:
    """Real-size stand-ins of a task's views for one profile.

    ``splits``: segmentation ``unlabeled``, ``train``, ``test``; reconstruction ``train``, ``val``,
    ``test`` (test items name their ``target``). ``task_info`` is what ``RunContext.task_info``
    would hold; ``cells`` the cells whose stages are estimated (one per distinct input shape);
    ``source`` says where the sizes come from.
    """

    splits: Mapping[str, Dataset]
    task_info: Mapping[str, Any]
    collate: Callable[[list[Any]], Any]
    cells: tuple[Any, ...]
    source: str
    sizes: Mapping[str, Any] = field(default_factory=dict)  # the numbers used, shown by estimate
    inputs: Callable[[Any], Any] | None = None  # reconstruction: hide the target (task.inputs)


FAKE_ABOVE = 1 << 20  # elements: larger stand-ins are fake tensors while ``estimate`` runs
_FAKE_MODE: ContextVar[Any] = ContextVar("estimate_fake_mode", default=None)


def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A content-free tensor: fake when it is large and ``estimate`` runs (no memory, no time),
    real otherwise, so the collate's own reads of small tensors (dates, masks) stay exact."""
    mode = _FAKE_MODE.get()
    if mode is None or math.prod(shape) <= FAKE_ABOVE:
        return torch.zeros(*shape, dtype=dtype)
    with mode:
        return torch.zeros(*shape, dtype=dtype)


@contextlib.contextmanager
def fake_stand_ins(mode: Any) -> Iterator[None]:
    """Within the block, large ``zeros`` stand-ins are made as fake tensors of ``mode``."""
    token = _FAKE_MODE.set(mode)
    try:
        yield
    finally:
        _FAKE_MODE.reset(token)
