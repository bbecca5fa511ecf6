"""The train stage: one (dataset, encoder, fusion, seed) run from tables to its run folder.

Runs are deterministic on CPU for a given seed (seeded torch/numpy, deterministic algorithms,
data order from a seeded generator). :func:`train_run` reads as its steps: seed, build the
model, build the graphs, start or resume, train epoch after epoch with early stopping, then
evaluate the best epoch and write the run folder (:mod:`bihmf.run`). The step, the epoch and
evaluation are :class:`bihmf.engine.Engine`'s, shared with `bihmf plan` and the benchmarks;
what is the train stage's own is the run folder: ``last.pt``, resuming, early stopping and
the record.

Batches reach the step through :mod:`bihmf.loader`: ESM rows stay float16 and hold only the
layers the fusion reads, in memory when they fit the job's ``train.mem_mb`` share, else read
from the cache per batch (the choice is recorded as ``esm_rows`` in the provenance); a
background thread assembles the next batches while a step runs.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import resource
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from bihmf.attempts import record_attempt, start_attempt
from bihmf.batching import protein_graph
from bihmf.data.schema import ProteinRecord, read_proteins
from bihmf.engine import Batches, Engine, NonFiniteLossError, RunData, precision_name
from bihmf.esm_cache import EmbeddingCache
from bihmf.gpu import pick_device
from bihmf.integrity import load_checkpoint
from bihmf.io import file_digest, write_torch_atomic
from bihmf.loader import EsmRows, place_rows
from bihmf.models.fusion import FusionContext, LayerChoice, loaded_layers
from bihmf.models.model import build_model
from bihmf.run import (
    RunFolder, RunRecord, RunSpec, SavedModel, cache_provenance, git_commit, package_versions, run_hash, write_curve,
    write_model, write_record, write_test_predictions,
)
from bihmf.runlock import holding, run_lock
from bihmf.tasks import TASKS

log = logging.getLogger(__name__)


def _split_ids(records: list[ProteinRecord]) -> dict[str, list[int]]:
    """Proteins per evaluation split: 'train', 'val', 'test' and 'test_<subset>' for each test subset."""
    splits: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        splits.setdefault(record.split, []).append(i)
        if record.split == "test" and record.subset:
            splits.setdefault(f"test_{record.subset}", []).append(i)
    missing = {"train", "val", "test"} - set(splits)
    if missing:
        raise ValueError(f"dataset has no proteins in split(s) {sorted(missing)}")
    return splits


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class TrainProgress:
    """Everything that must survive a kill for a resumed run to equal an uninterrupted one."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, Any] | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass
class Trainer:
    """A run in training: its engine, its progress and where it is saved."""

    spec: RunSpec
    engine: Engine
    progress: TrainProgress
    folder: RunFolder
    run_hash: str


def _seed(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)


def read_layers(fusion: str, cache: EmbeddingCache, model_cfg: dict[str, Any]) -> tuple[int, ...]:
    """The cached ESM layers the fusion reads (none for structure-only fusions), in cache order."""
    return loaded_layers(fusion, LayerChoice.of(model_cfg, cache.info.esm_depth), cache.info.layers)


def _fusion_context(cache: EmbeddingCache, model_cfg: dict[str, Any], read: tuple[int, ...]) -> FusionContext:
    """The model's view of ``graph.esm``: only the layers it reads are loaded, so its slots
    number those (slots are positions, not weights: the saved model reads any cache)."""
    return FusionContext.of(model_cfg, cache.info.embed_dim, cache.info.esm_depth, read or cache.info.layers)


def _load_data(
    spec: RunSpec, proteins_path: Path, cache_path: Path, cache: EmbeddingCache, read: tuple[int, ...], mem_mb: int,
) -> RunData:
    """Graphs of every protein; their ESM rows (float16, the layers read) in memory when they fit
    the job's share of ``mem_mb``, else streamed per batch."""
    records = read_proteins(proteins_path)
    rows = EsmRows(cache, read, spec.graph_residues) if read else None
    placement = place_rows(rows, records, mem_mb)
    held = rows.held(records) if rows is not None and placement.in_memory else itertools.repeat(None, len(records))
    graphs = [protein_graph(r, esm, spec.graph_residues) for r, esm in zip(records, held, strict=True)]
    return RunData(
        records, graphs, _split_ids(records), cache, cache_path, file_digest(proteins_path, "sha256"),
        stream=rows if rows is not None and not placement.in_memory else None, placement=placement,
    )


