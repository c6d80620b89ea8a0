"""``python -m benchmark plot tc_primed …``: a figure like the paper's Figure 1.

Top row: the target overpass (what the entry had to reconstruct) and the input overpasses, each
drawn in its own swath geometry (pcolormesh on its own latitude/longitude grid) with its time
offset from the target; bottom row: realizations sampled by the entry. One channel (37 GHz H by
default, as in the paper), in Kelvin, one colour scale for the whole figure.

The entry is fitted exactly as ``python -m benchmark run`` fits it (same checkpoint folder under
``--results``), so after a run the plot reuses the trained weights; without one it trains first.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import registry
from benchmark.contracts import RunContext, profile_hparams
from benchmark.errors import BenchmarkError
from benchmark.plan import task_recipe, work_key
from benchmark.results import JobKey, ResultStore

from .sensors import CHANNELS

DEFAULT_CELL = "train6h-eval6h-min3-all"


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entry", default="motif_fm", help="entry name, module:Class or file.py:Class (default: motif_fm)")
    parser.add_argument("--cell", default=DEFAULT_CELL, help=f"evaluation cell (default: {DEFAULT_CELL})")
    parser.add_argument("--profile", default="mini", help="profile the entry was run with (default: mini)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder of the run whose weights to reuse")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--sample", default=None,
                        help="test sample: an index into the cell's test set or a sample id (default: the one with the most inputs)")
    parser.add_argument("--channel", default="37H", choices=CHANNELS, help="channel to draw (default: 37H, as the paper)")
    parser.add_argument("--realizations", type=int, default=6, help="realizations to draw (default: 6)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: <results>/tc_primed/<profile>/figure1-<entry>.png)")
    parser.add_argument("--no-progress", action="store_true")


def job_context(task: Any, data: Any, identity: Any, cell: Any, cls: type, profile: str, seed: int, device: str,
                results: Path, show_progress: bool) -> RunContext:
    """The context ``benchmark.runner`` gives a job (same checkpoint folder, so trained weights are reused)."""
    spec = task.spec
    key = JobKey(spec.name, profile, cls.metadata.name, cell.name, seed)
    hparams = {**profile_hparams(cls, profile), **dict(cell.params.get("hparams", {}))}
    run = ResultStore(results).current(key)
    if run is not None and isinstance(run.get("hparams"), dict):
        hparams = dict(run["hparams"])  # the run's own settings, --set / --config included
    folder = work_key(spec, cls, hparams, dataclasses.asdict(identity), task_recipe(task, profile))
    return RunContext(device=torch.device(device), seed=seed, profile=profile, hparams=hparams,
                      checkpoint_dir=ResultStore(results).work_dir(key) / folder, cell=dict(cell.params),
                      task_info=dict(task.info(data, cell)), collate=task.collate, show_progress=show_progress)


def _pick(task: Any, test: Any, which: str | None) -> int:
    if which is None:  # the sample with the most inputs (first of them): the richest picture
        sizes = [len(test.plan[i][1]) for i in range(len(test))]
        return int(np.argmax(sizes))
    if which.isdigit():
        i = int(which)
        if not 0 <= i < len(test):
            raise BenchmarkError(f"--sample {i}: the test set of this cell has {len(test)} samples")
        return i
    ids = [w.id for w in test.windows]
    if which not in ids:
        raise BenchmarkError(f"--sample {which!r} is not a sample id of this cell (e.g. {ids[0]})")
    return ids.index(which)


def _kelvin(store: Any, key: str, values: torch.Tensor) -> np.ndarray:
    mean, std = store.norm(key.split("#", 1)[0])
    return values.numpy() * std[:, None, None] + mean[:, None, None]


def render(panels_top: list[dict[str, Any]], panels_bottom: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Draw the figure: each panel is {"lat", "lon", "field" (K, NaN where absent), "title"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = np.concatenate([p["field"][np.isfinite(p["field"])] for p in panels_top + panels_bottom])
    vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    cols = max(len(panels_top), len(panels_bottom))
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 6.4), squeeze=False)
    mesh = None
    lat_all = np.concatenate([p["lat"][np.isfinite(p["lat"])] for p in panels_top])
    lon_all = np.concatenate([p["lon"][np.isfinite(p["lon"])] for p in panels_top])
    for row, panels in enumerate((panels_top, panels_bottom)):
        for j in range(cols):
            ax = axes[row, j]
            if j >= len(panels):
                ax.axis("off")
                continue
            p = panels[j]
            field = np.ma.masked_invalid(p["field"])
            ok = np.isfinite(p["lat"]) & np.isfinite(p["lon"])
            lat, lon = np.where(ok, p["lat"], np.nanmean(p["lat"])), np.where(ok, p["lon"], np.nanmean(p["lon"]))
            field = np.ma.masked_where(~ok, field)
            mesh = ax.pcolormesh(lon, lat, field, vmin=vmin, vmax=vmax, cmap="turbo", shading="nearest")
            ax.set_xlim(lon_all.min(), lon_all.max())
            ax.set_ylim(lat_all.min(), lat_all.max())
            ax.set_title(p["title"], fontsize=9)
            ax.tick_params(labelsize=7)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, shrink=0.8, label="brightness temperature (K)")
    fig.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_plot(task: Any, args: argparse.Namespace) -> int:
    cls = registry.load_entry(args.entry)
    if cls.metadata.family != task.spec.family:
        raise BenchmarkError(f"entry {args.entry!r} is a {cls.metadata.family} entry; tc_primed needs reconstruction")
    data, identity = task.resolve_data(args.data_root, args.profile)
    cell = task.spec.cell(args.cell)
    ctx = job_context(task, data, identity, cell, cls, args.profile, args.seed, args.device, args.results, not args.no_progress)
    shared = ctx.stage(cell.shared.get("fit", "fit"))
    if not any(shared.checkpoint_dir.iterdir()):
        print(f"note: no trained {cls.metadata.name} under {args.results} for this profile/data; fitting it first")
    entry = cls()
    entry.fit(task.windows(data, "train", cell, ctx), task.windows(data, "val", cell, ctx), shared)
    test = task.windows(data, "test", cell, ctx)
    i = _pick(task, test, args.sample)
    batch = task.collate([test[i]])
    c = CHANNELS.index(args.channel)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + 7)
    with torch.inference_mode():
        samples = entry.sample(task.inputs(batch), args.realizations, gen)
    target_key = batch["target"][0]
    store = data.store
    tgt = batch["sources"][target_key]
    target_dt = float(tgt["dt"][0])
    h, w = tgt["values"].shape[-2:]

    def panel(key: str, field: np.ndarray, title: str) -> dict[str, Any]:
        s = batch["sources"][key]
        return {"lat": s["coords"][0, 0].numpy(), "lon": s["coords"][0, 1].numpy(), "field": field, "title": title}

    top = [panel(target_key, _kelvin(store, target_key, tgt["values"][0])[c], f"target: {target_key}")]
    inputs = [k for k in batch["sources"] if k != target_key and bool(batch["sources"][k]["avail"][0])]
    inputs.sort(key=lambda k: float(batch["sources"][k]["dt"][0]))
    for k in inputs:
        delta = target_dt - float(batch["sources"][k]["dt"][0])  # hours after the target (negative: before)
        top.append(panel(k, _kelvin(store, k, batch["sources"][k]["values"][0])[c], f"{k}  δt = {delta:+.1f} h"))
    phys = task.denormalize(samples.float(), batch)[:, 0, c, :h, :w].numpy()
    observed = np.isfinite(tgt["values"][0, c].numpy())
    bottom = [panel(target_key, np.where(observed, phys[r], np.nan), f"{cls.metadata.name}: realization {r + 1}")
              for r in range(phys.shape[0])]
    out = args.out or args.results / task.spec.name / args.profile / f"figure1-{cls.metadata.name}.png"
    title = (f"{test.windows[i].id} — {args.channel}, cell {cell.name}, {cls.metadata.name} ({args.profile}, "
             f"{'real' if identity.is_real else 'SYNTHETIC'} data)")
    render(top, bottom, Path(out), title)
    print(f"wrote {out}")
    return 0


def raw_overpasses_figure(files: list[Path], out: Path, channel: str = "89H", title: str = "") -> Path:
    """Raw overpass files of one storm (each on its own swath grid, storm-relative degrees, longitudes
    unwrapped around the storm centre) side by side: one channel in K, one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .reader import read_overpass

    overs = [read_overpass(f) for f in files]
    band = "89" if channel.startswith("89") else "37"
    pol = 0 if channel.endswith("H") else 1
    vals = np.concatenate([o.swaths[band].tb[pol][np.isfinite(o.swaths[band].tb[pol])] for o in overs])
    lo, hi = np.percentile(vals, [1, 99])
    fig, axes = plt.subplots(1, len(overs), figsize=(3.2 * len(overs), 3.6), squeeze=False, constrained_layout=True)
    t0 = overs[0].time
    for ax, o in zip(axes[0], overs, strict=True):
        s = o.swaths[band]
        dlon = (s.lon - o.storm_lon + 180) % 360 - 180
        mesh = ax.pcolormesh(dlon * np.cos(np.radians(o.storm_lat)), s.lat - o.storm_lat, s.tb[pol], vmin=lo, vmax=hi,
                             cmap="turbo_r", shading="nearest")
        ax.plot(0, 0, "k+", ms=10)
        ax.set_title(f"{o.source.sensor} {o.source.platform}\n{(o.time - t0) / 3600:+.1f} h, {o.intensity:.0f} kt", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-1.4, 1.4)
        ax.set_ylim(-1.4, 1.4)
        ax.set_xlabel("east of centre (deg)", fontsize=8)
    axes[0][0].set_ylabel("north of centre (deg)", fontsize=8)
    fig.colorbar(mesh, ax=axes[0].tolist(), label=f"{channel} (K)", shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
