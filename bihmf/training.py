"""The train stage: one (dataset, encoder, fusion, seed) run from tables to its run folder.

Runs are deterministic on CPU for a given seed (seeded torch/numpy, deterministic algorithms,
data order from a seeded generator). :func:`train_run` reads as its steps: seed, build the
model, build the graphs, start or resume, train epoch after epoch with early stopping, then
evaluate the best epoch and write the run folder (:mod:`bihmf.run`).

Batches reach the step through :mod:`bihmf.loader`: ESM rows stay float16 and hold only the
layers the fusion reads, in memory when they fit the job's ``train.mem_mb`` share, else read
from the cache per batch; a background thread assembles the next batches while a step runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import platform
import resource
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Batch, Data

from bihmf.attempts import record_attempt, start_attempt
from bihmf.batching import in_order_batches, protein_graph, residue_budget_batches
from bihmf.data.schema import ProteinRecord, read_proteins
from bihmf.esm_cache import EmbeddingCache
from bihmf.gpu import pick_device
from bihmf.integrity import load_checkpoint
from bihmf.io import file_digest, write_torch_atomic
from bihmf.loader import EsmRows, device_batches, fits_in_memory, with_rows
from bihmf.models.fusion import FusionContext, LayerChoice, loaded_layers
from bihmf.models.model import ProteinModel, build_model
from bihmf.run import (
    RunFolder, RunRecord, RunSpec, SavedModel, write_curve, write_model, write_record, write_test_predictions,
)
from bihmf.runlock import holding, run_lock
from bihmf.tasks import TASKS

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the last good checkpoint is kept."""


def _in_order(data: RunData, ids: list[int], budget: int) -> list[list[int]]:
    """Batches of the proteins ``ids`` in their order (evaluation and test predictions: no shuffling)."""
    return [[ids[j] for j in batch] for batch in in_order_batches([data.graphs[i] for i in ids], budget)]


def _evaluate(model: ProteinModel, task: ModuleType, data: RunData, split: str, budget: int, device: torch.device) -> dict[str, float]:
    model.eval()
    batches = _in_order(data, data.splits[split], budget)
    parts = []
    with torch.no_grad():
        for _, batch in device_batches(batches, data.batch_graphs, data.names, device):
            parts.append(task.predictions(model(batch), batch, model.head))
    return task.evaluate(parts)