def _save_last(trainer: Trainer) -> None:
    state = {
        "run_hash": trainer.run_hash,
        **trainer.engine.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "progress": asdict(trainer.progress),
    }
    write_torch_atomic(trainer.folder.last, state)


def _load_last(folder: RunFolder, run_hash: str) -> dict[str, Any] | None:
    """The last epoch checkpoint of this very run, or None (absent, or from another config)."""
    if not folder.last.exists():
        return None
    state = load_checkpoint(folder.last)
    if state["run_hash"] != run_hash:
        log.warning("%s belongs to another configuration; starting afresh", folder.last)
        return None
    return state


def _resume(trainer: Trainer) -> bool:
    """Continue from ``last.pt`` when it belongs to this run; whether it did."""
    resumed = _load_last(trainer.folder, trainer.run_hash)
    if resumed is None:
        return False
    trainer.engine.load_state_dict(resumed)
    torch.set_rng_state(resumed["torch_rng"])
    if resumed["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(resumed["cuda_rng"])
    trainer.progress = TrainProgress(**resumed["progress"])
    log.info("resuming after epoch %d from %s", trainer.progress.epoch, trainer.folder.last)
    return True


def _patience_spent(progress: TrainProgress, patience: int) -> bool:
    return progress.best_epoch >= 0 and progress.epoch - progress.best_epoch >= patience


def _end_epoch(trainer: Trainer, epoch: int, val: dict[str, float | None], losses: list[float], seconds: float) -> None:
    """Record the epoch on the curve, keep the best state by the selection metric, save ``last.pt``."""
    engine, progress = trainer.engine, trainer.progress
    metric = engine.task.SELECTION_METRIC
    progress.curve.append(
        {"epoch": epoch, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in val.items()}, "seconds": seconds}
    )
    progress.epoch = epoch
    score = val[metric]
    if score is None:  # undefined this epoch (constant predictions): counts as no gain
        score = -math.inf
    if score > progress.best_score or progress.best_epoch < 0:
        progress.best_score, progress.best_epoch = score, epoch
        progress.best_state = copy.deepcopy(engine.model.state_dict())
    elif _patience_spent(progress, engine.cfg["patience"]):
        log.info("early stop: no val %s gain for %d epochs", metric, engine.cfg["patience"])
    progress.elapsed_s += seconds
    _save_last(trainer)
    record_attempt(trainer.folder.path)


def _fit(trainer: Trainer, data: RunData) -> None:
    """Epochs until the configured number or until patience runs out (a resumed run continues)."""
    cfg = trainer.engine.cfg
    remaining = range(trainer.progress.epoch + 1, cfg["epochs"] + 1)
    with closing(trainer.engine.batches(data, trainer.spec.seed, remaining)) as batches:
        while trainer.progress.epoch < cfg["epochs"] and not _patience_spent(trainer.progress, cfg["patience"]):
            _fit_epoch(trainer, data, batches)


def _fit_epoch(trainer: Trainer, data: RunData, batches: Batches) -> None:
    """Train the next epoch, validate, log and record it."""
    engine = trainer.engine
    epoch = trainer.progress.epoch + 1
    started = time.time()
    try:
        losses, residues = engine.epoch(data, trainer.spec.seed, epoch, batches)
    except NonFiniteLossError as error:
        raise NonFiniteLossError(
            f"{error}; the last good state (epoch {trainer.progress.epoch}) stays in {trainer.folder.last}"
        ) from None
    val = engine.evaluate(data, "val")
    seconds = time.time() - started
    log.info(
        "epoch %d/%d loss %.4f val %s | %.1f proteins/s %.0f residues/s",
        epoch, engine.cfg["epochs"], float(np.mean(losses)), json.dumps({k: _rounded(v) for k, v in val.items()}),
        len(data.splits["train"]) / seconds, residues / seconds,
    )
    _end_epoch(trainer, epoch, val, losses, seconds)


