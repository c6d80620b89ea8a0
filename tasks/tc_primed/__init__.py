"""Task ``tc_primed``: cross-sensor passive-microwave reconstruction on TC-PRIMED overpasses.

The task class is imported lazily so that worker processes of ``prepare`` (which import
``tasks.tc_primed.prepare``) do not pay for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TcPrimedTask"]


def __getattr__(name: str) -> Any:
    if name == "TcPrimedTask":
        from .task import TcPrimedTask

        return TcPrimedTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
