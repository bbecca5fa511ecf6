"""Cost plan before launch: jobs per stage, residues per dataset, the ESM cache's bytes and the
training time of every dataset × encoder × fusion, so a reviewer knows before submitting
hundreds of jobs whether the benchmark fits their budget and disk.

Job counts come from the runs the rules iterate (:class:`bihmf.benchmark.Benchmark`), so the plan
and the DAG cannot disagree. Residues come from the
preprocess output (``results/data/<d>/proteins.parquet``) when it exists, else from the
config's ``published_sizes`` times a mean chain length whose source each row names
(:data:`CHAIN_LENGTH`). Seconds per residue are measured by the training loop itself
(:func:`bihmf.engine.time_training_steps`: forward, loss, backward, clipping, AdamW under the
device's autocast) on a few real proteins with seeded random ESM rows of the configured width.

Projected hours = seconds/residue × (train + validation residues) × epochs × seeds. Validation
residues are charged at the training step's price (an evaluation forward costs less), and
``epochs`` is the recipe's maximum (early stopping can end a run sooner): the projection is an
upper bound for the device that was calibrated. Embed hours time the embed stage's own forward
(:func:`calibrate_embed`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from torch_geometric.data import Data

from bihmf.batching import protein_graph
from bihmf.benchmark import Benchmark, Run, RunSettings, load_config
from bihmf.data import DATASETS
from bihmf.data.schema import ProteinRecord
from bihmf.esm import embed_sequences
from bihmf.esm_checkpoint import RELEASED_ESM2, esm_depth, load_esm, write_random_checkpoint
from bihmf.esm_cache import EmbedSettings, chain_sequences
from bihmf.integrity import read_table
from bihmf.io import write_text_atomic
from bihmf.layout import PROTEINS
from bihmf.models.fusion import FusionContext
from bihmf.models.model import build_model, reads_esm
from bihmf.run import RunSpec
from bihmf.tasks import TASKS, task_options
from bihmf.engine import time_training_steps

log = logging.getLogger(__name__)

# the calibration's chains and random-init ESM shape: the demo of the workflow folder (not of the
# installed package, which has no config/ nor demo/ beside it in a non-editable install)
DEMO_CONFIG = Path("config") / "demo.yaml"
CALIBRATION_DATASET = "ppbs_demo"  # real PDB chains with per-residue labels, shipped in demo/
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


def esm_width(esm_cfg: dict[str, Any]) -> int:
    """Embedding width of the configured ESM, known before any download."""
    if "random_init" in esm_cfg:
        return int(esm_cfg["random_init"]["embed_dim"])
    if esm_cfg["name"] not in RELEASED_ESM2:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: width unknown to the plan (known: {sorted(RELEASED_ESM2)})")
    return RELEASED_ESM2[esm_cfg["name"]].width


# ---------------------------------------------------------------- jobs


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


# ---------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Combination:
    """What a training step's time depends on: runs that share it share a calibration. The task
    is that of the first dataset with these settings; heads are one or two linear layers, small
    beside the encoder and the fusion."""

    encoder: str
    fusion: str
    esm: str  # the ESM model whose rows the fusion reads (their width)
    model: str  # JSON of the model settings (recipe and variant applied), so the key is hashable

    def settings(self) -> dict[str, Any]:
        return json.loads(self.model)


def run_combination(run: TrainingRuns, width: int | None) -> Combination:
    model = json.loads(run.model)
    if width is not None:
        model = {**model, "hidden_dim": width}
    return Combination(run.encoder, run.fusion, run.esm, json.dumps(model, sort_keys=True))


def calibration_context(esm_cfg: dict[str, Any], layers: list[int], model: dict[str, Any]) -> FusionContext:
    """The fusion context of a run reading a cache of ``layers`` of this ESM model."""
    return FusionContext.of(model, esm_width(esm_cfg), esm_depth(esm_cfg), layers)


def demo_records(workflow: Path = Path(".")) -> list[ProteinRecord]:
    """The PPBS demo's chains (real structures) of the ``workflow`` folder, parsed by the real parser."""
    spec = load_config(workflow / DEMO_CONFIG)["datasets"][CALIBRATION_DATASET]
    with tempfile.TemporaryDirectory() as raw:
        with tarfile.open(workflow / spec["download"]["archive"]["url"].removeprefix("file:")) as archive:
            archive.extractall(raw, filter="data")
        return DATASETS[spec["kind"]].parse(Path(raw), spec)[0]


