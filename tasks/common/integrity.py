"""Integrity of the embedded synthetic datasets: content verification against MANIFEST.json, and a
lock around first-use generation.

Verification (:func:`verify_files`): every file the manifest lists is hashed (sha256) and
compared with the manifest the first time a process uses the folder; a mismatch or a missing file
is a one-line :class:`~benchmark.errors.DataError` naming the first bad file and how to
regenerate. After a full pass, a sidecar ``.verified.json`` inside the folder records the size and
``st_mtime_ns`` of every listed file (and a digest of the manifest's list): when a later process
finds every file with the recorded size and mtime, it skips the hashing (the fast path); any
change of size or mtime, which an in-place edit makes, triggers a full pass again. Within one
process a folder is verified once (later calls return at once). Files the manifest does not list
(caches the readers write, the sidecar itself) are ignored.

Lock (:func:`generation_lock`): ``fcntl.flock`` on ``<folder>.lock`` beside the output folder, so
that two processes generating the same embedded dataset do not write into, or delete, each other's
``.partial`` folder: the second waits, then finds the finished data and uses it. The lock file is
left in place (removing it would race with a process about to lock it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from benchmark.errors import DataError

log = logging.getLogger(__name__)

SIDECAR = ".verified.json"
_VERIFIED: dict[str, str] = {}  # resolved folder -> digest of the file list verified by this process


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest(files: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()


def _stats(root: Path, files: Mapping[str, str], regenerate: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for rel in sorted(files):
        try:
            st = (root / rel).stat()
        except FileNotFoundError:
            raise DataError(f"{root}: embedded data file {rel} listed in MANIFEST.json is missing; {regenerate}") from None
        out[rel] = [st.st_size, st.st_mtime_ns]
    return out


def _write_sidecar(root: Path, digest: str, stats: dict[str, list[int]]) -> None:
    tmp = root / f"{SIDECAR}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({"manifest": digest, "files": stats}, sort_keys=True))
        tmp.replace(root / SIDECAR)
    except OSError:  # a read-only copy: no fast path, verified in full by every process
        with contextlib.suppress(OSError):
            tmp.unlink()


def reset_verification_cache() -> None:
    """Forget which folders this process verified (tests use it to exercise the later paths)."""
    _VERIFIED.clear()


def verify_files(root: Path, files: Mapping[str, str], *, regenerate: str) -> str:
    """Check the files under ``root`` against ``files`` ({relative path: sha256}); returns how:
    ``"cached"`` (already verified by this process), ``"fast"`` (sizes and mtimes as recorded by
    the last full pass) or ``"full"`` (every file hashed). ``regenerate`` ends the error message."""
    root = Path(root)
    key, digest = str(root.resolve()), _digest(files)
    if _VERIFIED.get(key) == digest:
        return "cached"
    stats = _stats(root, files, regenerate)
    try:
        recorded = json.loads((root / SIDECAR).read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == {"manifest": digest, "files": stats}:
        _VERIFIED[key] = digest
        return "fast"
    start = time.perf_counter()
    for rel in sorted(files):
        got = _sha256(root / rel)
        if got != files[rel]:
            raise DataError(f"{root}: embedded data file {rel} has sha256 {got[:12]}…, MANIFEST.json records "
                            f"{files[rel][:12]}… (edited in place?); {regenerate}")
    if _stats(root, files, regenerate) == stats:  # not changed while we hashed it
        _write_sidecar(root, digest, stats)
    _VERIFIED[key] = digest
    log.info("verified %d embedded data files of %s against MANIFEST.json in %.2f s", len(files), root, time.perf_counter() - start)
    return "full"


def record_verified(root: Path, files: Mapping[str, str]) -> None:
    """Mark freshly generated files as verified (their manifest hashes were computed from the very
    bytes written), so the first use does not hash them again."""
    root = Path(root)
    digest = _digest(files)
    _write_sidecar(root, digest, _stats(root, files, "regenerate it"))
    _VERIFIED[str(root.resolve())] = digest


@contextlib.contextmanager
def generation_lock(out: Path) -> Iterator[None]:
    """Exclusive lock for generating ``out`` (``<out>.lock`` beside it); blocks until it is free."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (concurrent first uses may then collide)
        yield
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is generating %s: waiting for it", out)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
