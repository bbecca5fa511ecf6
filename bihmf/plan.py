"""Cost plan before launch: jobs per stage, residues per dataset, the ESM cache's bytes and the
training time of every dataset × encoder × fusion, so a reviewer knows before submitting
hundreds of jobs whether the benchmark fits their budget and disk.

Job counts come from the runs the rules iterate (:class:`bihmf.benchmark.Benchmark`), so the plan
and the DAG cannot disagree. Residues come from the
preprocess output (``results/data/<d>/proteins.parquet``) when it exists, else from the
config's ``published_sizes`` times a mean chain length whose source each row names
(:data:`CHAIN_LENGTH`). Seconds per residue come from a calibration
(:class:`bihmf.plan_calibration.Calibration`): measured now on this machine's device
(:mod:`bihmf.plan_timing`), read from a file measured elsewhere, or the one the package ships.

Projected hours = seconds/residue × (train + validation residues) × epochs × seeds. Validation
residues are charged at the training step's price (an evaluation forward costs less), and
``epochs`` is the recipe's maximum (early stopping can end a run sooner): the projection is an
upper bound for the device that was calibrated. Everything here is arithmetic; only
:mod:`bihmf.plan_timing` times anything.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bihmf.benchmark import Benchmark, Run, RunSettings
from bihmf.esm_cache import chain_sequences
from bihmf.integrity import read_table
from bihmf.io import write_text_atomic
from bihmf.layout import PROTEINS
from bihmf.plan_calibration import (
    MEASURED_NOW,
    Calibration,
    CalibrationError,
    Combination,
    EmbedCalibration,
    esm_width,
    missing_reason,
    read_calibration,
    shipped_calibration,
    write_calibration,
)
from bihmf.plan_timing import calibration_records, demo_records, measure, new_calibration

PLAN_FILE = "plan.csv"


@dataclass(frozen=True)
class Estimate:
    """A number the plan uses when the data is not downloaded yet, with where it comes from."""

    value: float
    source: str


_PPBS_MEAN = 253.8
# mean residues per protein by dataset kind, for datasets without a protein table yet
CHAIN_LENGTH: dict[str, Estimate] = {
    "ppbs": Estimate(_PPBS_MEAN, "measured: mean of the 3,216 chains in ScanNet's four PPBS validation label files (tests/data/scannet/PPBS)"),
    "bce": Estimate(342.0, "measured: mean Length of the 3,756 entries of ScanNet's BCE table.csv (tests/data/scannet/BCE)"),
    "react": Estimate(_PPBS_MEAN, "assumed: PPBS's measured mean PDB chain length; react's is not published (--mean-length react=N)"),
    "psr": Estimate(_PPBS_MEAN, "assumed: PPBS's measured mean PDB chain length; PSR's is not published (--mean-length psr=N)"),
    "lba": Estimate(_PPBS_MEAN, "assumed: PPBS's measured mean PDB chain length for the full chains; LBA's is not published"),
}
# graph nodes of a `graph_residues: pocket` protein (the ESM cache still stores the full chains)
POCKET_RESIDUES = Estimate(30.0, "measured: mean pocket residues of the 7 real complexes in tests/fixtures/lba_fixture.tar.gz (small sample)")
# copies of each chain in a dataset: the ESM cache stores one
CHAIN_COPIES: dict[str, Estimate] = {"psr": Estimate(40.0, "docs/esm_cache.md: about 40 decoys share each PSR target's chain")}
# split sizes the docs state where config.yaml declares none, by dataset name
DOCUMENTED_SIZES: dict[str, dict[str, Estimate]] = {
    "ppbs": {"train": Estimate(12_700, "docs/datasets.md section 4: the training file holds about 12.7k chains")},
    "lba60": {split: Estimate(n, "docs/datasets.md section 3: the ATOM3D paper's 60 % split (the released LMDB differs slightly)")
              for split, n in (("train", 3678), ("val", 460), ("test", 460))},
}
# bytes per chain beside the float16 values: shard row (hash, length, offsets) and index row
CHAIN_OVERHEAD_BYTES = 70 + 100


# ---------------------------------------------------------------- jobs


CROSSED = ("encoders", "fusions")  # model keys that list what the benchmark crosses
MAIN_VARIANT = ""  # the variant column of main runs (ablation variants read "<ablation>/<variant>")


@dataclass(frozen=True)
class TrainingRuns:
    """One dataset × encoder × fusion of the train rule (or of one ablation variant) and the
    seeds it runs, with the settings its runs train with."""

    dataset: str
    encoder: str
    fusion: str
    seeds: int
    variant: str
    esm: str  # name of the ESM model whose cache the runs read
    model: str  # JSON of the model settings (recipe and variant override applied)
    epochs: int


def _runs(dataset: str, encoder: str, fusion: str, seeds: int, variant: str, esm: str, settings: RunSettings) -> TrainingRuns:
    return TrainingRuns(dataset, encoder, fusion, seeds, variant, esm, json.dumps(settings.model, sort_keys=True),
                        settings.train["epochs"])


def training_runs(benchmark: Benchmark) -> list[TrainingRuns]:
    """The train and train_ablation rules' jobs by dataset × encoder × fusion (× variant): the
    benchmark's runs, which the workflow's rules iterate too (rules/common.smk). The plan
    enumerates runs nowhere else."""
    groups: dict[tuple[str, str, str, str], list[Run]] = {}
    for run in benchmark.runs:
        variant = MAIN_VARIANT if run.variant is None else f"{run.ablation}/{run.variant.name}"
        groups.setdefault((run.dataset, run.encoder, run.fusion, variant), []).append(run)
    return [_runs(dataset, encoder, fusion, len(runs), variant, runs[0].esm_name, runs[0].settings)
            for (dataset, encoder, fusion, variant), runs in groups.items()]


def stage_jobs(benchmark: Benchmark) -> dict[str, int]:
    """Jobs of every rule that `snakemake all` runs on a fresh folder (rules/*.smk)."""
    config = benchmark.config
    n, caches = len(config["datasets"]), len(benchmark.caches)
    runs = training_runs(benchmark)
    jobs = {"download_dataset": n, "esm_checkpoint": len(benchmark.esm_models), "preprocess": n,
            "embed": caches * config["esm"]["shards"], "embed_index": caches,
            "train": sum(r.seeds for r in runs if r.variant == MAIN_VARIANT),
            "train_ablation": sum(r.seeds for r in runs if r.variant != MAIN_VARIANT),
            "report": n, "report_summary": 1, "ablation_report": len(config["ablations"])}
    return {stage: count for stage, count in jobs.items() if count}


# ---------------------------------------------------------------- residues


@dataclass(frozen=True)
class DatasetSize:
    """What one dataset costs in residues: graph nodes per split, and what the ESM cache stores."""

    proteins: dict[str, float]  # split -> proteins
    graph_residues: dict[str, float]  # split -> nodes the structure encoder sees
    cache_residues: float  # residues of the distinct chains (one cache row each)
    cache_chains: float
    source: str


def size_from_table(path: Path, graph_residues: str) -> DatasetSize:
    """Counts of a preprocessed protein table (reads only the columns it needs)."""
    table = read_table(path, columns=["split", "sequence", "chain_ids", "labels"])
    proteins: dict[str, float] = defaultdict(float)
    nodes: dict[str, float] = defaultdict(float)
    chains: dict[str, int] = {}
    columns = (table[c].to_pylist() for c in ("split", "sequence", "chain_ids", "labels"))
    for split, sequence, chain_ids, labels in zip(*columns, strict=True):
        proteins[split] += 1
        nodes[split] += len(sequence) if graph_residues == "all" else sum(1 for label in labels if label == 1)
        chains.update((key, len(seq)) for key, seq in chain_sequences(sequence, chain_ids))
    return DatasetSize(dict(proteins), dict(nodes), float(sum(chains.values())), float(len(chains)), f"table: {path}")


def published_proteins(dataset: str, spec: dict[str, Any]) -> tuple[dict[str, float], list[str]] | None:
    """Proteins per split from ``published_sizes`` (subset keys such as ``val_70`` summed into
    their split), filled from :data:`DOCUMENTED_SIZES`; None when train or val stays unknown."""
    proteins: dict[str, float] = defaultdict(float)
    for key, count in (spec.get("published_sizes") or {}).items():
        proteins[key.partition("_")[0]] += count
    sources = ["published_sizes"] if proteins else []
    filled = {split: e for split, e in DOCUMENTED_SIZES.get(dataset, {}).items() if split not in proteins}
    for split, estimate in filled.items():
        proteins[split] = estimate.value
    sources += [f"{'/'.join(filled)} {e.source}" for e in {e.source: e for e in filled.values()}.values()]
    if not {"train", "val"} <= set(proteins):
        return None
    return dict(proteins), sources


def size_from_published(dataset: str, spec: dict[str, Any], lengths: dict[str, float]) -> DatasetSize | None:
    """Counts from published split sizes × a mean length (``lengths`` overrides by dataset name)."""
    published = published_proteins(dataset, spec)
    if published is None:
        return None
    proteins, sources = published
    default = CHAIN_LENGTH.get(spec["kind"])
    if dataset in lengths:
        length = Estimate(lengths[dataset], "given: --mean-length")
    elif default is None:
        return None
    else:
        length = default
    per_node = POCKET_RESIDUES if spec["graph_residues"] == "pocket" else length
    copies = CHAIN_COPIES.get(spec["kind"], Estimate(1.0, ""))
    total = sum(proteins.values())
    sources += [f"length {length.value:g} {length.source}"]
    sources += [f"graph nodes {per_node.value:g} {per_node.source}"] if per_node is not length else []
    sources += [f"cache ÷{copies.value:g} {copies.source}"] if copies.source else []
    return DatasetSize(
        proteins, {split: n * per_node.value for split, n in proteins.items()},
        total * length.value / copies.value, total / copies.value, "; ".join(sources),
    )


def dataset_size(dataset: str, spec: dict[str, Any], root: Path, lengths: dict[str, float]) -> DatasetSize | None:
    """The preprocess output's counts when it exists, else the published estimate (None: unknown)."""
    table = root / PROTEINS.format(dataset=dataset)
    if table.exists():
        return size_from_table(table, spec["graph_residues"])
    return size_from_published(dataset, spec, lengths)


def cache_bytes(size: DatasetSize, layers: int, width: int) -> float:
    """Raw float16 bytes of the ESM cache (docs/esm_cache.md: budget on the raw size; zstd took
    0.70× off on random-init embeddings, trained ones may compress differently)."""
    return size.cache_residues * layers * width * 2 + size.cache_chains * CHAIN_OVERHEAD_BYTES


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlanRow:
    dataset: str
    encoder: str
    fusion: str
    variant: str  # "" for the main runs, "<ablation>/<variant>" for an ablation's
    esm: str
    jobs: int
    epochs: int
    train_residues: float | None
    val_residues: float | None
    s_per_residue: float | None  # None: the calibration lacks this combination
    hours: float | None
    esm_cache_gb: float | None  # the dataset's cache, shared by its rows
    embed_hours: float | None  # the dataset's embed stage, shared by its rows
    residue_source: str


COLUMNS = ("dataset", "encoder", "fusion", "variant", "esm", "jobs", "epochs", "train_residues", "val_residues", "s_per_residue", "hours",
           "esm_cache_gb", "embed_hours", "device", "width", "step_residues", "residue_source", "device_name", "calibration")


@dataclass(frozen=True)
class Plan:
    rows: list[PlanRow]
    stage_jobs: dict[str, int]
    calibration: Calibration
    esm_layers: dict[tuple[str, str], list[int]]  # (dataset, ESM model) -> layers of that cache
    unknown: list[str]  # datasets without sizes: no table and nothing published
    missing: list[str]  # what the calibration lacks, each with the reason

    @property
    def hours(self) -> float:
        return sum(r.hours for r in self.rows if r.hours is not None)

    @property
    def cache_gb(self) -> float:
        return sum({(r.dataset, r.esm): r.esm_cache_gb for r in self.rows if r.esm_cache_gb is not None}.values())

    @property
    def embed_hours(self) -> float:
        return sum({(r.dataset, r.esm): r.embed_hours for r in self.rows if r.embed_hours is not None}.values())


@dataclass(frozen=True)
class DatasetCost:
    """What the rows of one dataset share; None throughout when its size is unknown."""

    size: DatasetSize | None
    esm_cache_gb: float | None
    embed_hours: float | None  # also None when the calibration lacks the ESM model


def dataset_cost(size: DatasetSize | None, layers: int, width: int, embed: EmbedCalibration | None) -> DatasetCost:
    """What one cache (a dataset read through one ESM model) costs on disk and to embed."""
    if size is None:
        return DatasetCost(None, None, None)
    gb = cache_bytes(size, layers, width) / 1e9
    return DatasetCost(size, gb, None if embed is None else embed.s_per_residue * size.cache_residues / 3600)


def plan_row(run: TrainingRuns, s_per_residue: float | None, cost: DatasetCost) -> PlanRow:
    """Hours = seconds/residue × (train + validation graph nodes) × epochs × seeds."""
    head = (run.dataset, run.encoder, run.fusion, run.variant, run.esm, run.seeds, run.epochs)
    if cost.size is None:
        return PlanRow(*head, None, None, s_per_residue, None, None, None, "unknown: no protein table and no published sizes")
    train, val = (cost.size.graph_residues.get(split, 0.0) for split in ("train", "val"))
    hours = None if s_per_residue is None else s_per_residue * (train + val) * run.epochs * run.seeds / 3600
    return PlanRow(*head, train, val, s_per_residue, hours, cost.esm_cache_gb, cost.embed_hours, cost.size.source)


def run_combination(run: TrainingRuns, width: int | None) -> Combination:
    """The combination of ``run``: its model settings without the lists the benchmark crosses
    (which say what else runs, not what this model is), its width replaced when given."""
    model = {key: value for key, value in json.loads(run.model).items() if key not in CROSSED}
    if width is not None:
        model = {**model, "hidden_dim": width}
    return Combination(run.encoder, run.fusion, run.esm, json.dumps(model, sort_keys=True))


def combinations(benchmark: Benchmark, width: int | None) -> dict[Combination, str]:
    """Each distinct combination of the benchmark's runs, with the dataset of its first runs
    (whose task, cache and train settings a measurement uses)."""
    first: dict[Combination, str] = {}
    for run in training_runs(benchmark):
        first.setdefault(run_combination(run, width), run.dataset)
    return first


def make_plan(benchmark: Benchmark, root: Path, calibration: Calibration, width: int | None = None,
              lengths: dict[str, float] | None = None) -> Plan:
    """Every dataset × encoder × fusion of the benchmark with its jobs, residues, seconds per
    residue from ``calibration``, projected hours and the dataset's ESM cache size: arithmetic
    only. A combination or ESM model the calibration lacks gets no hours and is listed."""
    config, models, caches = benchmark.config, benchmark.esm_models, benchmark.caches
    sizes = {d: dataset_size(d, spec, root, lengths or {}) for d, spec in config["datasets"].items()}
    costs = {(d, name): dataset_cost(sizes[d], len(layers), esm_width(models[name]), calibration.embed.get(name))
             for (d, name), layers in caches.items()}
    rows = [plan_row(run, calibration.training.get(run_combination(run, width)), costs[(run.dataset, run.esm)])
            for run in training_runs(benchmark)]
    missing = [missing_reason(combo, calibration) for combo in combinations(benchmark, width) if combo not in calibration.training]
    missing += [f"embed forward of {name}: not measured" for name in models if name not in calibration.embed]
    unknown = [d for d, size in sizes.items() if size is None]
    return Plan(rows, stage_jobs(benchmark), calibration, caches, unknown, missing)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plan_csv(plan: Plan) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    calibration = plan.calibration
    shared = {"device": calibration.device, "width": calibration.width, "step_residues": calibration.step_residues,
              "device_name": calibration.device_name, "calibration": calibration.source}
    for row in plan.rows:
        values = {**row.__dict__, **shared}
        writer.writerow([_cell(values[c]) for c in COLUMNS])
    return out.getvalue()


def write_plan(plan: Plan, out_dir: Path) -> Path:
    path = out_dir / PLAN_FILE
    write_text_atomic(path, plan_csv(plan))
    return path


def _hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _gb(value: float) -> str:
    return f"{value:,.1f}" if value >= 1 else f"{value:.3g}"


def cache_summary(caches: dict[tuple[str, str], list[int]]) -> str:
    """The caches' layers per ESM model: one line of the table's footer."""
    by_model: dict[str, set[int]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for (_, model), layers in caches.items():
        by_model[model].update(layers)
        counts[model] += 1
    return "; ".join(f"{model}: {counts[model]} caches, layers {sorted(layers)}" for model, layers in by_model.items())


CALIBRATE_YOURS = ("Calibrate for your own device: `bihmf plan --device cuda --save-calibration FILE` on a GPU node, "
                   "then `bihmf plan --calibration FILE` on any machine")


def calibration_lines(calibration: Calibration) -> list[str]:
    """Where the seconds per residue come from: the header of the printed plan."""
    width = f"width {calibration.width}" if calibration.width else "configured widths"
    versions = ", ".join(f"{name} {version}" for name, version in calibration.versions.items())
    lines = [f"Projected {calibration.hours_unit} (calibration: {calibration.source}, {calibration.date}, {versions}; {width}, "
             f"steps of {calibration.step_residues:,} residues; upper bound: every epoch of the recipe)"]
    lines += [f"Calibration note: {calibration.note}"] if calibration.note else []
    return lines + ([CALIBRATE_YOURS] if calibration.source != MEASURED_NOW else [])


def plan_table(plan: Plan) -> str:
    """The printed plan: hours per dataset × encoder × variant (fusions summed), then jobs, hours and disk."""
    by_pair: dict[tuple[str, str, str], list[PlanRow]] = defaultdict(list)
    for row in plan.rows:
        by_pair[(row.dataset, row.encoder, row.variant)].append(row)
    unit = plan.calibration.hours_unit
    lines = [*calibration_lines(plan.calibration),
             f"{'dataset':<12} {'encoder':<16} {'variant':<22} {'runs':>5} {'epochs':>7} {'train+val residues':>19} {'hours':>10} {'ESM cache GB':>13}"]
    for (dataset, encoder, variant), rows in by_pair.items():
        first = rows[0]
        residues = "?" if first.train_residues is None else f"{first.train_residues + first.val_residues:,.0f}"
        hours = "?" if any(r.hours is None for r in rows) else _hours(sum(r.hours for r in rows))
        cache = "?" if first.esm_cache_gb is None else _gb(first.esm_cache_gb)
        lines.append(f"{dataset:<12} {encoder:<16} {variant or '-':<22} {sum(r.jobs for r in rows):>5} {first.epochs:>7} {residues:>19} {hours:>10} {cache:>13}")
    jobs = ", ".join(f"{stage} {n}" for stage, n in plan.stage_jobs.items())
    partial = " (without what the calibration lacks, listed below)" if plan.missing else ""
    lines += [f"Jobs per stage: {jobs} (total {sum(plan.stage_jobs.values())})",
              f"Total: {_hours(plan.hours)} {unit} of training{partial}; ESM cache {_gb(plan.cache_gb)} GB "
              f"(raw float16; {cache_summary(plan.esm_layers)})",
              f"Embed: {_hours(plan.embed_hours)} {unit} "
              f"({'; '.join(embed.note for embed in plan.calibration.embed.values())})"]
    if plan.missing:
        lines.append(f"Not in the calibration {plan.calibration.source} ({len(plan.missing)}; calibrate this config with "
                     "--device or --save-calibration):")
        lines += [f"  {reason}" for reason in plan.missing]
    if plan.unknown:
        lines.append(f"Not counted (no {PROTEINS} and no published_sizes; preprocess them first): {', '.join(plan.unknown)}")
    return "\n".join(lines)


def mean_lengths(pairs: list[str], datasets: list[str]) -> dict[str, float]:
    """``dataset=residues`` words of ``--mean-length``; a name not in ``datasets`` is an error,
    not a silently ignored estimate."""
    lengths = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in datasets:
            raise ValueError(f"--mean-length {pair!r}: no dataset {name!r} in the config (datasets: {', '.join(datasets)})")
        try:
            lengths[name] = float(value)
        except ValueError:
            raise ValueError(f"--mean-length {pair!r}: expected DATASET=RESIDUES, e.g. react=300") from None
        if not math.isfinite(lengths[name]) or lengths[name] <= 0:
            raise ValueError(f"--mean-length {pair!r}: residues must be a positive number")
    return lengths


def measured_calibration(benchmark: Benchmark, device: torch.device, steps: int = 2, residues: int | None = None,
                         width: int | None = None, workflow: Path = Path("."), save: Path | None = None) -> Calibration:
    """Calibrate every combination of the benchmark on ``device`` with steps of the demo's chains,
    written to ``save`` after each measurement; what ``save`` already holds from the same device
    and settings is kept (a calibration cut short resumes). Steps default to the config's
    ``train.residue_budget`` (at most all the demo's chains), since a device's time per residue
    depends on the batch size."""
    records = calibration_records(demo_records(workflow), residues or benchmark.config["train"]["residue_budget"])
    calibration = new_calibration(device, steps, records, width)
    if save is not None and save.exists():
        calibration = resumed(read_calibration(save), calibration)
    checkpoint = (lambda measured: write_calibration(measured, save)) if save is not None else (lambda measured: None)
    return measure(benchmark, combinations(benchmark, width), device, records, calibration, checkpoint, workflow)


def resumed(previous: Calibration, fresh: Calibration) -> Calibration:
    """``previous`` to continue, when measured on the same device with the same step settings."""
    settings = ("device_name", "steps", "step_residues", "width")
    differ = {key: (getattr(previous, key), getattr(fresh, key)) for key in settings if getattr(previous, key) != getattr(fresh, key)}
    if differ:
        named = ", ".join(f"{key} {had!r} (now {now!r})" for key, (had, now) in differ.items())
        raise CalibrationError(f"calibration {previous.source}: measured with other settings: {named}; remove it or save elsewhere")
    return previous


def choose_calibration(benchmark: Benchmark, file: Path | None, device: str | None, save: Path | None = None,
                       steps: int = 2, residues: int | None = None, width: int | None = None,
                       workflow: Path = Path(".")) -> Calibration:
    """The calibration a plan uses: ``file`` when given (nothing timed), else a measurement on
    ``device`` (default: CUDA when visible), else, with no GPU and no device asked for, the
    calibration the package ships. A measurement is written to ``save`` when given."""
    if file is not None:
        return read_calibration(file)
    if device is None and save is None and not torch.cuda.is_available():
        return shipped_calibration()
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return measured_calibration(benchmark, chosen, steps, residues, width, workflow, save)


def plan_run(benchmark: Benchmark, root: Path, out_dir: Path, calibration: Calibration, width: int | None = None,
             lengths: dict[str, float] | None = None) -> Plan:
    """What ``bihmf plan`` and ``rule plan`` do after choosing a calibration: project, write
    ``plan.csv`` and print the table."""
    plan = make_plan(benchmark, root, calibration, width, lengths)
    path = write_plan(plan, out_dir)
    print(plan_table(plan))
    print(f"plan: {path}")
    return plan
