"""Progress of the embedded datasets' generation, shared by every generator (PASTIS-R, South
Sudan, TC-PRIMED): a bar on stderr while a first use generates one (:func:`generation_progress`,
:func:`progress_bar`, :func:`note`). Progress never touches a random stream, so the files are the
same bytes with or without it. The SITS scene model itself is :mod:`tasks.sits.scene`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- generation progress
# A task's ``resolve_data(..., show_progress=...)`` is where the run's ``--no-progress`` reaches the
# data side; the generators and ``prepare`` it calls (through ``ensure_synthetic``) take no such
# argument, so the choice travels in a context variable for the duration of that call.


@dataclass(frozen=True)
class _Setting:
    show: bool | None  # True, False, or None: bars only when stderr is a terminal


_SETTING: ContextVar[_Setting | None] = ContextVar("embedded_data_progress", default=None)


@contextlib.contextmanager
def generation_progress(show: bool | None) -> Iterator[None]:
    """Within the block, the generators' and ``prepare``'s bars follow ``show`` (``None``: only on
    a terminal) and each phase ends with a one-line summary on stderr."""
    token = _SETTING.set(_Setting(show))
    try:
        yield
    finally:
        _SETTING.reset(token)


def in_generation() -> bool:
    """Whether a :func:`generation_progress` block (a first-use generation) encloses the call."""
    return _SETTING.get() is not None


def progress_show(default: bool | None = None) -> bool | None:
    """The enclosing :func:`generation_progress` choice, else ``default``."""
    setting = _SETTING.get()
    return default if setting is None else setting.show


def progress_bar(total: int, desc: str, unit: str, show: bool | None = None, iterable: Any = None) -> Any:
    """A tqdm bar on stderr counting ``unit``s (over ``iterable`` when given). ``show``: True, False,
    or None for the enclosing :func:`generation_progress` choice (outside one: only when stderr is a
    terminal)."""
    from tqdm.auto import tqdm

    show = progress_show() if show is None else show
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None if show is None else not show, leave=False,
                dynamic_ncols=True, file=sys.stderr)


def note(message: str) -> None:
    """One line on stderr (a phase's start or end), shown even without bars."""
    print(message, file=sys.stderr, flush=True)
