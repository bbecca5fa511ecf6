"""One ablation's report: per dataset a table with a row per variant (and the default it changes),
the dataset's test metrics as mean ± std over seeds, and each variant tested against the default.

A variant run is a normal run folder under ``results/ablations/<ablation>/<variant>/`` whose
``metrics.json`` names its ablation and variant in ``provenance["ablation"]``; the default variant
is the main run of the same dataset, encoder, fusion and seed (no ``ablation`` key), so it is
read, never retrained. The paired comparison is the main report's (``bihmf.report.stats``): a
paired t-test over shared seeds, or with one seed a paired bootstrap over test proteins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bihmf.benchmark import DEFAULT_VARIANT, dataset_seeds, find_ablation
from bihmf.esm_cache import CacheInfo
from bihmf.io import write_text_atomic
from bihmf.models.model import run_combinations
from bihmf.report.aggregate import (
    column_header, split_order, is_test_split, metric_frame, ordered_columns, row_counts, summarise, summary_cell,
)
from bihmf.report.build import run_predictions
from bihmf.report.format import MISSING, Block, Cell, Table, page_html, page_markdown
from bihmf.report.plots import ablation_figure, save_figure
from bihmf.report.stats import (
    Bootstrapper, StatsSettings, compare_cell, comparison_text, flag, result_fields, seed_values,
)
from bihmf.run import RunKey, RunRecord, read_record
from bihmf.tasks import TASKS

log = logging.getLogger(__name__)

ABLATION_OUTPUTS = ("md", "csv", "html", "png")
ESM2_ALPHABET = 33  # tokens of the ESM-1b alphabet every ESM-2 model uses
COMPARISON_COLUMNS = ["dataset", "encoder", "fusion", "variant", "split", "metric", "test", "n", "delta", "ci_low",
                      "ci_high", "p_value", "better", "significant", "note"]


def esm2_parameters(depth: int, width: int) -> int:
    """Parameters of an ESM-2 model from its depth and embedding width, as fair-esm builds it.

    The cache metadata records only depth and width, so the contact-prediction head
    (depth × attention heads + 1 weights, under 0.01 % of any released model, never used here)
    is left out; everything else (token embedding, transformer layers, final norm, LM head whose
    output weights are tied to the embedding) is counted exactly.
    """
    attention = 4 * (width * width + width)  # q, k, v, out projections
    feed_forward = (width * 4 * width + 4 * width) + (4 * width * width + width)
    layer_norms = 2 * (2 * width)
    lm_head = (width * width + width) + 2 * width + ESM2_ALPHABET  # dense, norm, output bias
    return ESM2_ALPHABET * width + depth * (attention + feed_forward + layer_norms) + 2 * width + lm_head


@dataclass(frozen=True)
class AblationReport:
    """What one ablation's report is built from; config defaults already resolved."""

    name: str
    variants: tuple[str, ...]  # the default first, then the configured variants in order
    overrides: dict[str, dict[str, Any]]  # variant -> dotted key -> value
    datasets: tuple[str, ...]
    tasks: dict[str, str]
    pairs: tuple[tuple[str, str], ...]  # (encoder, fusion) rows, seq_only under encoder "none"
    seeds: dict[str, tuple[int, ...]]
    splits: dict[str, list[str]]
    metrics: tuple[Path, ...]
    settings: StatsSettings

    def expected(self, dataset: str) -> list[RunKey]:
        return [(encoder, fusion, seed) for encoder, fusion in self.pairs for seed in self.seeds[dataset]]


def report_spec(config: Mapping[str, Any], name: str, metrics: Sequence[Path], settings: StatsSettings) -> AblationReport:
    """What the report of ablation ``name`` compares, from the validated config through
    :mod:`bihmf.benchmark`, the expansion the DAG trains, so both agree on every expected run
    (variant names are checked there, when the config is validated)."""
    ablation = find_ablation(dict(config), name)
    datasets = ablation.datasets
    return AblationReport(
        name=name,
        variants=(DEFAULT_VARIANT, *(variant.name for variant in ablation.variants)),
        overrides={variant.name: variant.overrides for variant in ablation.variants},
        datasets=datasets,
        tasks={d: config["datasets"][d]["task"] for d in datasets},
        pairs=tuple(run_combinations(list(ablation.encoders), list(ablation.fusions))),
        seeds={d: tuple(ablation.seeds if ablation.seeds is not None else dataset_seeds(dict(config), d)) for d in datasets},
        splits={d: split_order(config["datasets"][d]) for d in datasets},
        metrics=tuple(map(Path, metrics)),
        settings=settings,
    )


