"""The summary table across datasets, laid out like a paper's main results table, with the
published numbers (``bihmf/data/published.yaml``) beside ours and the difference.

Our rows are the configured encoder × fusion pairs; each column is one headline metric of one
benchmark. A published method that is the same model as one of our rows (``match``) is
printed under that row with a Δ row (ours − published); the other published methods follow
as reference rows, and after them the re-runs (``kind: rerun``: a later paper's or a public
reproduction's numbers for a method, never its authors'), which are never put under our rows
and print as "re-run: ...". Nothing is ever filled in: a benchmark we have not run is "missing", a
number nobody has published is "not available", one the source omits is "not given".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bihmf.report.format import MISSING, NOT_AVAILABLE, NOT_GIVEN, UNDEFINED, Cell, Table, mean_std, number
from bihmf.tasks.metrics import higher_is_better, is_metric

PUBLISHED_PATH = Path(__file__).parents[1] / "data" / "published.yaml"
UNITS = {None: 1.0, "fraction": 1.0, "percent": 0.01}  # factor onto our metrics' scale
NO_DIFFERENCE = "—"
PUBLISHED, RERUN = "published", "rerun"  # the kinds of method row (module docstring)
ROW_LABELS = {PUBLISHED: "published only", RERUN: "re-run"}
Column = tuple[str, str, str]  # benchmark, split, metric


@dataclass(frozen=True)
class PublishedValue:
    value: float | None  # on our metrics' scale; None = the source does not give it
    printed: str  # as the source prints it
    source: str
    note: str = ""


@dataclass(frozen=True)
class Method:
    name: str
    encoder: str | None  # matched row of ours; None = any encoder (or no match, see `matched`)
    fusion: str | None
    source: str | None
    note: str
    values: dict[Column, PublishedValue] = field(default_factory=dict)
    kind: str = PUBLISHED

    @property
    def matched(self) -> bool:
        return self.fusion is not None

    def matches(self, encoder: str, fusion: str) -> bool:
        return self.fusion == fusion and self.encoder in (None, encoder)


@dataclass(frozen=True)
class Published:
    sources: dict[str, str]
    benchmarks: dict[str, tuple[str, list[tuple[str, str]]]]  # name -> (title, [(split, metric)])
    methods: list[Method]

    @property
    def columns(self) -> list[Column]:
        return [(name, split, metric) for name, (_, pairs) in self.benchmarks.items() for split, metric in pairs]


def _mapping(value: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where} must be a mapping, got {type(value).__name__}")
    return value


def _benchmarks(raw: Any, path: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    out = {}
    for name, spec in _mapping(raw, "benchmarks", path).items():
        spec = _mapping(spec, f"benchmarks.{name}", path)
        pairs = spec.get("columns")
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError(f"{path}: benchmarks.{name}.columns must be a non-empty list of [split, metric]")
        unknown = [m for _, m in pairs if not is_metric(m)]
        if unknown:
            raise ValueError(f"{path}: benchmarks.{name} names unregistered metric(s) {unknown}")
        out[name] = (str(spec.get("title", name)), [(str(s), str(m)) for s, m in pairs])
    return out


def _column(benchmarks: dict[str, tuple[str, list[tuple[str, str]]]], benchmark: str, key: str, where: str, path: Path) -> Column:
    """``metric`` names the benchmark's one column with that metric; ``split/metric`` any column."""
    if benchmark not in benchmarks:
        raise ValueError(f"{path}: {where}: unknown benchmark {benchmark!r} (benchmarks: {sorted(benchmarks)})")
    pairs = benchmarks[benchmark][1]
    split, _, metric = key.rpartition("/")
    hits = [(s, m) for s, m in pairs if m == metric and split in ("", s)]
    if len(hits) != 1:
        raise ValueError(f"{path}: {where}: {key!r} must name exactly one column of {benchmark} {pairs}, found {len(hits)}")
    return (benchmark, *hits[0])


def _value(raw: Any, sources: dict[str, str], where: str, path: Path) -> PublishedValue:
    entry = _mapping(raw, where, path)
    value, unit, source = entry.get("value"), entry.get("unit"), entry.get("source")
    if source not in sources:
        raise ValueError(f"{path}: {where}: source {source!r} is not one of {sorted(sources)}")
    if unit not in UNITS:
        raise ValueError(f"{path}: {where}: unit {unit!r} is not one of {sorted(u for u in UNITS if u)}")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ValueError(f"{path}: {where}: value must be a finite number or null, got {value!r}")
    printed = NOT_GIVEN if value is None else f"{value}{'%' if unit == 'percent' else ''}"
    scaled = None if value is None else float(value) * UNITS[unit]
    return PublishedValue(scaled, printed, source, str(entry.get("note", "")))