def predictions_by_protein(model: ProteinModel, task: ModuleType, data: RunData, budget: int, device: torch.device) -> pa.Table:
    """The task's evaluation rows for every test protein, tagged with protein id and subset.

    The report bootstraps test metrics over proteins for single-seed runs, so each row must be
    attributable to its protein: the test proteins go through the model in batches of the
    residue budget, and the task names the protein of each row (``prediction_owners``).
    """
    model.eval()
    tested = [i for i, record in enumerate(data.records) if record.split == "test"]
    batches = _in_order(data, tested, budget)
    owners: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for ids, batch in device_batches(batches, data.batch_graphs, data.names, device):
            for key, values in task.predictions(model(batch), batch, model.head).items():
                parts.setdefault(key, []).append(np.asarray(values))
            owners.append(np.asarray(ids)[task.prediction_owners(batch)])
    records = [data.records[i] for i in np.concatenate(owners).tolist()] if owners else []
    columns = {
        "protein_id": [r.protein_id for r in records], "subset": [r.subset for r in records],
        **{k: np.concatenate(v) for k, v in parts.items()},
    }
    return pa.table(columns)


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("bihmf", "torch", "torch-geometric", "fair-esm", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


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


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warmup over the first ``warmup`` fraction of training, then cosine decay to 0."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-12, 1.0 - warmup))))


def make_optimizer(model: torch.nn.Module, train_cfg: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW with the fused kernel: one operator per step for all parameters instead of about
    thirty per parameter tensor (on a GPU, where the step is launch-bound, that decides)."""
    return torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"], fused=True)


def _amp(device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    """Mixed precision on CUDA: bf16 where supported (no scaler needed), else fp16 + GradScaler."""
    if device.type != "cuda":
        return nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


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
class RunData:
    """The proteins of a run as graphs (positions into ``records`` per split), with the cache they read.

    ``stream`` is set when the graphs carry no ESM rows (they did not fit the job's memory):
    each batch then reads its proteins' rows from the cache.
    """

    records: list[ProteinRecord]
    graphs: list[Data]
    splits: dict[str, list[int]]
    cache: EmbeddingCache | None  # None when the graphs carry their ESM rows already (calibration)
    cache_path: Path
    data_sha: str
    stream: EsmRows | None = None

    @property
    def train_targets(self) -> np.ndarray:
        return np.array([self.records[i].target for i in self.splits["train"]])

    def names(self, ids: list[int]) -> list[str]:
        return [self.records[i].protein_id for i in ids]

    def batch_graphs(self, ids: list[int]) -> list[Data]:
        if self.stream is None:
            return [self.graphs[i] for i in ids]
        return [with_rows(self.graphs[i], self.stream.of(self.records[i])) for i in ids]


@dataclass
class Trainer:
    """What one training step reads and updates."""

    spec: RunSpec
    cfg: dict[str, Any]
    model: ProteinModel
    task: ModuleType
    device: torch.device
    optimizer: torch.optim.Optimizer
    autocast: Any
    scaler: torch.amp.GradScaler | None
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
    preload = rows is not None and fits_in_memory(rows, records, mem_mb)
    held = rows.held(records) if preload else itertools.repeat(None, len(records))
    graphs = [protein_graph(r, esm, spec.graph_residues) for r, esm in zip(records, held, strict=True)]
    return RunData(
        records, graphs, _split_ids(records), cache, cache_path, file_digest(proteins_path, "sha256"),
        stream=rows if rows is not None and not preload else None,
    )


def _run_hash(spec: RunSpec, model_cfg: dict[str, Any], train_cfg: dict[str, Any], data_sha: str, cache_sha: str) -> str:
    """Identity of a run for resuming; thread count excluded (it does not change the recipe)."""
    recipe = {k: v for k, v in train_cfg.items() if k not in {"threads", "mem_mb", "runtime_min"}}
    return config_hash({"spec": asdict(spec), "model": model_cfg, "train": recipe, "data": data_sha, "cache": cache_sha})


def _save_last(trainer: Trainer) -> None:
    state = {
        "run_hash": trainer.run_hash,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler else None,
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
    trainer.model.load_state_dict(resumed["model"])
    trainer.optimizer.load_state_dict(resumed["optimizer"])
    if trainer.scaler is not None and resumed["scaler"]:
        trainer.scaler.load_state_dict(resumed["scaler"])
    torch.set_rng_state(resumed["torch_rng"])
    if resumed["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(resumed["cuda_rng"])
    trainer.progress = TrainProgress(**resumed["progress"])
    log.info("resuming after epoch %d from %s", trainer.progress.epoch, trainer.folder.last)
    return True


def _optimizer_step(trainer: Trainer, loss: torch.Tensor) -> None:
    """Backward, gradient clipping and the update, through the fp16 scaler when there is one."""
    scaler = trainer.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(trainer.optimizer)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.cfg["grad_clip"])
    if scaler is not None:
        scaler.step(trainer.optimizer)
        scaler.update()
    else:
        trainer.optimizer.step()


def epoch_batches(data: RunData, budget: int, seed: int, epoch: int) -> list[list[int]]:
    """The training batches of ``epoch``, packed by residue budget in an order drawn from the
    run's seed and the epoch alone: the batches of the next epoch are known, and prepared,
    while this one and its validation run, and a resumed run draws the same ones."""
    train = data.splits["train"]
    order = np.random.default_rng([seed, epoch]).permutation(len(train))
    sizes = [data.graphs[i].num_nodes for i in train]
    return [[train[j] for j in ids] for ids in residue_budget_batches(sizes, data.names(train), budget, order)]


def training_batches(trainer: Trainer, data: RunData, epochs: Iterable[int]) -> Iterator[tuple[list[int], Batch]]:
    """Every training batch of ``epochs`` in turn, on the device, through one background
    producer, so an epoch boundary (and the validation pass at it) never empties the queue."""
    budget, seed = trainer.cfg["residue_budget"], trainer.spec.seed
    plans = (ids for epoch in epochs for ids in epoch_batches(data, budget, seed, epoch))
    return device_batches(plans, data.batch_graphs, data.names, trainer.device)


def _train_epoch(trainer: Trainer, data: RunData, epoch: int, batches: Iterator[tuple[list[int], Batch]]) -> tuple[list[float], int]:
    """One pass over the training proteins, taking this epoch's batches from ``batches``
    (:func:`training_batches`); the losses and residues seen."""
    cfg = trainer.cfg
    trainer.model.train()
    steps = len(epoch_batches(data, cfg["residue_budget"], trainer.spec.seed, epoch))
    losses, residues = [], 0
    for step in range(steps):
        batch_ids, batch = next(batches)
        for group in trainer.optimizer.param_groups:
            group["lr"] = cfg["lr"] * lr_factor((epoch - 1 + step / steps) / cfg["epochs"], cfg["warmup_fraction"])
        trainer.optimizer.zero_grad()
        with trainer.autocast:
            loss = trainer.task.loss(trainer.model(batch), batch, trainer.model.head)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"epoch {epoch}: loss is {loss.item()} on proteins {data.names(batch_ids)}; "
                f"the last good state (epoch {trainer.progress.epoch}) stays in {trainer.folder.last}"
            )
        _optimizer_step(trainer, loss)
        losses.append(loss.item())
        residues += batch.num_nodes
    return losses, residues


@dataclass(frozen=True)
class StepTiming:
    """Training steps timed by the real loop (forward, loss, backward, clipping, update)."""

    steps: int
    residues: int
    seconds: float

    @property
    def seconds_per_residue(self) -> float:
        return self.seconds / self.residues


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_steps(
    spec: RunSpec, model: ProteinModel, records: list[ProteinRecord], graphs: list[Data], train_cfg: dict[str, Any],
    device: torch.device, steps: int,
) -> StepTiming:
    """Time at least ``steps`` training steps of ``model`` on in-memory training proteins (nothing written).

    `bihmf plan` prices a benchmark with this: it runs the epoch loop of :func:`train_run` itself
    (one untimed epoch first, for first-call costs), so a calibration cannot drift from training.
    ``records`` are the proteins of ``graphs``, all in the train split; the caller prepares the
    model's head (``task.prepare``).
    """
    optimizer = make_optimizer(model, train_cfg)
    autocast, scaler = _amp(device)
    trainer = Trainer(
        spec, train_cfg, model, TASKS[spec.task], device, optimizer, autocast, scaler,
        TrainProgress(), RunFolder(Path("calibration")), "calibration",
    )
    data = RunData(records, graphs, {"train": list(range(len(graphs)))}, None, Path(), "")
    done, residues, seconds = 0, 0, 0.0
    with closing(training_batches(trainer, data, itertools.count(1))) as batches:
        _train_epoch(trainer, data, 1, batches)
        for epoch in itertools.count(2):
            if done >= steps:
                break
            _synchronize(device)
            started = time.perf_counter()
            losses, seen = _train_epoch(trainer, data, epoch, batches)
            _synchronize(device)
            seconds += time.perf_counter() - started
            done, residues = done + len(losses), residues + seen
    return StepTiming(done, residues, seconds)


def _patience_spent(progress: TrainProgress, patience: int) -> bool:
    return progress.best_epoch >= 0 and progress.epoch - progress.best_epoch >= patience


def _end_epoch(trainer: Trainer, epoch: int, val: dict[str, float | None], losses: list[float], seconds: float) -> None:
    """Record the epoch on the curve, keep the best state by the selection metric, save ``last.pt``."""
    progress, metric = trainer.progress, trainer.task.SELECTION_METRIC
    progress.curve.append(
        {"epoch": epoch, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in val.items()}, "seconds": seconds}
    )
    progress.epoch = epoch
    score = val[metric]
    if score is None:  # undefined this epoch (constant predictions): counts as no gain
        score = -math.inf
    if score > progress.best_score or progress.best_epoch < 0:
        progress.best_score, progress.best_epoch = score, epoch
        progress.best_state = copy.deepcopy(trainer.model.state_dict())
    elif _patience_spent(progress, trainer.cfg["patience"]):
        log.info("early stop: no val %s gain for %d epochs", metric, trainer.cfg["patience"])
    progress.elapsed_s += seconds
    _save_last(trainer)
    record_attempt(trainer.folder.path)


def _fit(trainer: Trainer, data: RunData) -> None:
    """Epochs until the configured number or until patience runs out (a resumed run continues)."""
    cfg = trainer.cfg
    remaining = range(trainer.progress.epoch + 1, cfg["epochs"] + 1)
    with closing(training_batches(trainer, data, remaining)) as batches:
        while trainer.progress.epoch < cfg["epochs"] and not _patience_spent(trainer.progress, cfg["patience"]):
            _fit_epoch(trainer, data, batches)


def _fit_epoch(trainer: Trainer, data: RunData, batches: Iterator[tuple[list[int], Batch]]) -> None:
    """Train the next epoch, validate, log and record it."""
    cfg = trainer.cfg
    epoch = trainer.progress.epoch + 1
    started = time.time()
    losses, residues = _train_epoch(trainer, data, epoch, batches)
    val = _evaluate(trainer.model, trainer.task, data, "val", cfg["residue_budget"], trainer.device)
    seconds = time.time() - started
    log.info(
        "epoch %d/%d loss %.4f val %s | %.1f proteins/s %.0f residues/s",
        epoch, cfg["epochs"], float(np.mean(losses)), json.dumps({k: _rounded(v) for k, v in val.items()}),
        len(data.splits["train"]) / seconds, residues / seconds,
    )
    _end_epoch(trainer, epoch, val, losses, seconds)


def _provenance(trainer: Trainer, data: RunData, model_cfg: dict[str, Any], started: float, resumed: bool) -> dict[str, Any]:
    cache, device = data.cache, trainer.device
    return {
        "git_commit": _git_commit(),
        "config_hash": trainer.run_hash,
        "model_config": model_cfg,
        "train_config": trainer.cfg,
        "dataset_sha256": data.data_sha,
        "esm_checkpoint_sha256": cache.metadata["checkpoint_sha256"],
        "esm_layers_cached": cache.layers,
        # what `bihmf predict` needs to embed new sequences exactly like the cache, and find it
        "esm_cache": {**cache.metadata, "index": os.path.relpath(data.cache_path, trainer.folder.path)},
        "ligand_atoms": any(len(r.ligand_elems) for r in data.records),
        "packages": _package_versions(),
        "device": str(device),
        "wall_seconds": time.time() - started,
        "train_seconds": trainer.progress.elapsed_s,
        "resumed": resumed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
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
    optimizer = make_optimizer(model, train_cfg)
    autocast, scaler = _amp(device)
    trainer = Trainer(
        spec, train_cfg, model, task, device, optimizer, autocast, scaler,
        TrainProgress(best_state=copy.deepcopy(model.state_dict())), RunFolder(out_dir),
        _run_hash(spec, model_cfg, train_cfg, data.data_sha, cache.metadata["checkpoint_sha256"]),
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
    progress, model, folder = trainer.progress, trainer.model, trainer.folder
    model.load_state_dict(progress.best_state)
    budget = train_cfg["residue_budget"]
    metrics = {name: _evaluate(model, trainer.task, data, name, budget, trainer.device) for name in data.splits if name != "train"}
    record = RunRecord(
        path=folder.metrics, dataset=spec.dataset, encoder=spec.encoder, fusion=spec.fusion, seed=spec.seed, task=spec.task,
        metrics=metrics, best_epoch=progress.best_epoch, epochs_run=len(progress.curve),
        provenance={**_provenance(trainer, data, model_cfg, started, resumed), **(extra_provenance or {})},
    )
    write_model(folder.model, SavedModel(spec, model_cfg, progress.best_state, progress.best_epoch))
    write_curve(folder.curve, progress.curve)
    write_test_predictions(folder.test_predictions, predictions_by_protein(model, trainer.task, data, budget, trainer.device))
    write_record(record)
    record_attempt(folder.path)
    _log_summary(record, trainer.task, progress, trainer.device)
    return record