def variant_of(run: RunRecord, ablation: str) -> str:
    """The variant a run belongs to: its provenance's ablation entry, or the default (main run)."""
    info = run.provenance.get("ablation")
    if info is None:
        return DEFAULT_VARIANT
    if not isinstance(info, dict) or not isinstance(info.get("variant"), str) or not info["variant"]:
        raise ValueError(f"{run.path}: provenance.ablation must name the ablation and variant, got {info!r}")
    if info.get("name") != ablation:
        raise ValueError(f"{run.path}: run of ablation {info.get('name')!r} given to the report of ablation {ablation!r}")
    return info["variant"]


Groups = dict[tuple[str, str], list[RunRecord]]  # (dataset, variant) -> runs


def load_ablation_runs(spec: AblationReport) -> Groups:
    """Every run grouped by dataset and variant; a run of another dataset, variant or task, or the
    same run twice, is an error naming the file (it would land in the wrong row or count twice)."""
    groups: Groups = {}
    origin: dict[tuple[str, str, str, str, int], Path] = {}
    for path in spec.metrics:
        run = read_record(path)
        variant = variant_of(run, spec.name)
        if run.dataset not in spec.datasets:
            raise ValueError(f"{path}: run of dataset {run.dataset!r}; ablation {spec.name!r} covers {list(spec.datasets)}")
        if variant not in spec.variants:
            raise ValueError(f"{path}: variant {variant!r} is not configured in ablation {spec.name!r} "
                             f"({list(spec.variants[1:])})")
        if run.task != spec.tasks[run.dataset]:
            raise ValueError(f"{path}: task {run.task!r}, but dataset {run.dataset!r} is configured as {spec.tasks[run.dataset]!r}")
        key = (run.dataset, variant, *run.key)
        if key in origin:
            raise ValueError(f"{path}: duplicates run {variant} {run.label} of {run.dataset} from {origin[key]}")
        origin[key] = path
        groups.setdefault((run.dataset, variant), []).append(run)
    return groups


def missing_runs(spec: AblationReport, groups: Groups, dataset: str) -> list[tuple[str, str, str, int]]:
    """(variant, encoder, fusion, seed) of every expected run without a metrics file."""
    missing = []
    for variant in spec.variants:
        present = {r.key for r in groups.get((dataset, variant), [])}
        missing += [(variant, *key) for key in spec.expected(dataset) if key not in present]
    return missing


def ablation_summary(spec: AblationReport, groups: Groups) -> pd.DataFrame:
    """Mean, sample std and seed counts per dataset × variant × row × (split, metric), tidy; a
    variant without any finished run has no rows here and reads "missing" in the tables. No cell
    is marked best: a variant's standing is its test against the default."""
    frames = [
        summarise(groups.get((dataset, variant), []), spec.expected(dataset), spec.splits[dataset])
        .assign(dataset=dataset, variant=variant, best=False)
        for dataset in spec.datasets for variant in spec.variants
    ]
    summary = pd.concat(frames, ignore_index=True)
    return summary[["dataset", "variant", *(c for c in summary.columns if c not in ("dataset", "variant"))]]


def shown_test_columns(spec: AblationReport, groups: Groups, dataset: str) -> list[tuple[str, str]]:
    """The dataset's test (split, metric) columns over every variant's runs, in the task's order."""
    runs = [r for v in spec.variants for r in groups.get((dataset, v), [])]
    return [c for c in ordered_columns(metric_frame(runs), spec.splits[dataset]) if is_test_split(c[0])]


def _counts(spec: AblationReport, groups: Groups, dataset: str) -> dict[str, dict[tuple[str, str], tuple[int, int]]]:
    """Variant -> (encoder, fusion) -> (finished, expected) runs; configured rows first, then rows
    of runs the entry no longer lists (reported, not hidden)."""
    return {v: {(e, f): (n, m) for e, f, n, m in row_counts(groups.get((dataset, v), []), spec.expected(dataset))}
            for v in spec.variants}


def row_pairs(spec: AblationReport, groups: Groups, dataset: str) -> list[tuple[str, str]]:
    counts = _counts(spec, groups, dataset)
    return list(dict.fromkeys(p for v in spec.variants for p in counts[v]))


def table_rows(spec: AblationReport, groups: Groups, dataset: str) -> list[tuple[str, str, str, int, int]]:
    """(encoder, fusion, variant, finished, expected): rows grouped by encoder × fusion, then variant."""
    counts = _counts(spec, groups, dataset)
    return [(e, f, v, *counts[v].get((e, f), (0, 0))) for e, f in row_pairs(spec, groups, dataset) for v in spec.variants]


