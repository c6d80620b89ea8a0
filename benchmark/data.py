"""Where data lives: ``--data-root``, then ``$BENCHMARK_DATA``, then the user cache."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    env = os.environ.get("BENCHMARK_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "benchmark"


def resolve_data_root(data_root: Path | str | None) -> Path:
    """The folder a task looks in for its real dataset (and where it caches synthetic data)."""
    return Path(data_root).expanduser() if data_root is not None else default_data_root()