def _provenance(trainer: Trainer, data: RunData, model_cfg: dict[str, Any], started: float, resumed: bool) -> dict[str, Any]:
    cache, engine = data.cache, trainer.engine
    device = engine.device
    return {
        "git_commit": git_commit(),
        "config_hash": trainer.run_hash,
        "model_config": model_cfg,
        "train_config": engine.cfg,
        "dataset_sha256": data.data_sha,
        **cache_provenance(trainer.folder, cache.metadata, cache.layers, data.cache_path),
        "esm_rows": asdict(data.placement),  # kept in memory or streamed from the cache, and why
        "ligand_atoms": any(len(r.ligand_elems) for r in data.records),
        "packages": package_versions(),
        "device": str(device),
        "precision": precision_name(device),  # mixed precision of the steps (bihmf/engine.py)
        "wall_seconds": time.time() - started,
        "train_seconds": trainer.progress.elapsed_s,
        "resumed": resumed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "parameters": sum(p.numel() for p in engine.model.parameters()),
    }


def _log_summary(record: RunRecord, task: ModuleType, progress: TrainProgress, device: torch.device) -> None:
    selection = _rounded(record.metrics["val"][task.SELECTION_METRIC])
    test = {k: _rounded(v) for k, v in record.metrics["test"].items()}
    log.info(
        "summary %s/%s/%s/seed%d: %d epochs (best %d), val %s %s, test %s, %.0f s on %s",
        record.dataset, record.encoder, record.fusion, record.seed, len(progress.curve), progress.best_epoch,
        task.SELECTION_METRIC, selection, json.dumps(test), progress.elapsed_s, device,
    )


def _start(spec: RunSpec, proteins_path: Path, cache_path: Path, model_cfg: dict[str, Any], train_cfg: dict[str, Any],
           out_dir: Path) -> tuple[Trainer, RunData]:
    """Seed, build the model and the graphs, and set up the optimiser (the order fixes the RNG draws)."""
    _seed(spec.seed, train_cfg["threads"])
    device = pick_device()
    task = TASKS[spec.task]
    cache = EmbeddingCache(cache_path)
    read = read_layers(spec.fusion, cache, model_cfg)
    model = build_model(spec.encoder, spec.fusion, spec.task, model_cfg, _fusion_context(cache, model_cfg, read), spec.task_options).to(device)
    data = _load_data(spec, proteins_path, cache_path, cache, read, train_cfg["mem_mb"])
    task.prepare(model.head, data.train_targets)
    trainer = Trainer(
        spec, Engine.build(model, task, train_cfg, device), TrainProgress(best_state=copy.deepcopy(model.state_dict())),
        RunFolder(out_dir), run_hash(spec, model_cfg, train_cfg, data.data_sha, cache.info.checkpoint_sha256),
    )
    return trainer, data


@holding(run_lock, "out_dir")  # one writer per run folder (bihmf/runlock.py)
def train_run(
    spec: RunSpec,
    proteins_path: Path,
    cache_path: Path,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    out_dir: Path,
    extra_provenance: dict[str, Any] | None = None,
) -> RunRecord:
    """Train one run and write its folder: metrics, best-epoch model, curve, test predictions.
    ``extra_provenance`` joins metrics.json's provenance (an ablation variant's identity).

    After every epoch the full training state goes to ``last.pt``; a rerun of a killed job
    continues from it and ends with the same metrics as an uninterrupted run.
    """
    started = time.time()
    trainer, data = _start(spec, proteins_path, cache_path, model_cfg, train_cfg, out_dir)
    resumed = _resume(trainer)
    start_attempt(trainer.folder.path, resumed)  # cost of every attempt (bihmf/attempts.py)
    _fit(trainer, data)
    engine, progress, folder = trainer.engine, trainer.progress, trainer.folder
    engine.model.load_state_dict(progress.best_state)
    metrics = {name: engine.evaluate(data, name) for name in data.splits if name != "train"}
    record = RunRecord(
        path=folder.metrics, dataset=spec.dataset, encoder=spec.encoder, fusion=spec.fusion, seed=spec.seed, task=spec.task,
        metrics=metrics, best_epoch=progress.best_epoch, epochs_run=len(progress.curve),
        provenance={**_provenance(trainer, data, model_cfg, started, resumed), **(extra_provenance or {})},
    )
    write_model(folder.model, SavedModel(spec, model_cfg, progress.best_state, progress.best_epoch))
    write_curve(folder.curve, progress.curve)
    write_test_predictions(folder.test_predictions, engine.test_predictions(data))
    write_record(record)
    record_attempt(folder.path)
    _log_summary(record, engine.task, progress, engine.device)
    return record