def _method(raw: Any, index: int, published: dict[str, Any], path: Path) -> Method:
    entry = _mapping(raw, f"methods[{index}]", path)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: methods[{index}] needs a non-empty name")
    match = _mapping(entry.get("match", {}), f"method {name!r} match", path)
    if set(match) - {"encoder", "fusion"} or (match and "fusion" not in match):
        raise ValueError(f"{path}: method {name!r}: match takes a fusion and optionally an encoder, got {match}")
    kind = entry.get("kind", PUBLISHED)
    if kind not in ROW_LABELS:
        raise ValueError(f"{path}: method {name!r}: kind {kind!r} is not one of {sorted(ROW_LABELS)}")
    if kind == RERUN and match:
        raise ValueError(f"{path}: method {name!r}: a re-run is a reference row, never matched to a row of ours")
    source = entry.get("source")
    if source is not None and source not in published["sources"]:
        raise ValueError(f"{path}: method {name!r}: source {source!r} is not one of {sorted(published['sources'])}")
    values = {}
    for benchmark, metrics in _mapping(entry.get("values", {}), f"method {name!r} values", path).items():
        for key, value in _mapping(metrics, f"method {name!r} values.{benchmark}", path).items():
            where = f"method {name!r} values.{benchmark}.{key}"
            values[_column(published["benchmarks"], benchmark, key, where, path)] = _value(value, published["sources"], where, path)
    return Method(name, match.get("encoder"), match.get("fusion"), source, str(entry.get("note", "")).strip(), values, kind)


def load_published(path: Path = PUBLISHED_PATH) -> Published:
    """Read and validate the published-numbers file; every error names the file and the entry."""
    path = Path(path)
    raw = _mapping(yaml.safe_load(path.read_text()), "the file", path)
    sources = {str(k): " ".join(str(v).split()) for k, v in _mapping(raw.get("sources"), "sources", path).items()}
    context = {"sources": sources, "benchmarks": _benchmarks(raw.get("benchmarks"), path)}
    methods = raw.get("methods")
    if not isinstance(methods, list):
        raise ValueError(f"{path}: methods must be a list")
    return Published(sources, context["benchmarks"], [_method(m, i, context, path) for i, m in enumerate(methods)])


def benchmark_of_datasets(datasets: Mapping[str, str | None], published: Published) -> dict[str, str]:
    """benchmark -> the dataset that fills it (``paper_benchmark``, or the dataset's own name).

    Two datasets claiming one benchmark is an error: the column would be ambiguous.
    """
    out: dict[str, str] = {}
    for dataset, declared in datasets.items():
        benchmark = declared or dataset
        if declared and declared not in published.benchmarks:
            raise ValueError(f"dataset {dataset!r}: paper_benchmark {declared!r} is not one of {sorted(published.benchmarks)}")
        if benchmark not in published.benchmarks:
            continue
        if benchmark in out:
            raise ValueError(f"datasets {out[benchmark]!r} and {dataset!r} both fill benchmark {benchmark!r}")
        out[benchmark] = dataset
    return out


def _header(published: Published, column: Column) -> str:
    benchmark, split, metric = column
    subset = "" if split == "test" else f" {split.removeprefix('test_')}"
    arrow = "↑" if higher_is_better(metric) else "↓"
    return f"{published.benchmarks[benchmark][0]}{subset} {metric} {arrow}"


def ours_frame(tables: Mapping[str, pd.DataFrame], fills: Mapping[str, str], rows: Sequence[tuple[str, str]],
               published: Published) -> pd.DataFrame:
    """Our cell per row × paper column from the per-dataset tidy summaries; absent = missing."""
    records = []
    for column in published.columns:
        benchmark, split, metric = column
        dataset = fills.get(benchmark)
        frame = tables[dataset] if dataset is not None else None
        for encoder, fusion in rows:
            found = pd.DataFrame() if frame is None else frame[
                (frame["encoder"] == encoder) & (frame["fusion"] == fusion) & (frame["split"] == split) & (frame["metric"] == metric)]
            entry = found.iloc[0] if len(found) else None
            records.append({
                "benchmark": benchmark, "dataset": dataset, "split": split, "metric": metric, "encoder": encoder, "fusion": fusion,
                "mean": entry["mean"] if entry is not None else np.nan, "std": entry["std"] if entry is not None else np.nan,
                "n": int(entry["n"]) if entry is not None else 0, "status": entry["status"] if entry is not None else "missing",
            })
    ours = pd.DataFrame.from_records(records)
    ours["best"] = False
    for (_, _, metric), group in ours.groupby(["benchmark", "split", "metric"], sort=False):
        finite = group["mean"].dropna()
        if len(finite):
            best = finite.max() if higher_is_better(metric) else finite.min()
            ours.loc[group.index, "best"] = np.isclose(group["mean"], best, rtol=0.0, atol=1e-12)
    return ours


