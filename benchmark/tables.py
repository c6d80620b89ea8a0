"""Render a task's tables from stored records only (never re-runs anything).

Segmentation tables are the S4 paper's layout (entries × cells, mIoU in %); reconstruction
tables the TC-PRIMED paper's (one row per entry and cell, the cell's configuration as columns,
CRPS in K). Every value aggregates all seeds of its job (mean over seeds, two-level interval over
seeds × the task's resampling unit, between-seed SD beside it; ``benchmark.aggregate``), so a
table never silently shows one seed. Declared comparisons follow, with p-values adjusted by Holm
within each comparison family. Published numbers from ``results/paper`` appear in a labelled
column only when every record in the table was computed on real data.

Formats: ``markdown``, ``latex`` (each table a ``table`` float whose caption carries the data
notice), ``csv`` (one row per entry, cell and metric) and ``comparisons-csv``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from .aggregate import (
    JobGroup,
    PairedSummary,
    StatsCache,
    Summary,
    compare_groups,
    group_jobs,
    summarize,
)
from .contracts import Cell, TaskSpec
from .errors import BenchmarkError
from .metrics import holm
from .results import ResultStore
from .scoring import ROWS_IID, metric_names, plural

FORMATS = ("markdown", "latex", "csv", "comparisons-csv")
_TABULATE_FMT = {"markdown": "github", "latex": "latex_booktabs"}
# metric -> (label, unit, scale from stored units to table units); "K" stands for the task's unit
_METRICS: dict[str, tuple[str, str, float]] = {
    "miou": ("mIoU", "%", 100.0),
    "overall_accuracy": ("OA", "%", 100.0),
    "crps": ("CRPS", "K", 1.0),
    ROWS_IID: ("CRPS, paper method: rows as independent", "K", 1.0),
    "crps_fair": ("fair CRPS", "K", 1.0),
    "mae": ("MAE", "K", 1.0),
    "rmse": ("RMSE", "K", 1.0),
    "spread_skill": ("spread-skill", "ratio", 1.0),
}


def metric_label(spec: TaskSpec, metric: str) -> tuple[str, str, float]:
    """(label, unit, scale) of ``metric`` as tables print it (mIoU in %, CRPS in the task's unit)."""
    label, unit, scale = _METRICS.get(metric, (metric, "", 1.0))
    if unit == "K":
        unit = spec.metric.units or unit
    return label, unit, scale


def paper_numbers(results_dir: Path, task: str) -> list[dict[str, str]]:
    """Rows of ``<results>/paper/<task>.csv`` (table, entry, cell, metric, value, low, high, std)."""
    path = Path(results_dir) / "paper" / f"{task}.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [row for row in csv.DictReader(line for line in fh if not line.startswith("#"))]


def _data_note(records: Iterable[Mapping[str, Any]]) -> tuple[bool, str]:
    kinds = {(r["data"]["kind"], r["data"].get("generator_version", ""), r["data"].get("seed")) for r in records}
    if all(k[0] == "real" for k in kinds):
        return True, "Data: real dataset."
    gens = ", ".join(sorted(f"{g or '?'} (seed {s})" for kind, g, s in kinds if kind == "synthetic"))
    return False, f"Data: embedded SYNTHETIC dataset [{gens}]; these numbers say nothing about the real dataset, and published numbers are not shown beside them."


@dataclass
class _Doc:
    """What one rendering needs: the spec, the job groups, cached summaries and the notes so far."""

    spec: TaskSpec
    profile: str
    fmt: str
    groups: dict[tuple[str, str], JobGroup]
    cache: StatsCache
    data_note: str
    real: bool
    notes: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)  # mixed commits / machines / threads, entries left out
    _summaries: dict[tuple[str, str, str], Summary | str] = field(default_factory=dict)
    _families: list | None = None  # comparison families, computed once per document

    def summary(self, entry: str, cell: str, metric: str) -> Summary | str | None:
        """The aggregated summary, an error text when it cannot be computed, or None (no job)."""
        group = self.groups.get((entry, cell))
        if group is None:
            return None
        key = (entry, cell, metric)
        if key not in self._summaries:
            try:
                self._summaries[key] = summarize(self.spec, self.cache, group, metric)
            except (BenchmarkError, ValueError, KeyError) as exc:
                self._summaries[key] = f"not computed: {exc}"
        return self._summaries[key]

    def majority_seeds(self) -> list[int]:
        counts: dict[tuple[int, ...], int] = {}
        for g in self.groups.values():
            counts[tuple(g.seeds)] = counts.get(tuple(g.seeds), 0) + 1
        return list(max(counts, key=lambda s: (counts[s], len(s)))) if counts else []


