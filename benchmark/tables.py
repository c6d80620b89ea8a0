"""Render a task's tables from stored records only (never re-runs anything).

Segmentation tables are the S4 paper's layout (entries × cells, mIoU in % with its interval);
reconstruction tables are the TC-PRIMED paper's layout (one row per entry and cell, the cell's
configuration as columns, ``CRPS [low, high] (std)``). Published numbers from ``results/paper``
appear in a labelled column only when every record in the table was computed on real data.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .errors import BenchmarkError
from .results import ResultStore

FORMATS = ("markdown", "latex", "csv")
_TABULATE_FMT = {"markdown": "github", "latex": "latex_booktabs"}


def paper_numbers(results_dir: Path, task: str) -> list[dict[str, str]]:
    """Rows of ``<results>/paper/<task>.csv`` (table, entry, cell, metric, value, low, high, std)."""
    path = Path(results_dir) / "paper" / f"{task}.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [row for row in csv.DictReader(line for line in fh if not line.startswith("#"))]


def _scale(metric: str) -> float:
    """Tables show IoU-like metrics in percent, everything else in the stored units."""
    return 100.0 if metric in ("miou", "overall_accuracy") or metric.startswith("miou") else 1.0


def fmt_metric(metric: str, m: Mapping[str, Any] | None) -> str:
    """``54.6 [53.9, 55.2]`` for IoU-like metrics (in %), ``4.76 [4.71, 4.81] (2.37)`` for CRPS-like."""
    if not m or m.get("estimate") is None:
        return "–"
    if _scale(metric) != 1:
        return f"{100 * m['estimate']:.1f} [{100 * m['low']:.1f}, {100 * m['high']:.1f}]"
    text = f"{m['estimate']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"
    if m.get("std") is not None:
        text += f" ({m['std']:.2f})"
    return text


def _latest_per_job(records: Iterable[dict[str, Any]], seed: int | None) -> tuple[dict[tuple[str, str], dict], list[int]]:
    """(entry, cell) -> record for the chosen seed (default: the lowest seed present)."""
    records = list(records)
    seeds = sorted({r["seed"] for r in records})
    if not seeds:
        return {}, []
    chosen = seeds[0] if seed is None else seed
    if chosen not in seeds:
        raise BenchmarkError(f"no records for seed {chosen}; seeds present: {seeds}")
    return {(r["entry"]["name"], r["cell"]["name"]): r for r in records if r["seed"] == chosen}, seeds


def _data_note(records: Iterable[dict[str, Any]]) -> tuple[bool, str]:
    kinds = {(r["data"]["kind"], r["data"].get("generator_version", ""), r["data"].get("seed")) for r in records}
    real = all(k[0] == "real" for k in kinds)
    if real:
        return True, "Data: real dataset."
    gens = ", ".join(sorted(f"{g or '?'} (seed {s})" for kind, g, s in kinds if kind == "synthetic"))
    return False, f"Data: embedded SYNTHETIC dataset [{gens}]. Published numbers are not shown: they are not comparable."


def render(task: Any, results_dir: Path, profile: str, fmt: str = "markdown", seed: int | None = None, extended: bool = False) -> str:
    """Every table of ``task`` at ``profile`` plus the throughput table, as one document."""
    if fmt not in FORMATS:
        raise BenchmarkError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    spec = task.spec
    store = ResultStore(results_dir)
    records = [r for r in store.records(spec.name, profile)]
    if not records:
        raise BenchmarkError(f"no results for task {spec.name!r} at profile {profile!r} under {results_dir}; run `python -m benchmark run --task {spec.name} --profile {profile}` first")
    ok = [r for r in records if r.get("status") == "ok"]
    jobs, seeds = _latest_per_job(ok, seed)
    failed = [r for r in records if r.get("status") != "ok"]
    real, note = _data_note(ok or records)
    paper = paper_numbers(results_dir, spec.name) if real else []
    entries = sorted({e for e, _ in jobs}, key=lambda e: (e != "s4", e))
    parts: list[str] = []
    if fmt == "csv":
        return _render_csv(jobs)
    for table_id, table in spec.table_specs().items():
        cells = [spec.cell(c) for c in table.cells]
        shown = [e for e in entries if not table.entries or e in table.entries]
        if not any((e, c.name) in jobs for e in shown for c in cells):
            continue
        if spec.family == "segmentation":
            headers, rows = _pivot(spec.metric.name, shown, cells, jobs, paper, table_id)
        else:
            headers, rows = _long(spec.metric.name, shown, cells, jobs, paper, table_id, extended)
        parts.append(_heading(f"{spec.name} — {table.title} ({spec.metric.name}, profile {profile}, seed {seeds[0] if seed is None else seed})", fmt))
        parts.append(tabulate(rows, headers=headers, tablefmt=_TABULATE_FMT[fmt], disable_numparse=True))
        if spec.family != "segmentation" and not extended and spec.extended_table:
            headers, rows = _long(spec.metric.name, shown, cells, jobs, [], table_id, True)
            parts.append(_heading(f"{spec.name} — {table.title}, every metric (profile {profile})", fmt))
            parts.append(tabulate(rows, headers=headers, tablefmt=_TABULATE_FMT[fmt], disable_numparse=True))
    if spec.comparisons:
        rows = _comparisons(task, results_dir, profile, entries, jobs, seeds[0] if seed is None else seed)
        if rows:
            parts.append(_heading(f"{spec.name} — paired comparisons ({spec.metric.name}, profile {profile})", fmt))
            unit = " (points)" if _scale(spec.metric.name) != 1 else ""
            parts.append(tabulate(rows, headers=["comparison", "a", "b", f"{spec.metric.name}(a) − {spec.metric.name}(b){unit}", "P(a > b)", "units"],
                                  tablefmt=_TABULATE_FMT[fmt], disable_numparse=True))
    parts.append(_heading(f"{spec.name} — throughput (profile {profile})", fmt))
    parts.append(_throughput(jobs, fmt))
    notes = [note, f"Intervals: {spec.bootstrap.resamples}-resample {spec.bootstrap.method} bootstrap, {int(spec.bootstrap.level * 100)} %, unit = {spec.bootstrap.unit}."]
    if len(seeds) > 1:
        notes.append(f"Seeds with records: {seeds}; pick one with --seed.")
    for r in failed:
        notes.append(f"FAILED {r['entry']['name']} / {r['cell']['name']} seed {r['seed']}: {r.get('error', '?')}")
    parts.append("\n".join(f"- {n}" if fmt == "markdown" else f"% {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def _comparisons(task: Any, results_dir: Path, profile: str, entries: list[str], jobs: dict, seed: int) -> list[list[str]]:
    """One row per (declared comparison, entry with both jobs): the paired bootstrap difference."""
    from .compare import compare_jobs

    rows = []
    for comp in task.spec.comparisons:
        for e in entries:
            a, b = (e, comp.a), (comp.b_entry or e, comp.b)
            if a == b or a not in jobs or b not in jobs:
                continue
            try:
                c = compare_jobs(task, results_dir, profile, "/".join(a), "/".join(b), seed=seed)
            except BenchmarkError as exc:  # one unreadable pair must not hide the tables
                rows.append([comp.title, "/".join(a), "/".join(b), f"not computed: {exc}", "–", "–"])
                continue
            r = c.result
            prob = (getattr(r, "extra", None) or {}).get("prob_positive")
            units = str(c.n_units) if c.n_units == c.n_units_a == c.n_units_b else f"{c.n_units} shared of {c.n_units_a} / {c.n_units_b}"
            rows.append([comp.title, "/".join(a), "/".join(b), _signed(r.estimate, r.low, r.high, _scale(task.spec.metric.name)),
                         "–" if prob is None else f"{prob:.3f}", units])
    return rows


def _signed(estimate: float, low: float, high: float, scale: float) -> str:
    return f"{scale * estimate:+.2f} [{scale * low:+.2f}, {scale * high:+.2f}]"


def _heading(text: str, fmt: str) -> str:
    return f"### {text}" if fmt == "markdown" else f"% {text}"


def _paper_value(paper: list[dict[str, str]], table: str, entry: str, cell: str) -> str:
    for row in paper:
        if row["table"] == table and row["entry"] == entry and row["cell"] == cell:
            text = row["value"]
            if row.get("low"):
                text += f" [{row['low']}, {row['high']}]"
            if row.get("std"):
                text += f" ({row['std']})"
            return text
    return "–"


def _pivot(metric: str, entries: list[str], cells: list, jobs: dict, paper: list, table_id: str) -> tuple[list[str], list[list[str]]]:
    headers = ["entry"]
    for c in cells:
        headers.append(c.name)
        if paper:
            headers.append(f"{c.name} (paper)")
    rows = []
    for e in entries:
        if not any((e, c.name) in jobs for c in cells):
            continue
        row = [e]
        for c in cells:
            rec = jobs.get((e, c.name))
            row.append(fmt_metric(metric, rec["metrics"].get(metric)) if rec else "–")
            if paper:
                row.append(_paper_value(paper, table_id, e, c.name))
        rows.append(row)
    return headers, rows


def _long(metric: str, entries: list[str], cells: list, jobs: dict, paper: list, table_id: str, extended: bool) -> tuple[list[str], list[list[str]]]:
    param_keys: list[str] = []
    for c in cells:
        for k in c.params:
            if k != "hparams" and k not in param_keys:
                param_keys.append(k)
    extra_metrics: list[str] = []
    if extended:
        for rec in jobs.values():
            for m in rec["metrics"]:
                if m != metric and m not in extra_metrics:
                    extra_metrics.append(m)
    headers = ["entry", "cell", *param_keys, metric, *extra_metrics] + (["paper"] if paper else [])
    rows = []
    for e in entries:
        for c in cells:
            rec = jobs.get((e, c.name))
            if rec is None:
                continue
            row = [e, c.name, *[_fmt_param(c.params.get(k)) for k in param_keys], fmt_metric(metric, rec["metrics"].get(metric))]
            row += [fmt_metric(m, rec["metrics"].get(m)) for m in extra_metrics]
            if paper:
                row.append(_paper_value(paper, table_id, e, c.name))
            rows.append(row)
    return headers, rows


def _fmt_param(v: Any) -> str:
    return "all" if v is None else str(v)


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _throughput(jobs: dict, fmt: str) -> str:
    by_entry: dict[str, list[dict]] = {}
    for (entry, _), rec in jobs.items():
        by_entry.setdefault(entry, []).append(rec)
    rows = []
    for entry in sorted(by_entry):
        recs = by_entry[entry]
        tps = [r["throughput"] for r in recs]
        infer = [t["infer_samples_per_s"] for t in tps if t.get("infer_samples_per_s")]
        stages = [t.get("train_samples_per_s") or {} for t in tps]
        pretrain = [v for st in stages for k, v in st.items() if k == "pretrain"]
        train = [v for st in stages for k, v in st.items() if k != "pretrain"]
        flops = [t["flops_per_sample"] for t in tps if t.get("flops_per_sample")]
        params = [t["parameters"] for t in tps if t.get("parameters") is not None]
        rows.append([
            entry,
            _num(statistics.median(pretrain)) if pretrain else "–",
            _num(statistics.median(train)) if train else "–",
            _num(statistics.median(infer)) if infer else "–",
            _num(max(t["peak_memory_mb"] for t in tps), 0) + f" ({tps[0]['peak_memory_kind']})",
            f"{max(params):,}" if params else "–",
            f"{statistics.median(flops) / 1e9:.3g} G" if flops else "–",
            tps[0].get("device_name") or tps[0].get("device", "?"),
        ])
    # medians over the jobs that ran the stage (a pre-training reused from a checkpoint is not timed)
    headers = ["entry", "pre-train samples/s", "train samples/s", "inference samples/s", "peak memory MB", "parameters", "FLOPs/sample", "device"]
    return tabulate(rows, headers=headers, tablefmt=_TABULATE_FMT[fmt], disable_numparse=True)


def _render_csv(jobs: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["entry", "cell", "seed", "metric", "estimate", "low", "high", "std", "level", "resamples", "data"])
    for (entry, cell), rec in sorted(jobs.items()):
        for name, m in rec["metrics"].items():
            writer.writerow([entry, cell, rec["seed"], name, m.get("estimate"), m.get("low"), m.get("high"), m.get("std", ""),
                             m.get("level"), m.get("n_resamples"), rec["data"]["kind"]])
    return buf.getvalue()
