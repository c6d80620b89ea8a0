"""``python -m benchmark prepare tc_primed --raw DIR --out DIR``: raw v01r01 files -> prepared store.

Per overpass (in parallel with dask): read the four channels (``reader.py``), keep the 89 GHz
swath geometry, resample the 37 GHz channels onto it by nearest neighbour within 100 km (NaN
beyond), add the land mask (global-land-mask) and write one ``[7, H, W]`` float32 ``.npy``
(37H, 37V, 89H, 89V in K with NaN where missing, latitude, longitude in [-180, 180), land 0/1)
plus a record with the metadata and the per-channel moments. Then, across files
(``catalog.py``): thinning, storm split, training-only statistics, ``index.csv``.

Store layout (``--out``): ``arrays/<SOURCE>/<obs_id>.npy``, ``files.jsonl`` (one record per raw
file, what makes re-runs incremental: unchanged files are not read again), ``index.csv`` (kept
observations and their split), ``splits.json``, ``stats.json``, ``sources.json``,
``report.json`` (counts, every skipped file with its reason, every Celsius -> Kelvin conversion
under ``converted``) and ``STORE.json``. A storm in two splits (``--splits`` or an earlier
``splits.json``) is a DataError.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import SPLIT_RULE, assign_splits, moments, normalization_stats, thin
from .reader import CHECKS_VERSION, NOT_ERRORS, REASONS, SkipFile, read_overpass
from .sensors import CHANNELS, CHARAC_NAMES, SOURCE_NAMES, SOURCES, characs_table

log = logging.getLogger(__name__)
STORE_FORMAT = "tc_primed-prepared-1"
RESAMPLE_KM = 100.0
EARTH_KM = 6371.0
INDEX_COLUMNS = ("obs_id", "atcf_id", "source", "time", "season", "basin", "storm_lat", "storm_lon", "intensity", "height", "width", "split", "array", "raw")


def _xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)


def resample_nearest(src_lat: np.ndarray, src_lon: np.ndarray, src_values: np.ndarray, dst_lat: np.ndarray,
                     dst_lon: np.ndarray, max_km: float = RESAMPLE_KM) -> np.ndarray:
    """Nearest-neighbour values [C, h, w] -> the destination pixels [C, H, W]; NaN beyond ``max_km``."""
    from scipy.spatial import cKDTree

    out = np.full((src_values.shape[0], *dst_lat.shape), np.nan, dtype=np.float32)
    src_ok = np.isfinite(src_lat) & np.isfinite(src_lon)
    dst_ok = np.isfinite(dst_lat) & np.isfinite(dst_lon)
    if not src_ok.any() or not dst_ok.any():
        return out
    tree = cKDTree(_xyz(src_lat[src_ok], src_lon[src_ok]))
    chord = 2 * np.sin(max_km / (2 * EARTH_KM))
    dist, idx = tree.query(_xyz(dst_lat[dst_ok], dst_lon[dst_ok]), k=1, distance_upper_bound=chord * (1 + 1e-9))
    hit = np.isfinite(dist)
    vals = src_values[:, src_ok]  # [C, n_src]
    picked = np.full((src_values.shape[0], hit.size), np.nan, dtype=np.float32)
    picked[:, hit] = vals[:, idx[hit]]
    out[:, dst_ok] = picked
    return out


def overpass_array(ov: Any) -> np.ndarray:
    """[7, H, W] on the 89 GHz swath: 37H, 37V (resampled), 89H, 89V, lat, lon, land."""
    from .land import is_land

    s89, s37 = ov.swaths["89"], ov.swaths["37"]
    same_grid = ov.source.swath37 == ov.source.swath89 and s37.lat.shape == s89.lat.shape
    tb37 = s37.tb if same_grid else resample_nearest(s37.lat, s37.lon, s37.tb, s89.lat, s89.lon)
    ok = np.isfinite(s89.lat) & np.isfinite(s89.lon)
    land = np.full(s89.lat.shape, np.nan, dtype=np.float32)
    land[ok] = is_land(s89.lat[ok], s89.lon[ok])
    arr = np.concatenate([tb37, s89.tb, s89.lat[None], s89.lon[None], land[None]]).astype(np.float32)
    arr[:4, ~ok] = np.nan
    return arr


def process_file(raw_root: str, rel: str, out: str) -> dict[str, Any]:
    """One raw file -> its array on disk and a record; problems become a 'skipped' record, never an exception."""
    path = Path(raw_root) / rel
    try:
        st = path.stat()
        rec: dict[str, Any] = {"raw": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "checks": CHECKS_VERSION}
    except OSError as exc:
        return {"raw": rel, "size": -1, "mtime_ns": -1, "checks": CHECKS_VERSION, "status": "skipped", "reason": "unreadable", "detail": str(exc)}
    try:
        ov = read_overpass(path)
        arr = overpass_array(ov)
        if not np.isfinite(arr[:4]).any(axis=(1, 2)).all():
            raise SkipFile("all_nan", f"{path.name}: a channel has no valid pixel on the 89 GHz grid after resampling")
    except SkipFile as exc:
        return {**rec, "status": "skipped", "reason": exc.reason, "detail": exc.detail}
    except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the batch; it is counted and reported
        return {**rec, "status": "skipped", "reason": "unreadable", "detail": f"{path.name}: {type(exc).__name__}: {exc}"}
    obs_id = path.stem.split("_", 2)[2]  # <ATCFID>_<SENSOR>_<PLATFORM>_<ORBIT>_<stamp>
    array_rel = f"arrays/{ov.source.name}/{obs_id}.npy"
    target = Path(out) / array_rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    tmp.replace(target)
    out_rec = {**rec, "status": "ok", "obs_id": obs_id, "array": array_rel, "source": ov.source.name, "atcf_id": ov.atcf_id,
               "time": ov.time, "season": ov.season, "basin": ov.basin, "storm_lat": round(ov.storm_lat, 4),
               "storm_lon": round(ov.storm_lon, 4), "intensity": ov.intensity, "height": int(arr.shape[1]),
               "width": int(arr.shape[2]), "moments": moments(arr[:4])}
    if ov.notes:  # conversions made while reading (Celsius -> Kelvin): listed in report.json "converted"
        out_rec["notes"] = list(ov.notes)
    return out_rec


def process_chunk(raw_root: str, rels: list[str], out: str) -> list[dict[str, Any]]:
    return [process_file(raw_root, rel, out) for rel in rels]


def run_files(raw_root: Path, rels: list[str], out: Path, scheduler: str = "local", workers: int | None = None,
              chunk: int = 16) -> Iterator[dict[str, Any]]:
    """Records of ``rels`` as they complete. ``scheduler``: ``local`` (a dask LocalCluster),
    ``processes`` (one local process pool), ``sync`` (in-process), or a dask scheduler address."""
    chunks = [rels[i: i + chunk] for i in range(0, len(rels), chunk)]
    if not chunks:
        return
    args = (str(raw_root), str(out))
    if scheduler == "sync":
        for c in chunks:
            yield from process_chunk(args[0], c, args[1])
        return
    workers = workers or os.cpu_count() or 1
    if scheduler == "processes":  # one pool for the whole batch (dask's multiprocessing scheduler would start one per call)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for part in pool.map(process_chunk, [args[0]] * len(chunks), chunks, [args[1]] * len(chunks)):
                yield from part
        return
    from dask.distributed import Client, LocalCluster, as_completed

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO lines would bury our progress
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR) if scheduler == "local" else None
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            futures = client.map(process_chunk, [args[0]] * len(chunks), chunks, [args[1]] * len(chunks), pure=False)
            for fut in as_completed(futures):
                yield from fut.result()
    finally:
        if cluster is not None:
            cluster.close()


def _load_records(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interrupted run
                    continue
                out[rec["raw"]] = rec
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def check_storm_splits(splits: dict[str, Any], where: str) -> None:
    """No storm in two of train/val/test (a one-line DataError naming the storms and ``where``)."""
    from tasks.sits.splits import check_disjoint

    check_disjoint({k: list(splits.get(k, [])) for k in ("train", "val", "test")}, where=where)


def prepare_store(raw: Path, out: Path, *, scheduler: str = "local", workers: int | None = None, force: bool = False,
                  splits: dict[str, list[str]] | None = None, progress: bool = True,
                  say: Callable[[str], None] = print, splits_from: str | None = None) -> dict[str, Any]:
    """Turn every ``*.nc`` under ``raw`` into the prepared store at ``out``; returns the report.
    ``splits_from`` names the file ``splits`` came from in errors. Inside a first-use generation
    (``tasks.sits.synthetic.generation_progress``) the bar follows that block's choice and a
    one-line summary goes to stderr; otherwise ``progress`` and ``say`` decide."""
    import pandas as pd

    from benchmark.errors import DataError
    from tasks.sits.synthetic import in_generation, note, progress_bar, progress_show

    from .land import _table

    first_use = in_generation()
    show = progress_show() if first_use else progress

    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DataError(f"--raw {raw} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rels = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.nc") if p.is_file())
    old = {} if force else _load_records(out / "files.jsonl")
    todo = []
    for rel in rels:
        prev, st = old.get(rel), (raw / rel).stat()
        fresh = prev and prev["size"] == st.st_size and prev["mtime_ns"] == st.st_mtime_ns and prev.get("checks") == CHECKS_VERSION
        if not fresh or (prev["status"] == "ok" and not (out / prev["array"]).is_file()):
            todo.append(rel)
    records = {rel: old[rel] for rel in rels if rel in old and rel not in todo}
    say(f"prepare: {len(rels)} raw files, {len(records)} unchanged since the last run, {len(todo)} to read ({scheduler} scheduler)")
    if todo:
        _table()  # build the land-mask cache once, before the workers need it
    with (out / "files.jsonl").open("a") as journal, progress_bar(len(todo), "prepare tc_primed", "file", show) as bar:
        for rec in run_files(raw, todo, out, scheduler=scheduler, workers=workers):
            records[rec["raw"]] = rec
            journal.write(json.dumps(rec) + "\n")
            bar.update(1)
    ordered = [records[r] for r in rels]
    (out / "files.jsonl.tmp").write_text("".join(json.dumps(r) + "\n" for r in ordered))
    (out / "files.jsonl.tmp").replace(out / "files.jsonl")
    ok = [r for r in ordered if r["status"] == "ok"]
    kept, dropped = thin(ok)
    if not kept:
        raise DataError(f"{raw}: no usable overpass file among {len(rels)} .nc files (see {out / 'report.json'})")
    if splits is not None:
        previous = splits
        check_storm_splits(previous, splits_from or "the splits given to prepare")
    elif (out / "splits.json").is_file() and not force:
        previous = json.loads((out / "splits.json").read_text())
        check_storm_splits(previous, str(out / "splits.json"))
    else:
        previous = None
    assignment = assign_splits({r["atcf_id"] for r in kept}, previous)
    check_storm_splits(assignment, str(out / "splits.json"))
    split_of = {s: name for name, ids in assignment.items() for s in ids}
    if not assignment["train"]:
        raise DataError(f"{raw}: no training storm ({len(split_of)} storms in all); at least 3 storms are needed")
    stats = normalization_stats(kept, assignment["train"], SOURCE_NAMES)
    index = pd.DataFrame([{**{k: r[k] for k in INDEX_COLUMNS if k in r}, "split": split_of[r["atcf_id"]]} for r in kept], columns=list(INDEX_COLUMNS))
    index.to_csv(out / "index.csv.tmp", index=False, float_format="%.6f")
    (out / "index.csv.tmp").replace(out / "index.csv")
    _write_json(out / "splits.json", {**{k: v for k, v in SPLIT_RULE.items() if k in ("seed", "fractions", "unit")}, **assignment})
    _write_json(out / "stats.json", stats)
    _write_json(out / "sources.json", {"channels": list(CHANNELS), "characs_names": list(CHARAC_NAMES), "characs": characs_table(),
                                       "variables": {n: list(s.variables) for n, s in SOURCES.items()},
                                       "swaths": {n: [s.swath37, s.swath89] for n, s in SOURCES.items()}})
    skipped = [r for r in ordered if r["status"] == "skipped"]
    report = {
        "raw": str(raw), "files": len(rels), "read_now": len(todo), "ok": len(ok), "kept": len(kept), "thinned": len(dropped),
        "skipped": dict(sorted(Counter(r["reason"] for r in skipped).items())),
        "errors": sum(r["reason"] not in NOT_ERRORS for r in skipped),
        "skipped_files": [{"file": r["raw"], "reason": r["reason"], "detail": r["detail"]} for r in skipped if r["reason"] != "environmental"],
        "storms": {k: len(v) for k, v in assignment.items()},
        "observations": {k: int((index["split"] == k).sum()) for k in assignment},
        "per_source": {k: int(v) for k, v in index["source"].value_counts().sort_index().items()},
        "stats_fallback": sorted(k for k, v in stats.items() if v["pooled_fallback"]),
        "converted": [{"file": r["raw"], "detail": note} for r in ordered for note in r.get("notes", ())],
        "seconds": round(time.perf_counter() - start, 2),
    }
    _write_json(out / "report.json", report)
    if first_use:
        note(f"tc_primed: prepared {len(todo)} raw files in {report['seconds']:.1f} s: {report['kept']} overpasses kept "
             f"({report['thinned']} thinned; files skipped: {report['skipped'] or 'none'}), storms {report['storms']}")
    _write_json(out / "STORE.json", {"format": STORE_FORMAT, "resample_km": RESAMPLE_KM, "array_channels": [*CHANNELS, "lat", "lon", "land"]})
    for reason, n in report["skipped"].items():
        (log.info if reason in NOT_ERRORS else log.warning)("skipped %d file(s): %s", n, REASONS.get(reason, reason))
    if report["converted"]:
        files = len({c["file"] for c in report["converted"]})
        say(f"prepare: converted {len(report['converted'])} brightness-temperature variable(s) in {files} file(s) from Celsius "
            f"to Kelvin (+273.15), e.g. {report['converted'][0]['detail']}; every one is listed in {out / 'report.json'} 'converted'")
    say(f"prepare: {report['kept']} observations kept ({report['thinned']} thinned, {len(skipped)} files skipped: "
        f"{report['skipped'] or 'none'}) in {report['seconds']} s; storms {report['storms']}; store at {out}")
    return report