def calibration_records(records: list[ProteinRecord], residues: int) -> list[ProteinRecord]:
    """The first proteins up to ``residues`` residues, as training proteins with a target every
    task accepts (the timing does not depend on its value)."""
    chosen: list[ProteinRecord] = []
    for record in records:
        if chosen and sum(len(r.sequence) for r in chosen) + len(record.sequence) > residues:
            break
        chosen.append(replace(record, split="train", target=float(len(chosen) % 2)))
    return chosen


def calibrate(combo: Combination, spec: dict[str, Any], records: list[ProteinRecord], context: FusionContext,
              train_cfg: dict[str, Any], device: torch.device, steps: int) -> float:
    """Seconds per residue of ``combo``'s training step on ``records`` with the task of the
    dataset ``spec``, timed by the training loop itself (:func:`time_training_steps`). The budget
    is raised to hold every calibration protein, so each step is one full-size batch."""
    model_cfg = combo.settings()
    options = task_options(spec)
    torch.manual_seed(0)
    model = build_model(combo.encoder, combo.fusion, spec["task"], model_cfg, context, options).to(device)
    TASKS[spec["task"]].prepare(model.head, np.array([r.target for r in records]))
    graphs = calibration_graphs(records, context, reads_esm(combo.fusion, context))
    budget = max(train_cfg["residue_budget"], sum(g.num_nodes for g in graphs))
    run = RunSpec(CALIBRATION_DATASET, combo.encoder, combo.fusion, 0, spec["task"], options)
    timing = time_training_steps(run, model, records, graphs, {**train_cfg, "residue_budget": budget}, device, steps)
    return timing.seconds_per_residue


def calibration_graphs(records: list[ProteinRecord], context: FusionContext, with_esm: bool) -> list[Data]:
    """Graphs of ``records`` with seeded random ESM rows of the cache's shape: the values of
    the embeddings do not change the time of a step, so no ESM is run or downloaded."""
    rng = np.random.default_rng(0)
    shape = (len(context.cache_layers), context.esm_dim)
    return [protein_graph(r, rng.standard_normal((len(r.sequence), *shape), dtype=np.float32) if with_esm else None)
            for r in records]


@dataclass(frozen=True)
class EmbedCalibration:
    s_per_residue: float  # of the configured ESM, extrapolated when it is not the one timed
    note: str


def random_esm(esm_cfg: dict[str, Any]) -> tuple[ESM2, Alphabet]:
    """The random-init ESM of ``esm_cfg``, loaded as the embed stage loads a checkpoint."""
    shape = esm_cfg["random_init"]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"{esm_cfg['name']}.pt"  # fair-esm reads the architecture from the name
        write_random_checkpoint(checkpoint, shape["num_layers"], shape["embed_dim"], shape["attention_heads"], shape["seed"])
        return load_esm(checkpoint)


def time_embed(model: ESM2, alphabet: Alphabet, chains: dict[str, str], settings: EmbedSettings,
               device: torch.device) -> float:
    """Seconds per residue of ``embed_sequences`` on ``chains``, after one untimed pass (first calls)."""
    layers = [model.num_layers]
    embed_sequences(model, alphabet, chains, layers, settings, device=device)
    _sync(device)
    started = time.perf_counter()
    embed_sequences(model, alphabet, chains, layers, settings, device=device)
    _sync(device)
    return (time.perf_counter() - started) / sum(len(seq) for seq in chains.values())