def compare_variants(spec: AblationReport, groups: Groups) -> pd.DataFrame:
    """Each variant row × test column against the default row of the same encoder and fusion."""
    records = []
    for dataset in spec.datasets:
        runs = [r for v in spec.variants for r in groups.get((dataset, v), [])]
        boot = Bootstrapper(runs, run_predictions, spec.settings, key=lambda run: (variant_of(run, spec.name), *run.key))
        default = metric_frame(groups.get((dataset, DEFAULT_VARIANT), []))
        for variant in spec.variants[1:]:
            long = metric_frame(groups.get((dataset, variant), []))
            for encoder, fusion in row_pairs(spec, groups, dataset):
                for split, metric in shown_test_columns(spec, groups, dataset):
                    a = seed_values(long, encoder, fusion, split, metric)
                    b = seed_values(default, encoder, fusion, split, metric)
                    if not a or not b:
                        continue
                    keys = ((variant, encoder, fusion), (DEFAULT_VARIANT, encoder, fusion))
                    result = compare_cell(a, b, keys, split, metric, boot)
                    records.append({"dataset": dataset, "encoder": encoder, "fusion": fusion, "variant": variant,
                                    "split": split, "metric": metric,
                                    **result_fields(result, metric, spec.settings.confidence)})
    return pd.DataFrame.from_records(records, columns=COMPARISON_COLUMNS)


def _row_n(finished: int, expected: int) -> str:
    return str(finished) if finished == expected or not expected else f"{finished}/{expected}"


def dataset_table(spec: AblationReport, groups: Groups, summary: pd.DataFrame, comparisons: pd.DataFrame,
                  dataset: str) -> Table:
    """Rows = encoder × fusion × variant, columns = test metrics; a variant's cell adds its test
    against the default, in **bold** when better and significant."""
    columns = shown_test_columns(spec, groups, dataset)
    table = Table(["encoder", "fusion", "variant", "n", *(column_header(*c) for c in columns)], label_columns=3)
    cells = summary[summary["dataset"] == dataset].set_index(["variant", "encoder", "fusion", "split", "metric"])
    tests = comparisons[comparisons["dataset"] == dataset].set_index(["variant", "encoder", "fusion", "split", "metric"])
    previous = None
    for encoder, fusion, variant, finished, expected in table_rows(spec, groups, dataset):
        entries: list[Cell] = []
        for split, metric in columns:
            key = (variant, encoder, fusion, split, metric)
            cell = summary_cell(cells.loc[key]) if key in cells.index else Cell(MISSING)
            if key in tests.index:
                test = tests.loc[key]
                cell = Cell(f"{cell.text}; Δ {comparison_text(test, DEFAULT_VARIANT)}",
                            flag(test["significant"]) and flag(test["better"]))
            entries.append(cell)
        table.add_row([encoder, fusion, variant, _row_n(finished, expected), *entries],
                      rule_before=previous is not None and previous != (encoder, fusion))
        previous = (encoder, fusion)
    return table


def esm_sizes(spec: AblationReport, groups: Groups) -> dict[str, set[int]]:
    """Variant -> ESM-2 parameter counts of its runs' caches (from the run provenance)."""
    sizes: dict[str, set[int]] = {}
    for (_, variant), runs in groups.items():
        for run in runs:
            cache = CacheInfo.parse(run.provenance.get("esm_cache", {}), f"{run.path} (provenance.esm_cache)")
            sizes.setdefault(variant, set()).add(esm2_parameters(cache.esm_depth, cache.embed_dim))
    return sizes


def size_axis(sizes: Mapping[str, set[int]]) -> dict[str, int] | None:
    """Variant -> ESM-2 size when the ablation varies the ESM model and nothing else tells its
    variants apart (one size per variant, no two alike); otherwise None (plot per variant)."""
    single = {v: next(iter(s)) for v, s in sizes.items() if len(s) == 1}
    if len(single) != len(sizes) or len(set(single.values())) != len(single) or len(single) < 2:
        return None
    return single


def headline_points(spec: AblationReport, groups: Groups) -> pd.DataFrame:
    """Each run's test value of its task's selection metric (the main report's headline metric)."""
    records = [
        {"dataset": dataset, "variant": variant, "encoder": r.encoder, "fusion": r.fusion, "seed": r.seed,
         "metric": TASKS[spec.tasks[dataset]].SELECTION_METRIC,
         "value": r.scores.get("test", {}).get(TASKS[spec.tasks[dataset]].SELECTION_METRIC)}
        for (dataset, variant), runs in groups.items() for r in runs
    ]
    frame = pd.DataFrame.from_records(records, columns=["dataset", "variant", "encoder", "fusion", "seed", "metric", "value"])
    return frame.astype({"value": float})