def render(task: Any, results_dir: Path, profile: str, fmt: str = "markdown", seed: int | None = None, extended: bool = False,
           include: Iterable[str] | None = None) -> str:
    """Every table of ``task`` at ``profile``, its comparisons and throughput, as one document."""
    if fmt not in FORMATS:
        raise BenchmarkError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return render_all(task, results_dir, profile, (fmt,), seed=seed, extended=extended, include=include)[fmt]


def _third_party(record: Mapping[str, Any]) -> bool:
    return bool((record.get("entry_source") or {}).get("third_party"))


def _provenance_notes(records: list[Mapping[str, Any]]) -> list[str]:
    """One note per provenance dimension on which the shown records differ (commit, machine, threads,
    device), naming the jobs that differ from the most common value."""
    dims = {"commit": lambda e: e.get("git_sha"), "machine": lambda e: e.get("cpu_model") or e.get("device_name"),
            "host": lambda e: e.get("hostname"), "torch threads": lambda e: e.get("torch_threads"), "device": lambda e: e.get("device")}
    notes = []
    for dim, get in dims.items():
        values = [(r, _key(get(r.get("environment") or {}))) for r in records]
        counts: dict[str, int] = {}
        for _, v in values:
            counts[v] = counts.get(v, 0) + 1
        if len(counts) < 2:
            continue
        common = max(counts, key=lambda v: counts[v])
        odd = [f"{_job(r)} ({v})" for r, v in values if v != common]
        notes.append(f"MIXED PROVENANCE ({dim}): {counts[common]} of {len(values)} records have {common}; the others: {_some(odd)}.")
    return notes + _hparam_notes(records)


def _key(value: Any) -> str:
    """A printable, hashable form of any JSON value (records come from entries' processes too)."""
    if value is None:
        return "?"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _job(r: Mapping[str, Any]) -> str:
    return f"{r['entry']['name']}/{r['cell']['name']} seed {r['seed']}"


def _some(items: list[str], n: int = 6) -> str:
    return "; ".join(items[:n]) + (f"; +{len(items) - n} more" if len(items) > n else "")


def _hparam_notes(records: list[Mapping[str, Any]]) -> list[str]:
    """Seeds of one table cell trained with different hyper-parameters are averaged as one job, so
    say so; and name every job whose hyper-parameters were changed by --set / --config."""
    notes = []
    by_job: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        by_job.setdefault((r["entry"]["name"], r["cell"]["name"]), []).append(r)
    for (entry, cell), recs in sorted(by_job.items()):
        sources = sorted({_key((r.get("entry_source") or {}).get("source")) for r in recs})
        if len(sources) > 1:
            notes.append(f"MIXED ENTRY CODE: {entry}/{cell} averages seeds made by different code under one name: {_some(sources, 3)}.")
        variants = {_key(r.get("hparams")) for r in recs}
        if len(variants) > 1:
            keys = sorted({k for r in recs for k in (r.get("hparams") or {})
                           if len({_key((x.get("hparams") or {}).get(k)) for x in recs}) > 1})
            notes.append(f"MIXED HYPER-PARAMETERS: {entry}/{cell} averages seeds {sorted(int(r['seed']) for r in recs)} trained with "
                         f"different values of {', '.join(keys)}; re-run them with one setting.")
    changed = [f"{_job(r)}: " + ", ".join(f"{k}={_key(v)}" for k, v in sorted(((r.get('overrides') or {}).get('values') or {}).items()))
               for r in records if isinstance(r.get("overrides"), dict) and (r["overrides"].get("values") or None)]
    if changed:
        notes.append(f"OVERRIDDEN HYPER-PARAMETERS (--set / --config, not the entries' profiles): {_some(changed)}.")
    return notes