def calibrate_embed(esm_cfg: dict[str, Any], records: list[ProteinRecord], device: torch.device,
                    workflow: Path = Path(".")) -> EmbedCalibration:
    """Seconds per residue of the embed stage's forward. A random-init config is timed itself;
    a released model is not downloaded: the demo's random-init shape is timed and scaled by the
    parameter ratio (per-residue cost ∝ parameters, attention's length-squared term ignored)."""
    released = "random_init" not in esm_cfg
    if released and esm_cfg["name"] not in RELEASED_ESM2:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: parameter count unknown to the plan (known: {sorted(RELEASED_ESM2)})")
    timed_cfg = load_config(workflow / DEMO_CONFIG)["esm"] if released else esm_cfg
    model, alphabet = random_esm(timed_cfg)
    chains = dict(pair for r in records for pair in chain_sequences(r.sequence, r.chain_ids))
    timed = time_embed(model, alphabet, chains, EmbedSettings.from_config(esm_cfg), device)
    if not released:
        return EmbedCalibration(timed, f"timed: {esm_cfg['name']}")
    parameters = sum(p.numel() for p in model.parameters())
    ratio = RELEASED_ESM2[esm_cfg["name"]].parameters / parameters
    note = f"extrapolated: {timed_cfg['name']} ({parameters:,} parameters) timed, × {ratio:,.0f} for {esm_cfg['name']}"
    return EmbedCalibration(timed * ratio, note)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    s_per_residue: float
    hours: float | None
    esm_cache_gb: float | None  # the dataset's cache, shared by its rows
    embed_hours: float | None  # the dataset's embed stage, shared by its rows
    residue_source: str


COLUMNS = ("dataset", "encoder", "fusion", "variant", "esm", "jobs", "epochs", "train_residues", "val_residues", "s_per_residue", "hours",
           "esm_cache_gb", "embed_hours", "device", "width", "step_residues", "residue_source")


@dataclass(frozen=True)
class Plan:
    rows: list[PlanRow]
    stage_jobs: dict[str, int]
    device: str
    width: int | None
    step_residues: int  # residues of each calibration step
    esm_layers: dict[tuple[str, str], list[int]]  # (dataset, ESM model) -> layers of that cache
    embed: dict[str, EmbedCalibration]  # per ESM model
    unknown: list[str]  # datasets without sizes: no table and nothing published

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
    embed_hours: float | None


def dataset_cost(size: DatasetSize | None, layers: int, width: int, embed: EmbedCalibration) -> DatasetCost:
    """What one cache (a dataset read through one ESM model) costs on disk and to embed."""
    if size is None:
        return DatasetCost(None, None, None)
    gb = cache_bytes(size, layers, width) / 1e9
    return DatasetCost(size, gb, embed.s_per_residue * size.cache_residues / 3600)


def plan_row(run: TrainingRuns, s_per_residue: float, cost: DatasetCost) -> PlanRow:
    """Hours = seconds/residue × (train + validation graph nodes) × epochs × seeds."""
    head = (run.dataset, run.encoder, run.fusion, run.variant, run.esm, run.seeds, run.epochs)
    if cost.size is None:
        return PlanRow(*head, None, None, s_per_residue, None, None, None, "unknown: no protein table and no published sizes")
    train, val = (cost.size.graph_residues.get(split, 0.0) for split in ("train", "val"))
    hours = s_per_residue * (train + val) * run.epochs * run.seeds / 3600
    return PlanRow(*head, train, val, s_per_residue, hours, cost.esm_cache_gb, cost.embed_hours, cost.size.source)


