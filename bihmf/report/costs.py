"""Per-run provenance and cost: what each number in the tables came from and what it cost.

Cost has three axes: model size (trainable parameters), compute (GPU-hours for runs on a
GPU, CPU-hours otherwise, summed over every attempt at the run from its ``attempts.json``;
runs from before that file fall back to Snakemake's ``benchmark:`` file, which holds the last
attempt only) and
storage (the share of the dataset's ESM cache the fusion reads: a structure-only model reads
none of it, a fusion reading three of the cached layers reads three layers' worth).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bihmf.attempts import AttemptCosts, attempt_costs
from bihmf.esm_cache import CacheInfo, file_metadata
from bihmf.models.fusion import FUSIONS, LayerChoice, layers_read
from bihmf.run import RunKey, RunRecord

MIB = 2**20
HOUR = 3600.0


@dataclass(frozen=True)
class CacheSize:
    """Size on disk of one dataset's ESM cache and the layers it holds."""

    mib: float
    layers: tuple[int, ...]
    esm_depth: int


def read_cache_size(index: Path) -> CacheSize:
    """Sum the cache folder's Parquet files (shards + index); layers and depth from the index footer."""
    index = Path(index)
    info = CacheInfo.parse(file_metadata(index), index)
    size = sum(p.stat().st_size for p in index.parent.glob("*.parquet"))
    return CacheSize(size / MIB, info.layers, info.esm_depth)


def read_benchmark(path: Path) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one job from Snakemake's benchmark TSV."""
    frame = pd.read_csv(path, sep="\t")
    missing = {"s", "cpu_time", "max_rss"} - set(frame.columns)
    if frame.empty or missing:
        raise ValueError(f"{path}: not a Snakemake benchmark file (missing {sorted(missing) or 'rows'})")
    values = pd.to_numeric(frame.iloc[-1][["s", "cpu_time", "max_rss"]], errors="coerce")
    return {"bench_wall_s": values["s"], "bench_cpu_s": values["cpu_time"], "bench_max_rss_mb": values["max_rss"]}


def esm_layers_read(run: RunRecord, cache: CacheSize) -> int:
    """Cached ESM layers the run's fusion reads (its model config decides the pairing)."""
    if run.fusion not in FUSIONS:
        raise ValueError(f"{run.path}: fusion {run.fusion!r} is not registered (known: {sorted(FUSIONS)})")
    layers = layers_read(run.fusion, LayerChoice.of(run.provenance["model_config"], cache.esm_depth))
    return len(set(layers) & set(cache.layers))


def compute_hours(device: str, bench: Mapping[str, float], wall_seconds: float, attempts: AttemptCosts | None = None) -> tuple[float, str]:
    """GPU-hours (one GPU per job, so wall time) on CUDA, CPU-hours (CPU time) otherwise; every
    attempt's when the run recorded them."""
    if attempts is not None:
        return (attempts.wall_s / HOUR, "GPU-hours") if device.startswith("cuda") else (attempts.cpu_s / HOUR, "CPU-hours")
    if device.startswith("cuda"):
        wall = bench.get("bench_wall_s", math.nan)
        return (wall if math.isfinite(wall) else wall_seconds) / HOUR, "GPU-hours"
    return bench.get("bench_cpu_s", math.nan) / HOUR, "CPU-hours"


def run_table(runs: Sequence[RunRecord], benchmarks: Mapping[RunKey, Path], cache: CacheSize) -> pd.DataFrame:
    """One row per run: identity, training outcome, cost and provenance (hashes, versions)."""
    records = []
    for run in runs:
        prov = run.provenance
        bench = read_benchmark(benchmarks[run.key]) if run.key in benchmarks else {}
        device = str(prov.get("device", "unknown"))
        attempts = attempt_costs(run.folder.path)
        hours, kind = compute_hours(device, bench, float(prov.get("wall_seconds", math.nan)), attempts)
        layers = esm_layers_read(run, cache)
        records.append({
            "encoder": run.encoder, "fusion": run.fusion, "seed": run.seed, "task": run.task,
            "best_epoch": run.best_epoch, "epochs_run": run.epochs_run, "parameters": prov.get("parameters"),
            "device": device, "compute_hours": hours, "compute_unit": kind,
            "wall_seconds": prov.get("wall_seconds"), "train_seconds": prov.get("train_seconds"), **bench,
            "attempts": attempts.attempts if attempts else None,
            "attempts_wall_s": attempts.wall_s if attempts else None, "attempts_cpu_s": attempts.cpu_s if attempts else None,
            "peak_rss_mb": attempts.peak_rss_mb if attempts else prov.get("peak_rss_mb"),
            "peak_gpu_mb": attempts.peak_gpu_mb if attempts else prov.get("peak_gpu_mb"),
            "esm_layers_read": layers, "esm_cache_mib_read": cache.mib * layers / max(1, len(cache.layers)),
            "resumed": prov.get("resumed"), "git_commit": prov.get("git_commit"), "config_hash": prov.get("config_hash"),
            "dataset_sha256": prov.get("dataset_sha256"), "esm_checkpoint_sha256": prov.get("esm_checkpoint_sha256"),
            "packages": "; ".join(f"{k}={v}" for k, v in prov.get("packages", {}).items()),
            **run.auxiliary, "metrics_file": str(run.path),
        })
    return pd.DataFrame.from_records(records)