def render_all(task: Any, results_dir: Path, profile: str, formats: Iterable[str] = FORMATS, *, seed: int | None = None,
               extended: bool = False, include: Iterable[str] | None = None) -> dict[str, str]:
    """Several formats from one aggregation (summaries and comparisons are computed once).

    Records of third-party entries (another distribution's entry points, or specs from outside the
    suite) are not mixed into the suite's tables unless named in ``include`` (``"*"``: all of
    them); a folder holding only third-party records shows them all."""
    spec: TaskSpec = task.spec
    store = ResultStore(results_dir)
    records = list(store.records(spec.name, profile))
    if not records:
        raise BenchmarkError(f"no results for task {spec.name!r} at profile {profile!r} under {results_dir}; run `python -m benchmark run --task {spec.name} --profile {profile}` first")
    wanted = set(include or ())
    left_out: list[str] = []
    if any(not _third_party(r) for r in records):  # the suite's tables: plugins join them only when asked (record by record)
        hidden = [r for r in records if _third_party(r) and "*" not in wanted and r["entry"]["name"] not in wanted]
        left_out = sorted({r["entry"]["name"] for r in hidden})
        records = [r for r in records if not any(r is h for h in hidden)]
    groups = group_jobs(records, seed)
    if seed is not None and not groups:
        present = sorted({int(r["seed"]) for r in records})
        raise BenchmarkError(f"no ok records for seed {seed}; seeds present: {present}")
    ok = [r for g in groups.values() for r in g.records]
    real, note = _data_note(ok or records)
    doc = _Doc(spec, profile, "markdown", groups, StatsCache(store), note, real)
    doc.provenance = _provenance_notes(ok)
    if left_out:
        doc.provenance.append(f"Not shown: records of third-party entries {', '.join(left_out)} (`table --entry NAME` or `--all-entries` shows them).")
    failed = [r for r in records if r.get("status") != "ok" and (seed is None or int(r["seed"]) == seed)]
    out: dict[str, str] = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise BenchmarkError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        doc.fmt, doc.notes = fmt, []
        if fmt == "csv":
            out[fmt] = _metrics_csv(doc)
        elif fmt == "comparisons-csv":
            out[fmt] = _comparisons_csv(doc)
        else:
            out[fmt] = _document(doc, paper_numbers(results_dir, spec.name) if real else [], extended, failed)
    return out


# --------------------------------------------------------------------------- text
def _entries(doc: _Doc) -> list[str]:
    return sorted({e for e, _ in doc.groups}, key=lambda e: (e != "s4", e))


def _interval(s: Summary, scale: float, digits: int, majority: list[int]) -> str:
    text = f"{scale * s.estimate:.{digits}f} [{scale * s.low:.{digits}f}, {scale * s.high:.{digits}f}]"
    if s.seed_sd is not None:
        text += f" sd {scale * s.seed_sd:.{digits}f}"
    if s.seeds != majority:
        text += f" (seeds {','.join(map(str, s.seeds))})"
    if s.flag:
        text = f"{s.flag}: {text}"
    return text


def _value(doc: _Doc, entry: str, cell: str, metric: str, digits: int) -> str:
    s = doc.summary(entry, cell, metric)
    if s is None:
        return "–"
    if isinstance(s, str):
        return s
    if s.flag == "deterministic":
        return "– (deterministic)"
    _, _, scale = metric_label(doc.spec, metric)
    return _interval(s, scale, digits, doc.majority_seeds())


