"""The embedded synthetic datasets: content verification against MANIFEST.json (an in-place edit is
refused, naming the file; a sidecar makes later first uses cheap) and a lock around first-use
generation (two processes at once: one generates, the other waits and uses the result).

Everything is generated small into tmp_path; the shared cached embedded datasets are not touched."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.errors import DataError
from tasks.common.integrity import SIDECAR, reset_verification_cache, verify_files
from tasks.pastis_r import PastisRTask
from tasks.pastis_r.synthetic import generate
from tasks.tc_primed.task import TcPrimedTask, hash_files

TINY_TC = {"n_storms": 3, "half_box_km": 60.0}
LOG = "generations.log"


class TinyPastis(PastisRTask):
    """The PASTIS-R task with a tiny embedded dataset; logs every generation (and can be slowed)."""

    delay_s = 0.0

    def generate_synthetic(self, out: Path, seed: int, **size: Any) -> dict[str, str]:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with (Path(out).parent / LOG).open("a") as fh:
            fh.write(f"pastis {os.getpid()}\n")
        time.sleep(self.delay_s)
        return generate(out, seed, n_patches=10, size=16, s2_dates=(3, 4), s1_dates=(3, 4))


class FakeTc(TcPrimedTask):
    """tc_primed whose 'generation' writes a minimal store quickly (the lock is what is tested)."""

    def build_synthetic(self, out: Path, seed: int, **kw: Any) -> dict[str, Any]:
        with (Path(out).parent / LOG).open("a") as fh:
            fh.write(f"tc {os.getpid()}\n")
        time.sleep(0.5)  # both processes are past the barrier: the other one arrives meanwhile
        prepared = out / "prepared"
        prepared.mkdir(parents=True)
        for name in ("STORE.json", "index.csv", "stats.json", "splits.json", "sources.json"):
            (prepared / name).write_text("{}\n")
        files = hash_files(out, [f"prepared/{n}" for n in sorted(os.listdir(prepared))])
        manifest = {"prepared": files, "content_checksum": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
                    "seconds": {"generate": 1.0, "prepare": 0.0}}
        (out / "MANIFEST.json").write_text(json.dumps(manifest))
        return manifest


def _edit_in_place(path: Path) -> None:
    """Change one byte near the end (same size) and move the mtime on (file systems with coarse
    timestamps could otherwise keep it)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# ------------------------------------------------------------------ 7. content verification
def test_sits_embedded_data_is_verified_by_content(tmp_path: Path) -> None:
    task = TinyPastis()
    out = task.ensure_synthetic(tmp_path)
    files = json.loads((out / "MANIFEST.json").read_text())["files"]
    assert (out / SIDECAR).is_file() and verify_files(out, files, regenerate="") == "cached"  # generation counts as verified
    reset_verification_cache()
    assert verify_files(out, files, regenerate="") == "fast"  # a new process: sizes and mtimes as recorded
    os.utime(out / "metadata.geojson", ns=(1, 1))  # touched, same content: hashed again, accepted, re-recorded
    reset_verification_cache()
    assert verify_files(out, files, regenerate="") == "full"
    reset_verification_cache()
    assert verify_files(out, files, regenerate="") == "fast"

    _edit_in_place(out / "ANNOTATIONS/TARGET_10004.npy")
    reset_verification_cache()
    with pytest.raises(DataError) as err:
        task.ensure_synthetic(tmp_path)  # what resolve_data calls first (the tiny data do not match the frozen splits)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{out}: embedded data file ANNOTATIONS/TARGET_10004.npy has sha256 ")
    assert msg.endswith(f"(edited in place?); delete {out} to regenerate it (it is rebuilt on next use)")

    (out / "ANNOTATIONS/TARGET_10004.npy").unlink()
    with pytest.raises(DataError, match=r"embedded data file ANNOTATIONS/TARGET_10004.npy listed in MANIFEST.json is missing; delete"):
        task.ensure_synthetic(tmp_path)
    shutil.rmtree(out)  # what the message says to do
    assert task.ensure_synthetic(tmp_path) == out and len((tmp_path / "synthetic" / LOG).read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def tiny_tc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tc_embedded")
    TcPrimedTask(synthetic_size=TINY_TC).ensure_synthetic(root)
    return root


def test_tc_prepared_store_is_verified_by_content(tiny_tc: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_tc / "synthetic", tmp_path / "synthetic")  # copy2 keeps mtimes: the sidecar still holds
    task = TcPrimedTask(synthetic_size=TINY_TC)
    out = task.synthetic_dir(tmp_path)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    reset_verification_cache()
    assert verify_files(out, manifest["prepared"], regenerate="") == "fast"
    data, identity = task.resolve_data(tmp_path, "smoke")
    assert identity.checksum == manifest["content_checksum"]

    raw = out / next(iter(manifest["raw"]))
    _edit_in_place(raw)  # raw files are not read by runs (nor verified: byte hashes depend on the netCDF library)
    reset_verification_cache()
    task.resolve_data(tmp_path, "smoke")

    victim = sorted(r for r in manifest["prepared"] if r.startswith("prepared/arrays/"))[0]
    _edit_in_place(out / victim)
    reset_verification_cache()
    with pytest.raises(DataError, match=rf"^{out}: embedded data file {victim} has sha256 .*; delete {out} to regenerate it"):
        task.resolve_data(tmp_path, "smoke")

    (out / "MANIFEST.json").write_text(json.dumps({**manifest, "content_checksum": "0" * 64}))
    with pytest.raises(DataError, match="content_checksum is not the hash of its 'prepared' file list"):
        task.ensure_synthetic(tmp_path)


# ------------------------------------------------------------------ 8. two processes at first use
def _first_use(root: str, barrier: Any) -> None:
    TinyPastis.delay_s = 0.5  # both processes are past the barrier: the other one arrives meanwhile
    barrier.wait()
    TinyPastis().ensure_synthetic(Path(root))
    FakeTc().ensure_synthetic(Path(root))


def test_two_processes_at_first_use_generate_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # not fork: a child forked after torch's OpenMP threads ran can hang
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_first_use, args=(str(tmp_path), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    runs = (tmp_path / "synthetic" / LOG).read_text().split()
    assert runs[0::2].count("pastis") == 1 and runs[0::2].count("tc") == 1  # each dataset generated once
    out = TinyPastis().synthetic_dir(tmp_path)
    assert not out.with_name(out.name + ".partial").exists() and (out / "MANIFEST.json").is_file()
    reset_verification_cache()
    files = json.loads((out / "MANIFEST.json").read_text())["files"]
    assert verify_files(out, files, regenerate="") == "fast" and len(np.load(out / "DATA_S2/S2_10000.npy")) >= 3
