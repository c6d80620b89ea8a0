"""Catch a job that writes under the results folder outside its own checkpoint folder.

Before each job the harness keeps the bytes of every record and statistics file of the task and
profile (``_work`` checkpoint folders excluded; they are caches); after the job it compares. Any
file changed or deleted is restored, any new file moved to ``_quarantine/``, and the job fails
naming them. Files the run itself is about to write (the records of its planned jobs and their
``_attempts/``) are exempt. Measured: the committed mini results are 1.4-1.8 MB per task (~110
files), hashed in ~10 ms.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .results import JobKey, ResultStore, now_iso


class ResultsGuard:
    def __init__(self, results_dir: Path, task: str, profile: str, exempt: Iterable[JobKey]):
        self.store = ResultStore(results_dir)
        self.base = Path(results_dir) / task / profile
        self.exempt_files: set[Path] = set()
        self.exempt_dirs: set[Path] = set()
        for key in exempt:
            self.exempt_files |= {self.store.record_path(key), self.store.stats_path(key)}
            self.exempt_dirs.add(self.store.attempts_dir(key))
        self.exempt_files |= {self.base / n for n in ("TABLES.md", "TABLES.csv", "COMPARISONS.csv")}

    def _files(self) -> dict[Path, bytes]:
        out: dict[Path, bytes] = {}
        if not self.base.is_dir():
            return out
        for root, dirs, files in os.walk(self.base):
            dirs[:] = [d for d in dirs if d not in ("_work", "_quarantine") and Path(root, d) not in self.exempt_dirs]
            for name in files:
                path = Path(root, name)
                if path in self.exempt_files or name.startswith("."):
                    continue
                try:
                    out[path] = path.read_bytes()
                except OSError:
                    continue
        return out

    def snapshot(self) -> dict[Path, bytes]:
        return self._files()

    def restore(self, before: dict[Path, bytes]) -> list[str]:
        """Undo every change since ``before``; returns what was changed (empty: nothing)."""
        after = self._files()
        changed = []
        for path, data in before.items():
            if after.get(path) != data:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                changed.append(f"{path} ({'deleted' if path not in after else 'changed'}; restored)")
        for path in sorted(set(after) - set(before)):
            target = self.base / "_quarantine" / now_iso().replace(":", "") / path.relative_to(self.base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
            changed.append(f"{path} (new; moved to {target})")
        return changed