def _units_phrase(doc: _Doc, cells: list[Cell], entries: list[str]) -> str:
    """'30 test patches' (or a range when jobs scored different numbers of units)."""
    counts = set()
    for e in entries:
        for c in cells:
            s = doc.summary(e, c.name, doc.spec.metric.name)
            if isinstance(s, Summary):
                counts.add(s.n_units)
    if not counts:
        return ""
    unit = doc.spec.bootstrap.unit
    lo, hi = min(counts), max(counts)
    if lo < doc.spec.bootstrap.min_units:
        doc.notes.append(f"Only {lo} test {plural(unit)}: percentile intervals over fewer than {doc.spec.bootstrap.min_units} units can under-cover; "
                         f"comparisons add a sign-flip p over {plural(unit)}.")
    return f"{lo} test {plural(unit)}" if lo == hi else f"{lo}–{hi} test {plural(unit)}"


def _table(doc: _Doc, table_id: str, title: str, cells: list[Cell], entries: list[str], paper: list[dict[str, str]], metrics: list[str]) -> tuple[str, list[str], list[list[str]]]:
    spec = doc.spec
    label, unit, _ = metric_label(spec, spec.metric.name)
    level = int(round(100 * spec.bootstrap.level))
    seeds = doc.majority_seeds()
    what = f"{label} {unit}" if spec.metric.name in metrics else "other metrics"
    heading = (f"{spec.name} — {title}: {what} [{level} % CI], profile {doc.profile}, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
               f"{_units_phrase(doc, cells, entries)}")
    if spec.family == "segmentation":
        headers = ["entry"]
        for c in cells:
            headers.append(f"{c.title} ({label} {unit})")
            if paper:
                headers.append(f"{c.title} (paper)")
        rows = []
        for e in entries:
            if not any((e, c.name) in doc.groups for c in cells):
                continue
            row = [e]
            for c in cells:
                row.append(_value(doc, e, c.name, spec.metric.name, 1))
                if paper:
                    row.append(_paper_value(paper, table_id, e, c.name))
            rows.append(row)
        return heading, headers, rows
    params = [k for k in dict.fromkeys(k for c in cells for k in c.params) if k != "hparams"]
    headers = ["entry", "cell", *params]
    for m in metrics:
        m_label, m_unit, _ = metric_label(spec, m)
        headers.append(f"{m_label} ({m_unit})" if m != spec.metric.name else f"{m_label} {m_unit} [{level} % CI over {plural(spec.bootstrap.unit)}] sd over seeds")
    if spec.metric.name in metrics:
        headers.append(f"{plural(spec.bootstrap.unit)}")
        headers.append("std over rows (paper's '(std)')")
    if paper:
        headers.append("paper")
    rows = []
    for e in entries:
        for c in cells:
            if (e, c.name) not in doc.groups:
                continue
            row = [e, c.name, *[("all" if c.params.get(k) is None else str(c.params.get(k))) for k in params]]
            row += [_value(doc, e, c.name, m, 2) for m in metrics]
            if spec.metric.name in metrics:
                s = doc.summary(e, c.name, spec.metric.name)
                row.append(str(s.n_units) if isinstance(s, Summary) else "–")
                stds = [r["metrics"][spec.metric.name].get("std") for r in doc.groups[(e, c.name)].records]
                row.append(_num(statistics.mean(stds), 2) if stds and None not in stds else "–")
            if paper:
                row.append(_paper_value(paper, table_id, e, c.name))
            rows.append(row)
    return heading, headers, rows


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