def _our_cell(entry: pd.Series) -> Cell:
    if entry["status"] != "ok":
        return Cell(MISSING if entry["status"] == "missing" else UNDEFINED)
    return Cell(f"{mean_std(entry['mean'], entry['std'])} (n={entry['n']})", bool(entry["best"]))


def _published_cell(method: Method, column: Column) -> Cell:
    value = method.values.get(column)
    if value is None:
        return Cell(NOT_AVAILABLE)
    return Cell(NOT_GIVEN if value.value is None else number(value.value))


def _delta(method: Method, column: Column, ours: pd.Series) -> float:
    value = method.values.get(column)
    if value is None or value.value is None or ours["status"] != "ok":
        return np.nan
    return float(ours["mean"] - value.value)


def _source_marks(method: Method, order: dict[str, int]) -> str:
    keys = list(dict.fromkeys([*([method.source] if method.source else []), *(v.source for v in method.values.values())]))
    for key in keys:
        order.setdefault(key, len(order) + 1)
    return "".join(f" [{order[k]}]" for k in keys)


def summary_table(ours: pd.DataFrame, rows: Sequence[tuple[str, str]], published: Published) -> tuple[Table, pd.DataFrame, dict[str, int]]:
    """The paper-layout table, its tidy CSV form, and the footnote number of each source."""
    columns = published.columns
    table = Table(["row", "encoder", "fusion", *(_header(published, c) for c in columns)], label_columns=3)
    cells = ours.set_index(["encoder", "fusion", "benchmark", "split", "metric"])
    order: dict[str, int] = {}
    records = []
    for encoder, fusion in rows:
        mine = [cells.loc[(encoder, fusion, *c)] for c in columns]
        table.add_row(["ours", encoder, fusion, *(_our_cell(e) for e in mine)], rule_before=True)
        for method in (m for m in published.methods if m.matches(encoder, fusion)):
            table.add_row([f"published: {method.name}{_source_marks(method, order)}", "", "",
                           *(_published_cell(method, c) for c in columns)])
            deltas = [_delta(method, c, e) for c, e in zip(columns, mine)]
            if any(np.isfinite(deltas)):
                table.add_row([f"Δ ours − {method.name}", "", "",
                               *(Cell(number(d, signed=True) if np.isfinite(d) else NO_DIFFERENCE) for d in deltas)])
            records += [_published_record(method, c, encoder, fusion, d) for c, d in zip(columns, deltas)]
    for kind in ROW_LABELS:
        first = True
        for method in (m for m in published.methods if not m.matched and m.kind == kind):
            table.add_row([f"{ROW_LABELS[kind]}: {method.name}{_source_marks(method, order)}", "", "",
                           *(_published_cell(method, c) for c in columns)], rule_before=first)
            records += [_published_record(method, c, "", "", np.nan) for c in columns]
            first = False
    tidy = pd.concat([ours.assign(row="ours", method="ours"), pd.DataFrame.from_records(records)], ignore_index=True)
    return table, tidy, order


def _published_record(method: Method, column: Column, encoder: str, fusion: str, delta: float) -> dict[str, Any]:
    value = method.values.get(column)
    return {
        "row": method.kind, "method": method.name, "encoder": encoder, "fusion": fusion,
        "benchmark": column[0], "split": column[1], "metric": column[2],
        "published": np.nan if value is None or value.value is None else value.value,
        "published_as_printed": NOT_AVAILABLE if value is None else value.printed,
        "source": (value.source if value else method.source) or "", "delta": delta,
    }


def summary_notes(published: Published, fills: Mapping[str, str], datasets: Sequence[str], order: Mapping[str, int]) -> list[str]:
    """Which dataset fills which column, which columns are unrun, the sources and caveats."""
    notes = [
        "Columns filled: " + ", ".join(
            f"{published.benchmarks[b][0]} ← {fills[b]}" for b in published.benchmarks if b in fills) + "."
        if fills else "No configured dataset fills a column of this table.",
    ]
    unrun = [published.benchmarks[b][0] for b in published.benchmarks if b not in fills]
    if unrun:
        notes.append(f"Not configured in this run (every cell of ours missing): {', '.join(unrun)}.")
    unmapped = [d for d in datasets if d not in fills.values()]
    if unmapped:
        notes.append(f"Datasets in no column (set datasets.<name>.paper_benchmark): {', '.join(unmapped)}.")
    for method in published.methods:
        if method.note:
            notes.append(f"{method.name}: {method.note}.")
        for (benchmark, _, metric), value in method.values.items():
            if value.note:
                notes.append(f"{method.name}, {published.benchmarks[benchmark][0]} {metric}: {value.note}.")
    notes += [f"[{n}] {published.sources[key]}" for key, n in sorted(order.items(), key=lambda kv: kv[1])]
    return notes