def make_plan(benchmark: Benchmark, root: Path, device: torch.device, steps: int,
              calibration: list[ProteinRecord], width: int | None = None, lengths: dict[str, float] | None = None,
              workflow: Path = Path(".")) -> Plan:
    """Every dataset × encoder × fusion of the benchmark with its jobs, residues, calibrated
    seconds per residue, projected hours and the dataset's ESM cache size. Runs that share a
    :class:`Combination` share one calibration."""
    config = benchmark.config
    models = benchmark.esm_models
    caches = benchmark.caches
    embed = {name: calibrate_embed(esm_cfg, calibration, device, workflow) for name, esm_cfg in models.items()}
    sizes = {d: dataset_size(d, spec, root, lengths or {}) for d, spec in config["datasets"].items()}
    costs = {(d, name): dataset_cost(sizes[d], len(layers), esm_width(models[name]), embed[name]) for (d, name), layers in caches.items()}
    measured: dict[Combination, float] = {}
    rows = []
    for run in training_runs(benchmark):
        combo = run_combination(run, width)
        if combo not in measured:
            train = benchmark.settings(run.dataset, run.encoder).train
            context = calibration_context(models[run.esm], caches[(run.dataset, run.esm)], combo.settings())
            measured[combo] = calibrate(combo, config["datasets"][run.dataset], calibration, context, train, device, steps)
            log.info("calibrated %s/%s (%d so far): %.3g s/residue", run.encoder, run.fusion, len(measured), measured[combo])
        rows.append(plan_row(run, measured[combo], costs[(run.dataset, run.esm)]))
    unknown = [d for d, size in sizes.items() if size is None]
    step_residues = sum(len(r.sequence) for r in calibration)
    return Plan(rows, stage_jobs(benchmark), device.type, width, step_residues, caches, embed, unknown)


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
    for row in plan.rows:
        values = {**row.__dict__, "device": plan.device, "width": plan.width, "step_residues": plan.step_residues}
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


def plan_table(plan: Plan) -> str:
    """The printed plan: hours per dataset × encoder × variant (fusions summed), then jobs, hours and disk."""
    by_pair: dict[tuple[str, str, str], list[PlanRow]] = defaultdict(list)
    for row in plan.rows:
        by_pair[(row.dataset, row.encoder, row.variant)].append(row)
    width = f"width {plan.width}" if plan.width else "configured widths"
    lines = [f"Projected {plan.device.upper()}-hours (calibrated on {plan.device}, {width}, steps of {plan.step_residues:,} residues; "
             "upper bound: every epoch of the recipe)",
             f"{'dataset':<12} {'encoder':<16} {'variant':<22} {'runs':>5} {'epochs':>7} {'train+val residues':>19} {'hours':>10} {'ESM cache GB':>13}"]
    for (dataset, encoder, variant), rows in by_pair.items():
        first = rows[0]
        residues = "?" if first.train_residues is None else f"{first.train_residues + first.val_residues:,.0f}"
        hours = "?" if first.hours is None else _hours(sum(r.hours for r in rows))
        cache = "?" if first.esm_cache_gb is None else _gb(first.esm_cache_gb)
        lines.append(f"{dataset:<12} {encoder:<16} {variant or '-':<22} {sum(r.jobs for r in rows):>5} {first.epochs:>7} {residues:>19} {hours:>10} {cache:>13}")
    jobs = ", ".join(f"{stage} {n}" for stage, n in plan.stage_jobs.items())
    lines += [f"Jobs per stage: {jobs} (total {sum(plan.stage_jobs.values())})",
              f"Total: {_hours(plan.hours)} {plan.device.upper()}-hours of training; ESM cache {_gb(plan.cache_gb)} GB "
              f"(raw float16; {cache_summary(plan.esm_layers)})",
              f"Embed: {_hours(plan.embed_hours)} {plan.device.upper()}-hours "
              f"({'; '.join(calibration.note for calibration in plan.embed.values())})"]
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


def plan_run(benchmark: Benchmark, root: Path, out_dir: Path, device: torch.device,
             steps: int = 2, residues: int | None = None, width: int | None = None,
             lengths: dict[str, float] | None = None, workflow: Path = Path(".")) -> Plan:
    """What ``bihmf plan`` and ``rule plan`` do: calibrate on the demo's chains, project, write
    ``plan.csv`` and print the table. Steps default to the config's ``train.residue_budget`` (at
    most all the demo's chains), since a device's time per residue depends on the batch size."""
    records = calibration_records(demo_records(workflow), residues or benchmark.config["train"]["residue_budget"])
    plan = make_plan(benchmark, root, device, steps, records, width, lengths, workflow)
    path = write_plan(plan, out_dir)
    print(plan_table(plan))
    print(f"plan: {path}")
    return plan