def _document(doc: _Doc, paper: list[dict[str, str]], extended: bool, failed: list[dict[str, Any]]) -> str:
    spec = doc.spec
    entries = _entries(doc)
    parts: list[str] = []
    main = [spec.metric.name]
    every = [m for m in metric_names(spec, _members(doc)) if m != spec.metric.name]
    if spec.family == "reconstruction" and spec.bootstrap.cluster:
        main.append(ROWS_IID)
    for table_id, table in spec.table_specs().items():
        cells = [spec.cell(c) for c in table.cells]
        shown = [e for e in entries if not table.entries or e in table.entries]
        if not any((e, c.name) in doc.groups for e in shown for c in cells):
            continue
        metrics = main + (every if extended and spec.family == "reconstruction" else [])
        parts.append(_emit(doc, *_table(doc, table_id, table.title, cells, shown, paper, metrics)))
        if spec.family == "reconstruction" and not extended and spec.extended_table:
            heading, headers, rows = _table(doc, table_id, f"{table.title}, every metric", cells, shown, [], every)
            parts.append(_emit(doc, heading, headers, rows))
    if spec.comparisons:
        comparison_rows = _comparison_rows(doc)
        if comparison_rows:
            label, unit, _ = metric_label(spec, spec.metric.name)
            points = " points" if unit == "%" else f" {unit}"
            headers = ["comparison", "a", "b", f"{label}(a) − {label}(b){points} [CI]", "P(a better)", "p", "p (Holm)", "p method", "units", "seeds a/b"]
            parts.append(_emit(doc, f"{spec.name} — paired comparisons ({label}{points}, profile {doc.profile})", headers, comparison_rows))
            direction = "higher" if spec.metric.higher_is_better else "lower"
            doc.notes.append(f"Comparisons: {spec.bootstrap.comparison_resamples}-resample two-level paired bootstrap; P(a better) = share of resamples "
                             f"in which a is better ({label}: {direction} is better); p is two-sided; Holm's adjustment runs within each comparison family "
                             "(one declared comparison across entries).")
    parts.append(_emit(doc, f"{spec.name} — throughput (profile {doc.profile}, every seed)", *_throughput(doc)))
    level = int(round(100 * spec.bootstrap.level))
    unit_text = spec.bootstrap.unit + (f" (rows = {spec.bootstrap.row_unit} grouped by {spec.bootstrap.cluster})" if spec.bootstrap.cluster else "")
    notes = [doc.data_note,
             f"Intervals: {level} % two-level percentile bootstrap ({spec.bootstrap.resamples} resamples): seeds drawn with replacement × "
             f"resampling unit = {unit_text}; value = mean over seeds; sd = between-seed standard deviation.",
             *doc.provenance, *dict.fromkeys(doc.notes)]
    if spec.family == "segmentation":
        notes.append(f"mIoU class set ({spec.metric.absent_class_policy}): the classes present in the test labels, the same in every resample and on "
                     "both sides of a comparison. 'constant (class k)' marks a job predicting one class on ≥ 99 % of pixels.")
    seed_sets = {tuple(g.seeds) for g in doc.groups.values()}
    if len(seed_sets) > 1:
        notes.append(f"Seed sets differ between jobs: {', '.join(sorted(str(list(s)) for s in seed_sets))}; cells with other seeds than "
                     f"{doc.majority_seeds()} say which.")
    for r in failed:
        notes.append(f"FAILED {r['entry']['name']} / {r['cell']['name']} seed {r['seed']}: {r.get('error', '?')}")
    parts.append(_notes(doc, notes))
    return "\n\n".join(parts) + "\n"


def _members(doc: _Doc) -> int | None:
    return next((g.members for g in doc.groups.values() if g.members), None)


