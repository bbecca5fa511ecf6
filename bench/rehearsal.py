"""Scale rehearsal: the pipeline's real code paths at the benchmark datasets' true sizes.

Synthetic proteins (``bench.synthetic``: published split counts, real or real-derived length
distributions) stand in for the downloads. Per dataset, each stage runs in a fresh child process
whose peak resident set is measured:

- **preprocess**: the protein table written by the real writer (``write_proteins``, the real
  schema) at ``--fraction`` of the published count, so the writer's peak is that of a preprocess
  job holding every record. Parsing the raw format runs ~25 entries/s per core here, too slow for
  full counts, so the dataset's real parser runs on its demo archive (real raw files) and its
  entries/s is extrapolated linearly to the full count.
- **embed**: the real embed job (``embed_shard`` per configured shard, then ``write_index``) on
  every distinct chain of the table, with a random-init ESM-2 of the configured model's depth
  and a reduced width (``--esm-width``). Each dataset's cache holds the layers the workflow
  caches for it (``Benchmark.caches`` of config.yaml: the union over every run
  reading that (dataset, ESM model) cache). The language model's forward is replaced by Gaussian
  float16 rows of the model's width: an ESM forward of this many residues takes hours on two
  cores, and only the bytes matter here. A sample of chains is embedded by the real forward too,
  and its bytes per value are shown beside the Gaussian rows' (how well values compress decides
  the cache size). Cache bytes scale exactly with width x layers x residues, so the configured
  model's cache is the measured bytes per value times its width, layers and the full count.
- **train**: the real ``train_run`` for one epoch of ``--encoder`` x ``--fusion`` (cheap, so
  it runs at scale on two cores) on the table and cache above. ``train_run`` keeps float16 rows of
  only the layers its fusion reads in memory when they fit half of ``train.mem_mb``
  (``bihmf.loader``), else streams them from the cache through a store of decoded row groups
  bounded in bytes. The rehearsal's rows are narrower than the configured model's, so the job
  runs with ``train.mem_mb`` shrunk by the same ratio (reduced width / configured width): it
  keeps or streams its rows exactly as the job at the configured width does, and the result
  records both figures and the choice taken. The job reading the most layers (the widest; rows
  a job reads come from ``Benchmark.read_layers``, the runs behind ``Benchmark.caches``)
  at the configured width is the measured peak with the measured job's rows exchanged for its
  own, or for one store when it streams; the verdict compares that with ``train.mem_mb``.
- **steps**: seconds per residue of one training step (``time_training_steps``, the loop of
  ``train_run``) for every configured encoder x fusion with its recipe's sizes, on a sample of
  the dataset's training proteins; seconds per epoch at full count = that x the split's graph
  residues (linear in residues; per-protein attention of ``cross`` and ``bihmf_global`` grows
  with length, which the sample's length mix carries).

Figures at ``--fraction`` < 1 are scaled to the full count linearly (counts, bytes, seconds,
and the per-residue part of memory); the result file records which.

Run: ``.venv/bin/python -m bench.rehearsal`` (the full counts: about 13 minutes and under 5 GB per
stage on 2 quiet cores); ``--fraction 0.01 --datasets bce`` to see it run.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

import bihmf.esm_writer
from bench.common import (
    ESM_SHAPES,
    ROOT,
    Target,
    base_parser,
    cores,
    demo_specs,
    emit,
    machine,
    memory_mb,
    parse,
    peak_mb,
    reset_peak,
    run_child,
    save,
    table,
    unpack,
)
from bench.synthetic import SHAPES, records
from bihmf.benchmark import Benchmark
from bihmf.batching import protein_graph, residue_mask
from bihmf.data import DATASETS
from bihmf.data.schema import read_proteins, write_proteins
from bihmf.esm_checkpoint import esm_depth, write_random_checkpoint
from bihmf.esm_cache import EmbeddingCache, EmbedSettings, chain_sequences, read_chains, shard_name, write_index
from bihmf.esm_writer import embed_shard
from bihmf.models.fusion import FusionContext
from bihmf.models.model import build_model, run_combinations
from bihmf.esm_cache import DECODED_BYTES
from bihmf.loader import ESM_MEMORY_SHARE
from bihmf.run import CURVE_FILE, RunSpec
from bihmf.tasks import TASKS, task_options
from bihmf.engine import time_training_steps
from bihmf.training import train_run

NAME = "rehearsal"
CONFIG = ROOT / "config.yaml"
DEMOS = {"react": "react_demo", "psr": "psr_demo", "lba": "lba_demo", "ppbs": "ppbs_demo", "bce": "bce_demo"}
STAGES = ("table", "parse", "cache", "train")
MB = 2**20


def full_benchmark() -> Benchmark:
    """The benchmark of config.yaml: its runs with their settings, ESM models and caches."""
    return Benchmark.load(CONFIG)


def full_config() -> dict[str, Any]:
    """config.yaml validated (defaults filled)."""
    return full_benchmark().config


def configured_esm() -> dict[str, Any]:
    """The configured ESM-2 (name, released shape, shards) and per dataset its cache of that model:
    the layers the embed job writes (the union over every run reading the cache, as the workflow's
    ``cache_layers``) and the most layers one training job reading it loads (its fusion's reads)."""
    benchmark = full_benchmark()
    config = benchmark.config
    name, cached = config["esm"]["name"], benchmark.caches
    caches = {dataset: {"layers": cached[(dataset, name)], "read_layers": benchmark.read_layers(dataset, name)}
              for dataset in config["datasets"]}
    return {"name": name, **ESM_SHAPES[f"t{esm_depth(config['esm'])}"], "shards": config["esm"]["shards"], "caches": caches}


def dataset_esm(esm: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The configured ESM-2 as one dataset's jobs see it: its shape and that dataset's cache."""
    if dataset not in esm["caches"]:
        raise KeyError(f"dataset {dataset!r} is not in {CONFIG} (datasets: {', '.join(esm['caches'])})")
    return {**{key: value for key, value in esm.items() if key != "caches"}, **esm["caches"][dataset]}


def paths(work: Path, dataset: str) -> dict[str, Path]:
    folder = work / dataset
    return {
        "proteins": folder / "proteins.parquet", "cache": folder / "cache", "index": folder / "cache" / "index.parquet",
        "runs": folder / "runs", "checkpoint": work / "esm2_rehearsal.pt",
    }


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(path.stat().st_size for path in folder.glob(pattern) if path.is_file())


# ---------------------------------------------------------------- child stages (one process each)


def measured(work: Any) -> dict[str, Any]:
    """Run ``work()`` with the peak resident set reset first; its result plus seconds and memory."""
    cpu = torch.device("cpu")
    base = memory_mb(cpu)
    reset_peak(cpu)
    started = time.perf_counter()
    result = work()
    return {**result, "seconds": time.perf_counter() - started, "base_mb": base, "peak_mb": peak_mb(cpu)}


def residue_counts(dataset: str, proteins: list) -> dict[str, Any]:
    """Residues per split: all of them, the graph's (LBA keeps the pocket) and the distinct chains'."""
    graph_residues = full_config()["datasets"][dataset]["graph_residues"]
    splits: dict[str, dict[str, int]] = {}
    for record in proteins:
        row = splits.setdefault(record.split, {"proteins": 0, "residues": 0, "graph_residues": 0})
        row["proteins"] += 1
        row["residues"] += len(record.sequence)
        row["graph_residues"] += int(residue_mask(record, graph_residues).sum())
    chains = dict(pair for record in proteins for pair in chain_sequences(record.sequence, record.chain_ids))
    return {"splits": splits, "distinct_chains": len(chains), "distinct_residues": sum(map(len, chains.values()))}


def table_stage(dataset: str, fraction: float, work: Path) -> dict[str, Any]:
    """Draw the dataset and write its protein table, as a preprocess job ends."""
    target = paths(work, dataset)["proteins"]
    target.parent.mkdir(parents=True, exist_ok=True)

    def write() -> dict[str, Any]:
        drawn = records(SHAPES[dataset], fraction)
        write_proteins(drawn, target)
        return {"proteins": len(drawn), **residue_counts(dataset, drawn)}

    return {**measured(write), "table_bytes": target.stat().st_size}


def parse_stage(dataset: str) -> dict[str, Any]:
    """The dataset's real parser on its demo archive (real raw files)."""
    kind = SHAPES[dataset].kind
    spec = demo_specs()[DEMOS[kind]]
    with tempfile.TemporaryDirectory() as raw:
        unpack(spec["download"]["archive"]["url"], Path(raw))

        def parse_demo() -> dict[str, Any]:
            parsed = DATASETS[kind].parse(Path(raw), spec)[0]
            return {"entries": len(parsed), "residues": sum(len(r.sequence) for r in parsed)}

        return {"demo": DEMOS[kind], **measured(parse_demo)}


def gaussian_rows(model: Any, alphabet: Any, sequences: dict[str, str], layers: list[int], settings: Any, *, device: torch.device) -> dict[str, np.ndarray]:
    """Stand-in for the ESM forward: unit Gaussian float16 rows of the model's width, per chain."""
    rng = np.random.default_rng(len(sequences))
    return {key: rng.standard_normal((len(seq), len(layers), model.embed_dim), np.float32).astype(np.float16) for key, seq in sequences.items()}


def embed_table(proteins: Path, cache: Path, esm: dict[str, Any], checkpoint: Path) -> None:
    """The embed jobs of every configured shard, then the index, as the workflow runs them."""
    config = full_config()
    settings = EmbedSettings.from_config(config["esm"])
    cache.mkdir(parents=True, exist_ok=True)
    shards = [cache / shard_name(shard, esm["shards"]) for shard in range(esm["shards"])]
    for shard, out in enumerate(shards):
        embed_shard(checkpoint, proteins, esm["layers"], shard, esm["shards"], out, settings, device=torch.device("cpu"))
    write_index(cache / "index.parquet", shards, read_chains(proteins))


def cache_stage(dataset: str, work: Path) -> dict[str, Any]:
    """The embed stage on every distinct chain, the forward replaced by Gaussian rows."""
    where, esm = paths(work, dataset), dataset_esm(configured_esm(), dataset)
    shutil.rmtree(where["cache"], ignore_errors=True)

    def embed() -> dict[str, Any]:
        with mock.patch.object(bihmf.esm_writer, "embed_sequences", gaussian_rows):
            embed_table(where["proteins"], where["cache"], esm, where["checkpoint"])
        return {}

    result = measured(embed)
    return {**result, "shard_bytes": folder_bytes(where["cache"], "shard-*"), "index_bytes": where["index"].stat().st_size}


def forward_stage(dataset: str, work: Path, residues: int) -> dict[str, Any]:
    """Bytes per cached value of the real (random-init) forward against the Gaussian rows, on the
    same chains: the first of the dataset's table up to ``residues`` residues."""
    where, esm = paths(work, dataset), dataset_esm(configured_esm(), dataset)
    chosen, total = [], 0
    for record in read_proteins(where["proteins"]):
        if total >= residues:
            break
        chosen.append(record)
        total += len(record.sequence)
    sample = work / "forward_sample"
    shutil.rmtree(sample, ignore_errors=True)
    sample.mkdir()
    write_proteins(chosen, sample / "proteins.parquet")
    out: dict[str, Any] = {"residues": total}
    for side, rows in (("forward", bihmf.esm_writer.embed_sequences), ("gaussian", gaussian_rows)):
        started = time.perf_counter()
        with mock.patch.object(bihmf.esm_writer, "embed_sequences", rows):
            embed_table(sample / "proteins.parquet", sample / side, esm, where["checkpoint"])
        out[side] = {"seconds": time.perf_counter() - started, "shard_bytes": folder_bytes(sample / side, "shard-*")}
    return out


def train_spec(dataset: str, encoder: str, fusion: str) -> RunSpec:
    dataset_cfg = full_config()["datasets"][dataset]
    return RunSpec(dataset, encoder, fusion, 0, dataset_cfg["task"], task_options(dataset_cfg), dataset_cfg["graph_residues"])


def rehearsal_mem_mb(mem_mb: int, reduced_width: int, configured_width: int) -> float:
    """The job's ``train.mem_mb`` shrunk with the ESM width, so that the loader's in-memory or
    streamed choice on rows of the reduced width is the one the job takes on rows of the
    configured width (their bytes shrink by the same ratio). Kept exact, not rounded, so the two
    choices agree at every size."""
    return mem_mb * reduced_width / configured_width


def train_stage(dataset: str, work: Path, encoder: str, fusion: str) -> dict[str, Any]:
    """``train_run`` for one epoch with the recipe's settings, on the table and cache above, under
    :func:`rehearsal_mem_mb`; records whether it kept the ESM rows in memory or streamed them."""
    where = paths(work, dataset)
    settings = full_benchmark().settings(dataset, encoder)
    reduced = EmbeddingCache(where["index"]).info.embed_dim
    mem_mb = settings.train["mem_mb"]
    train_cfg = {**settings.train, "epochs": 1, "threads": cores(),
                 "mem_mb": rehearsal_mem_mb(mem_mb, reduced, configured_esm()["embed_dim"])}
    out = where["runs"] / encoder / fusion
    shutil.rmtree(out, ignore_errors=True)
    placement: dict[str, Any] = {}

    def train() -> dict[str, Any]:
        record = train_run(train_spec(dataset, encoder, fusion), where["proteins"], where["index"], settings.model, train_cfg, out)
        placement.update(record.provenance["esm_rows"])  # where the job kept its ESM rows, and how many MiB
        return {}

    result = measured(train)
    with (out / CURVE_FILE).open() as handle:
        curve = list(csv.DictReader(handle))
    return {
        **result, "epoch_seconds": float(curve[0]["seconds"]), "mem_mb": mem_mb, "rehearsal_mem_mb": train_cfg["mem_mb"],
        **placement, "model": settings.model,
    }


def timed_combinations(encoders: list[str], fusions: list[str], reference: str) -> list[tuple[str, str]]:
    """The pairs whose steps are timed: every encoder with ``struct_only`` and every fusion with the
    ``reference`` encoder (or without one, ``seq_only``); the rest follow from them (see :func:`step_seconds`)."""
    wanted = {(encoder, "struct_only") for encoder in encoders} | set(run_combinations([reference], fusions))
    return [pair for pair in run_combinations(encoders, fusions) if pair in wanted]


def step_seconds(timed: dict[str, float], encoders: list[str], fusions: list[str], reference: str) -> dict[str, float]:
    """Seconds per residue of every configured pair: timed ones as timed, the others as their
    encoder's ``struct_only`` step plus what the fusion adds to the reference encoder's."""
    def estimate(encoder: str, fusion: str) -> float:
        key = f"{encoder}/{fusion}"
        if key in timed:
            return timed[key]
        return timed[f"{encoder}/struct_only"] + timed[f"{reference}/{fusion}"] - timed[f"{reference}/struct_only"]

    return {f"{encoder}/{fusion}": estimate(encoder, fusion) for encoder, fusion in run_combinations(encoders, fusions)}


def steps_stage(dataset: str, work: Path, residues: int, reference: str) -> dict[str, Any]:
    """Seconds per residue of a training step (recipe sizes) for the pairs of :func:`timed_combinations`,
    on the first training proteins of the table up to ``residues`` residues (one batch)."""
    where = paths(work, dataset)
    benchmark = full_benchmark()
    config = benchmark.config
    cache = EmbeddingCache(where["index"])
    chosen, total = [], 0
    for record in read_proteins(where["proteins"]):
        if record.split == "train" and total < residues:
            chosen.append(record)
            total += len(record.sequence)
    graph_residues = full_config()["datasets"][dataset]["graph_residues"]
    graphs = [protein_graph(r, cache.protein(r), graph_residues) for r in chosen]
    budget = sum(g.num_nodes for g in graphs)
    timed: dict[str, float] = {}
    for encoder, fusion in timed_combinations(config["model"]["encoders"], config["model"]["fusions"], reference):
        spec = train_spec(dataset, encoder, fusion)
        settings = benchmark.settings(dataset, encoder)
        context = FusionContext.of(settings.model, cache.info.embed_dim, cache.info.esm_depth, cache.info.layers)
        torch.manual_seed(0)
        model = build_model(encoder, fusion, spec.task, settings.model, context, spec.task_options)
        TASKS[spec.task].prepare(model.head, np.array([r.target for r in chosen]))
        train_cfg = {**settings.train, "residue_budget": budget, "threads": cores()}
        timed[f"{encoder}/{fusion}"] = time_training_steps(spec, model, chosen, graphs, train_cfg, torch.device("cpu"), 1).seconds_per_residue
    return {"proteins": len(chosen), "graph_residues": budget, "timed": timed}


def child(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(cores())
    stage, dataset = args.child, args.dataset
    if stage == "table":
        return table_stage(dataset, args.fraction, args.work)
    if stage == "parse":
        return parse_stage(dataset)
    if stage == "cache":
        return cache_stage(dataset, args.work)
    if stage == "forward":
        return forward_stage(dataset, args.work, args.forward_residues)
    if stage == "train":
        return train_stage(dataset, args.work, args.encoder, args.fusion)
    return steps_stage(dataset, args.work, args.step_residues, args.reference_encoder)


# ---------------------------------------------------------------- derived figures


def full_count(dataset: str) -> int:
    return SHAPES[dataset].count


def at_full_count(stage: dict[str, Any], scale: float) -> float:
    """A job's peak at the full count: the interpreter's memory before the work stays, the rest
    grows with the proteins."""
    return stage["base_mb"] + (stage["peak_mb"] - stage["base_mb"]) * scale


def derive(dataset: str, stages: dict[str, Any], esm: dict[str, Any], reduced_width: int) -> dict[str, Any]:
    """Full-count figures of one dataset from its stages (linear in the count below the full count)."""
    table_, parse_, cache_, train_ = (stages[s] for s in STAGES)
    if not train_["read_layers"]:
        raise ValueError(f"{dataset}: the measured training job read no ESM layer, so the widest job's rows cannot be "
                         "derived from it; measure a fusion that reads ESM layers (--fusion, default seq_only)")
    scale = full_count(dataset) / table_["proteins"]
    splits = table_["splits"]
    layers = len(esm["layers"])
    values = cache_["shard_bytes"] / (table_["distinct_residues"] * layers * reduced_width)
    configured_layer_mb = train_["rows_mb"] * scale * (esm["read_layers"] / train_["read_layers"]) * (esm["embed_dim"] / reduced_width)
    in_memory = configured_layer_mb <= ESM_MEMORY_SHARE * train_["mem_mb"]
    train_mb = at_full_count(train_, scale)
    job_mb = widest_job_mb(train_mb, train_["rows"], train_["rows_mb"] * scale, configured_layer_mb if in_memory else None)
    return {
        "scale": scale,
        "residues": sum(s["residues"] for s in splits.values()) * scale,
        "table_mb": table_["table_bytes"] * scale / MB,
        "writer_peak_mb": at_full_count(table_, scale),
        "parse_entries_per_s": parse_["entries"] / parse_["seconds"],
        "preprocess_seconds": full_count(dataset) * parse_["seconds"] / parse_["entries"],
        "bytes_per_value": values,
        "cache_gb": (values * table_["distinct_residues"] * scale * layers * esm["embed_dim"] + cache_["index_bytes"] * scale) / 2**30,
        "train_split_fp16_gb": splits["train"]["graph_residues"] * scale * layers * esm["embed_dim"] * 2 / 2**30,
        "train_peak_mb": train_mb,
        "epoch_seconds": train_["epoch_seconds"] * scale,
        "job_layers_gb": configured_layer_mb / 1024,
        "rows": "in memory" if in_memory else "streamed",
        "job_mb": job_mb,
        "fits": job_mb <= train_["mem_mb"],
    }


def widest_job_mb(measured_mb: float, measured_rows: str, measured_rows_mb: float, widest_rows_mb: float | None) -> float:
    """Memory of the training job reading the most ESM layers, at the configured width and full
    count: the measured job's peak with the ESM rows it held exchanged for the widest job's.

    ``train_run`` keeps float16 rows of the layers the fusion reads when they fit its share of
    ``train.mem_mb``, else streams them through a store of decoded row groups bounded in bytes
    (:data:`DECODED_BYTES`, whatever the width). ``measured_rows_mb``: the measured job's rows at
    the reduced width and full count; ``widest_rows_mb``: the widest job's at the configured
    width when they fit its share, None when it streams. A measured job that streamed already
    holds a full store in its peak, which then stands for the widest job's.
    """
    held = measured_rows_mb if measured_rows == "in memory" else 0.0
    if widest_rows_mb is not None:
        return measured_mb - held + widest_rows_mb
    return measured_mb - held + (0.0 if measured_rows == "streamed" else DECODED_BYTES / MB)


def epoch_seconds(per_residue: dict[str, float], table_: dict[str, Any], scale: float) -> dict[str, float]:
    """Seconds of one training pass at full count per encoder x fusion (seconds/residue x residues)."""
    train_residues = table_["splits"]["train"]["graph_residues"] * scale
    return {combo: seconds * train_residues for combo, seconds in per_residue.items()}


# ---------------------------------------------------------------- report


def _gb(mb: float) -> str:
    return f"{mb / 1024:,.1f} GB"


def _layers(count: int) -> str:
    return f"{count} layer{'' if count == 1 else 's'}"


def cached_text(caches: dict[str, dict[str, Any]], datasets: list[str]) -> str:
    """Each distinct cached layer list once, with the datasets whose cache holds it."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for dataset in datasets:
        groups.setdefault(tuple(caches[dataset]["layers"]), []).append(dataset)
    return "; ".join(f"{list(layers)} for {', '.join(names)}" for layers, names in groups.items())


def _duration(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 120 else f"{seconds / 60:,.0f} min"


def render(result: dict[str, Any]) -> str:
    s, r = result["setup"], result["results"]
    esm = s["esm"]
    intro = (
        ("Synthetic datasets at the full published counts" if s["fraction"] >= 1 else
         f"Synthetic datasets at {s['fraction']:g} of the published counts (figures scaled linearly to the full count)")
        + f". ESM: {esm['name']} ({esm['num_layers']} layers x {esm['embed_dim']}); each dataset's cache holds the layers "
        f"every run reading it needs (`Benchmark.caches` of config.yaml): {cached_text(esm['caches'], list(r['datasets']))}. "
        f"The rehearsal's ESM has that depth and width {s['esm_width']} (reduced on this machine), its forward replaced by "
        f"Gaussian rows. Measured training run: `train_run`, one epoch of {s['encoder']} x {s['fusion']} at width {s['esm_width']}, "
        "its train.mem_mb shrunk by the same ratio as the width, so it keeps its ESM rows in memory or streams them as the "
        "job at the configured width does. The widest job (the most ESM layers read) at the configured width is that "
        "measured peak with the measured job's rows exchanged for its own (in memory) or for the store of decoded row "
        f"groups (streamed). Forward sample: {r['forward']['residues']:,} residues of "
        f"{s['forward_dataset']}, {r['forward']['forward']['shard_bytes'] / r['forward']['gaussian']['shard_bytes']:.2f}x "
        "the Gaussian rows' cache bytes (the cache sizes below use the Gaussian rows' bytes per value)."
    )
    data_rows, train_rows = [], []
    for dataset, d in r["datasets"].items():
        t, full = d["stages"], d["full"]
        data_rows.append([
            dataset, f"{full_count(dataset):,}", f"{full['residues'] / 1e6:.1f} M", f"{full['table_mb']:,.0f} MB",
            f"{full['preprocess_seconds'] / 60:,.0f} min ({full['parse_entries_per_s']:.1f} entries/s)", f"{full['writer_peak_mb']:,.0f} MB",
            str(len(esm["caches"][dataset]["layers"])), f"{full['bytes_per_value']:.2f}", f"{full['cache_gb']:,.1f} GB",
            f"{t['cache']['peak_mb']:,.0f} MB",
        ])
        train_rows.append([
            dataset, _duration(t["train"]["epoch_seconds"]), _duration(full["epoch_seconds"]), f"{full['train_peak_mb']:,.0f} MB",
            f"{t['train']['rows']} ({_layers(t['train']['read_layers'])}, mem_mb {t['train']['rehearsal_mem_mb']:g} of {t['train']['mem_mb']:,})",
            f"{full['train_split_fp16_gb']:,.1f} GB", f"{full['job_layers_gb']:,.0f} GB ({_layers(esm['caches'][dataset]['read_layers'])})",
            full["rows"], f"{_gb(full['job_mb'])} vs {t['train']['mem_mb'] / 1024:.1f} GB", "fits" if full["fits"] else "does not fit",
        ])
    data_headers = [
        "dataset", "proteins", "residues", "protein table", "preprocess parse time", "preprocess peak (writer)",
        "cached layers", "cache bytes/value", f"ESM cache at {esm['embed_dim']}", "embed job peak (measured)",
    ]
    train_headers = [
        "dataset", "epoch measured", "epoch at full count", f"train job peak at width {s['esm_width']}",
        "measured job's ESM rows", f"train split's cached layers, float16 at {esm['embed_dim']}",
        f"rows the widest job reads (float16 at {esm['embed_dim']})", "widest job's ESM rows",
        "widest job at full width vs train.mem_mb", "verdict",
    ]
    step_rows = [d["epoch_seconds"] for d in r["datasets"].values()]
    datasets = list(r["datasets"])
    combos = list(step_rows[0]) if step_rows else []
    combo_rows = [
        [combo.replace("/", " x ") + (" *" if combo in r["steps"]["timed"] else ""), *(f"{step_rows[i][combo] / 60:,.0f}" for i in range(len(datasets)))]
        for combo in combos
    ]
    steps_note = (
        f"Minutes per training epoch at full count, every configured encoder x fusion (recipe sizes, ESM width {s['esm_width']}, "
        f"{s['threads']} threads): seconds per residue of one step on {r['steps']['proteins']} training proteins "
        f"({r['steps']['graph_residues']:,} graph residues) of {s['datasets'][0]} (`time_training_steps`), times each train split's "
        f"graph residues at full count. Timed: every encoder with struct_only and every fusion with {s['reference_encoder']} (marked *); "
        f"the others are their encoder's struct_only step plus what the fusion adds to {s['reference_encoder']}'s. The task head and "
        "the length mix are the sample's."
    )
    return "\n\n".join([
        intro, table(data_headers, data_rows), table(train_headers, train_rows), steps_note, table(["encoder x fusion", *datasets], combo_rows)
    ])


def targets(result: dict[str, Any]) -> list[Target]:
    found = result["results"]["datasets"]
    over = [d for d, v in found.items() if not v["full"]["fits"]]
    streamed = [d for d, v in found.items() if v["full"]["rows"] == "streamed"]
    return [
        Target(
            "Training job memory at full ESM width", "<= train.mem_mb",
            f"over: {', '.join(over) or 'none'}; widest job's ESM rows streamed from the cache: {', '.join(streamed) or 'none'}",
            not over,
            "a training job keeps a split's ESM rows in memory within half of train.mem_mb and streams them from the cache beyond",
        )
    ]


# ---------------------------------------------------------------- driver


def child_args(stage: str, dataset: str, args: argparse.Namespace) -> list[str]:
    return [
        "--child", stage, "--dataset", dataset, "--work", str(args.work), "--fraction", str(args.fraction), "--encoder", args.encoder,
        "--fusion", args.fusion, "--step-residues", str(args.step_residues), "--forward-residues", str(args.forward_residues),
        "--reference-encoder", args.reference_encoder,
    ]


def rehearse(args: argparse.Namespace, datasets: list[str]) -> dict[str, Any]:
    """Every dataset's stages, then the step times and the forward sample on ``datasets[0]``."""
    esm = configured_esm()
    write_random_checkpoint(
        paths(args.work, "")["checkpoint"], num_layers=esm["num_layers"], embed_dim=args.esm_width, attention_heads=max(1, args.esm_width // 4), seed=0
    )
    found: dict[str, Any] = {}
    for dataset in datasets:
        stages = {}
        for stage in STAGES:
            print(f"   {dataset}: {stage}", flush=True)
            stages[stage] = run_child(NAME, child_args(stage, dataset, args))
        found[dataset] = {"stages": stages, "full": derive(dataset, stages, dataset_esm(esm, dataset), args.esm_width)}
    print(f"   {datasets[0]}: forward sample and step times", flush=True)
    forward = run_child(NAME, child_args("forward", datasets[0], args))
    steps = run_child(NAME, child_args("steps", datasets[0], args))
    model = full_config()["model"]
    per_residue = step_seconds(steps["timed"], model["encoders"], model["fusions"], args.reference_encoder)
    for d in found.values():
        d["epoch_seconds"] = epoch_seconds(per_residue, d["stages"]["table"], d["full"]["scale"])
    return {"datasets": found, "forward": forward, "steps": steps}


def main(argv: list[str]) -> None:
    parser = base_parser(__doc__.splitlines()[0], devices=False)
    parser.add_argument("--datasets", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each published count to draw (figures scale to the full count)")
    parser.add_argument("--esm-width", type=int, default=8, help="reduced ESM width of the rehearsal's cache")
    parser.add_argument("--encoder", default="none", help="encoder of the measured one-epoch train_run")
    parser.add_argument("--fusion", default="seq_only", help="fusion of the measured one-epoch train_run")
    parser.add_argument("--step-residues", type=int, default=150, help="training residues of the sample the steps are timed on")
    parser.add_argument("--reference-encoder", default="egnn", help="encoder every fusion's step is timed with")
    parser.add_argument("--forward-residues", type=int, default=3000, help="residues embedded by the real forward for the bytes check")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", choices=[*STAGES, "forward", "steps"], help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parse(parser, argv)
    if args.child:
        emit(child(args))
        return
    datasets = args.datasets.split(",")
    unknown = set(datasets) - set(SHAPES)
    if unknown:
        parser.error(f"unknown dataset(s) {sorted(unknown)}; known: {', '.join(SHAPES)}")
    if args.quick:
        args.fraction, datasets, args.step_residues, args.forward_residues = 0.005, ["bce"], 100, 100
    started = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        args.work = Path(tmp)
        results = rehearse(args, datasets)
    setup = {
        "datasets": datasets, "fraction": args.fraction, "esm": configured_esm(), "esm_width": args.esm_width, "encoder": args.encoder,
        "fusion": args.fusion, "step_residues": args.step_residues, "forward_dataset": datasets[0], "reference_encoder": args.reference_encoder,
        "threads": cores(),
    }
    print(save(args.out, NAME, argv, started, setup, results))


if __name__ == "__main__":
    main(sys.argv[1:])