def tidy_csv(summary: pd.DataFrame, comparisons: pd.DataFrame, ablation: str) -> str:
    """Every split and metric per variant row; test columns of variants add their comparison."""
    keys = ["dataset", "variant", "encoder", "fusion", "split", "metric"]
    merged = summary.drop(columns="best").merge(comparisons.rename(columns={"n": "test_n"}), on=keys, how="left")
    return merged.assign(ablation=ablation)[["ablation", *merged.columns]].to_csv(index=False)


def _variant_lines(spec: AblationReport, sizes: Mapping[str, set[int]]) -> list[str]:
    def size(variant: str) -> str:
        known = sorted(sizes.get(variant, ()))
        return f" (ESM-2 {', '.join(f'{n:,}' for n in known)} parameters)" if known else ""
    lines = [f"`{DEFAULT_VARIANT}`: the main runs, as configured{size(DEFAULT_VARIANT)}"]
    lines += [f"`{v}`: " + ", ".join(f"`{k}={x}`" for k, x in spec.overrides[v].items()) + size(v) for v in spec.variants[1:]]
    return lines


def ablation_page(spec: AblationReport, groups: Groups, summary: pd.DataFrame, comparisons: pd.DataFrame,
                  sizes: Mapping[str, set[int]]) -> list[Block]:
    settings = spec.settings
    blocks: list[Block] = [
        ("h1", f"Ablation {spec.name}"),
        ("p", "Variants (each a change of the main configuration, trained on the same datasets, encoders, fusions "
              "and seeds; the default is the main run itself, not retrained):"),
        ("list", _variant_lines(spec, sizes)),
        ("p", "Cells are test metrics as mean ± sample std over seeds (one seed: the value alone); `n` is the number "
              "of seeds behind a row. A variant's cell adds Δ = variant − default with its "
              f"{settings.confidence:.0%} confidence interval: paired t-test over shared seeds when two or more are "
              f"shared, otherwise a paired bootstrap over test proteins ({settings.bootstrap_samples} resamples, seed "
              f"{settings.seed}). **Bold**: better than the default at the {settings.confidence:.0%} level."),
    ]
    for dataset in spec.datasets:
        missing = missing_runs(spec, groups, dataset)
        blocks.append(("h2", f"{dataset} (task `{spec.tasks[dataset]}`)"))
        if missing:
            blocks.append(("p", f"**Missing runs** ({len(missing)}; their cells read \"{MISSING}\"): "
                                + ", ".join(f"{v} {e}/{f} seed {s}" for v, e, f, s in missing) + "."))
        table = dataset_table(spec, groups, summary, comparisons, dataset)
        blocks.append(("table", table) if table.header[4:] else ("p", "No run of this dataset has finished."))
    blocks.append(("p", f"All splits (validation too) and every test: `{spec.name}.csv`."))
    return blocks


def write_ablation_report(spec: AblationReport, outputs: Mapping[str, Path]) -> None:
    """The ablation's page (Markdown, HTML), its tidy CSV and its figure."""
    absent = [n for n in ABLATION_OUTPUTS if n not in outputs]
    if absent:
        raise ValueError(f"ablation report outputs lack {absent}; expected keys {list(ABLATION_OUTPUTS)}")
    groups = load_ablation_runs(spec)
    for dataset in spec.datasets:
        missing = missing_runs(spec, groups, dataset)
        log.info("ablation %s, %s: %d runs missing%s", spec.name, dataset, len(missing),
                 ": " + ", ".join(f"{v} {e}/{f} seed {s}" for v, e, f, s in missing) if missing else "")
    summary = ablation_summary(spec, groups)
    comparisons = compare_variants(spec, groups)
    sizes = esm_sizes(spec, groups)
    page = ablation_page(spec, groups, summary, comparisons, sizes)
    write_text_atomic(outputs["md"], page_markdown(page))
    write_text_atomic(outputs["html"], page_html(page))
    write_text_atomic(outputs["csv"], tidy_csv(summary, comparisons, spec.name))
    figure = ablation_figure(headline_points(spec, groups), spec.variants, size_axis(sizes), f"ablation {spec.name}")
    save_figure(figure, Path(outputs["png"]))
    log.info("ablation %s: wrote %s", spec.name, ", ".join(str(outputs[k]) for k in ABLATION_OUTPUTS))