def _comparison_rows(doc: _Doc) -> list[list[str]]:
    out: list[list[str]] = []
    for _, comps in _comparison_families(doc):
        _, unit, scale = metric_label(doc.spec, doc.spec.metric.name)
        digits = 1 if unit == "%" else 2
        for title, c, p_holm in comps:
            if isinstance(c, str):
                out.append([title, "–", "–", c, "–", "–", "–", "–", "–", "–"])
                continue
            units = f"{c.n_units} {plural(c.interval_unit)}"
            if not c.n_rows == c.n_rows_a == c.n_rows_b:
                units += f" ({c.n_rows} rows shared of {c.n_rows_a} / {c.n_rows_b})"
            out.append([title, f"{c.a.entry}/{c.a.cell}", f"{c.b.entry}/{c.b.cell}",
                        f"{scale * c.estimate:+.{digits}f} [{scale * c.low:+.{digits}f}, {scale * c.high:+.{digits}f}]",
                        "–" if c.prob_better is None else f"{c.prob_better:.3f}", _p(c.p_value), _p(p_holm), c.p_method, units,
                        f"{len(c.a.seeds)}/{len(c.b.seeds)}" + (" (same models)" if c.paired_seeds else "")])
    return out


def _p(p: float) -> str:
    return "–" if p is None or not np.isfinite(p) else f"{p:.4f}"


def _comparison_families(doc: _Doc) -> list[tuple[str, list[tuple[str, PairedSummary | str, float]]]]:
    """Per declared comparison (a family), one (title, paired summary or error, Holm p) per entry
    that has both jobs; Holm's adjustment runs within the family."""
    if doc._families is not None:
        return doc._families
    families = []
    for comp in doc.spec.comparisons:
        rows: list[tuple[str, PairedSummary | str]] = []
        for e in _entries(doc):
            a, b = (e, comp.a), (comp.b_entry or e, comp.b)
            if a == b or a not in doc.groups or b not in doc.groups:
                continue
            try:
                rows.append((comp.title, compare_groups(doc.spec, doc.cache, doc.groups[a], doc.groups[b])))
            except (BenchmarkError, ValueError, KeyError) as exc:  # one unreadable pair must not hide the tables
                rows.append((comp.title, f"{'/'.join(a)} vs {'/'.join(b)} not computed: {exc}"))
        if rows:
            adjusted = holm([c.p_value if isinstance(c, PairedSummary) else np.nan for _, c in rows])
            families.append((comp.title, [(t, c, float(p)) for (t, c), p in zip(rows, adjusted, strict=True)]))
    doc._families = families
    return families


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _throughput(doc: _Doc) -> tuple[list[str], list[list[str]]]:
    by_entry: dict[str, list[dict]] = {}
    for (entry, _), group in doc.groups.items():
        by_entry.setdefault(entry, []).extend(group.records)
    rows = []
    for entry in sorted(by_entry):
        tps = [r["throughput"] for r in by_entry[entry]]
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
            _peak(tps),
            f"{max(params):,}" if params else "–",
            f"{statistics.median(flops) / 1e9:.3g} G" if flops else "–",
            tps[0].get("device_name") or tps[0].get("device", "?"),
        ])
    # medians over the jobs that ran the stage (a pre-training reused from a checkpoint is not timed)
    headers = ["entry", "pre-train samples/s", "train samples/s", "inference samples/s", "peak memory MB", "parameters", "FLOPs/sample", "device"]
    return headers, rows


# --------------------------------------------------------------------------- formats
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
          "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "−": "-", "≥": r"$\geq$", "×": r"$\times$"}


def _peak(tps: list[Mapping[str, Any]]) -> str:
    """The largest peak memory of an entry's jobs, with what was measured (every kind seen)."""
    peaks = [t["peak_memory_mb"] for t in tps if isinstance(t.get("peak_memory_mb"), int | float)]
    kinds = sorted({str(t.get("peak_memory_kind", "?")) for t in tps})
    return (_num(max(peaks), 0) if peaks else "–") + f" ({', '.join(kinds)})"


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _emit(doc: _Doc, heading: str, headers: list[str], rows: list[list[str]]) -> str:
    body = tabulate(rows, headers=headers, tablefmt=_TABULATE_FMT[doc.fmt], disable_numparse=True)
    if doc.fmt == "markdown":
        return f"### {heading}\n\n{body}"
    # LaTeX: a float whose caption carries the data notice, so it survives into the PDF
    return ("\\begin{table}[ht]\n\\centering\n\\footnotesize\n" + body.replace("–", "--").replace("−", "-")
            + f"\n\\caption{{{_latex_escape(heading)}. {_latex_escape(doc.data_note)}}}\n\\end{{table}}")


def _notes(doc: _Doc, notes: list[str]) -> str:
    if doc.fmt == "markdown":
        return "\n".join(f"- {n}" for n in notes)
    items = "\n".join(f"  \\item {_latex_escape(n)}" for n in notes)
    return f"\\begin{{itemize}}\n{items}\n\\end{{itemize}}"


def _data_kind(doc: _Doc) -> str:
    return "real" if doc.real else "synthetic"


def _metrics_csv(doc: _Doc) -> str:
    """One row per (entry, cell, metric), in table units, with the interval's unit and seeds."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "profile", "entry", "cell", "cell_label", "metric", "unit", "estimate", "low", "high", "level", "interval_unit",
                     "n_units", "n_seeds", "seeds", "seed_sd", "resamples", "flag", "data"])
    spec = doc.spec
    names = list(metric_names(spec, _members(doc)))
    if spec.family == "reconstruction" and spec.bootstrap.cluster:
        names.insert(1, ROWS_IID)
    for (entry, cell), _ in doc.groups.items():
        label = spec.cell(cell).title if cell in {c.name for c in spec.cells} else cell
        for m in names:
            s = doc.summary(entry, cell, m)
            if not isinstance(s, Summary):
                continue
            _, unit, scale = metric_label(spec, m)
            sd = "" if s.seed_sd is None else _g(scale * s.seed_sd)
            interval_unit = "row" if m == ROWS_IID else s.interval_unit
            writer.writerow([spec.name, doc.profile, entry, cell, label, m, unit, _g(scale * s.estimate), _g(scale * s.low), _g(scale * s.high),
                             s.level, interval_unit, s.n_units, s.n_seeds, " ".join(map(str, s.seeds)), sd, s.n_resamples, s.flag or "",
                             _data_kind(doc)])
    return buf.getvalue()


def _g(x: float) -> str:
    return f"{x:.6g}"


def _comparisons_csv(doc: _Doc) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "profile", "family", "a", "b", "metric", "unit", "estimate", "low", "high", "level", "prob_a_better", "p_value",
                     "p_holm", "p_bootstrap", "p_bootstrap_resolution", "p_sign_flip", "p_sign_flip_resolution", "resamples", "interval_unit",
                     "n_units", "n_seeds_a", "n_seeds_b", "paired_seeds", "data"])
    spec = doc.spec
    _, unit, scale = metric_label(spec, spec.metric.name)
    unit = "points" if unit == "%" else unit  # differences of percentages
    for family, comps in _comparison_families(doc):
        for _, c, p_holm in comps:
            if isinstance(c, str):
                continue
            flip = "" if c.p_sign_flip is None else _g(c.p_sign_flip)
            flip_res = "" if c.p_sign_flip_resolution is None else _g(c.p_sign_flip_resolution)
            writer.writerow([spec.name, doc.profile, family, f"{c.a.entry}/{c.a.cell}", f"{c.b.entry}/{c.b.cell}", c.metric, unit,
                             _g(scale * c.estimate), _g(scale * c.low), _g(scale * c.high), c.level,
                             "" if c.prob_better is None else _g(c.prob_better), _g(c.p_value),
                             _g(p_holm), _g(c.p_bootstrap), _g(c.p_resolution), flip, flip_res, c.n_resamples, c.interval_unit,
                             c.n_units, len(c.a.seeds), len(c.b.seeds), c.paired_seeds, _data_kind(doc)])
    return buf.getvalue()
