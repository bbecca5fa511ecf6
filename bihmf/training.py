"""The train stage: one (dataset, encoder, fusion, seed) run from tables to metrics.

Batches are packed by residue count (``residue_budget``), not protein count, so memory
scales with residues; a single protein larger than the budget is an error naming it.
Runs are deterministic on CPU for a given seed (seeded torch/numpy, deterministic
algorithms, data order from a seeded generator).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import resource
import subprocess
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch_geometric.data import Batch, Data

from bihmf.data.schema import ProteinRecord, read_proteins
from bihmf.data.structure import STANDARD_AA
from bihmf.download import file_digest
from bihmf.esm_cache import EmbeddingCache
from bihmf.io import atomic_output, write_json_atomic, write_text_atomic
from bihmf.models.fusion import FusionContext
from bihmf.models.graph import element_index
from bihmf.models.model import ProteinModel, build_model, reads_esm
from bihmf.tasks import TASKS

log = logging.getLogger(__name__)

RESIDUE_INDEX = {aa: i for i, aa in enumerate(STANDARD_AA)}  # anything else -> 20 (X)
CHAIN_STRIDE = 1 << 16  # chain_index = protein-in-batch * CHAIN_STRIDE + chain-in-protein


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    encoder: str
    fusion: str
    seed: int
    task: str
    task_options: dict[str, Any] = field(default_factory=dict)  # e.g. num_classes
    graph_residues: str = "all"  # "pocket": only residues marked in labels (LBA)


def residue_mask(record: ProteinRecord, residues: str) -> np.ndarray:
    """Which residues enter the graph: all, or the marked pocket (LBA marks it in ``labels``)."""
    if residues == "all":
        return np.ones(len(record.sequence), dtype=bool)
    mask = record.labels == 1
    if not mask.any():
        raise ValueError(f"{record.protein_id}: graph_residues=pocket but no residue is marked as pocket")
    return mask


def protein_graph(record: ProteinRecord, esm: np.ndarray | None, residues: str = "all") -> Data:
    """One protein as a PyG graph (edges are built on the device, inside the encoder).

    With ``residues="pocket"`` only pocket residues become nodes; their ESM rows come from the
    full-chain embedding, so they keep the context of their chain positions.
    """
    keep = residue_mask(record, residues)
    chain_ids = [c for c, k in zip(record.chain_ids, keep) if k]
    chain_names = {name: i for i, name in enumerate(dict.fromkeys(chain_ids))}
    sequence = [aa for aa, k in zip(record.sequence, keep) if k]
    n = len(sequence)
    data = Data(
        residue_type=torch.tensor([RESIDUE_INDEX.get(aa, 20) for aa in sequence], dtype=torch.long),
        coords=torch.from_numpy(record.coords[keep].copy()),
        chain=torch.tensor([chain_names[c] for c in chain_ids], dtype=torch.long),
        y=torch.from_numpy(record.labels[keep].astype(np.int64)),
        residue_weight=torch.full((n,), record.weight, dtype=torch.float32),
        target=torch.tensor([record.target], dtype=torch.float32),
        group=record.group,
        ligand_pos=torch.from_numpy(record.ligand_xyz.astype(np.float32).reshape(-1, 3).copy()),
        ligand_type=torch.tensor(element_index(record.ligand_elems), dtype=torch.long),
        num_nodes=n,
    )
    if esm is not None:
        data.esm = torch.from_numpy(esm[keep])
    return data


def collate(graphs: list[Data], device: torch.device) -> Batch:
    batch = Batch.from_data_list(graphs, follow_batch=["ligand_pos"]).to(device)
    batch.chain_index = batch.batch * CHAIN_STRIDE + batch.chain
    return batch


def residue_budget_batches(sizes: list[int], names: list[str], budget: int, order: np.ndarray) -> list[list[int]]:
    """Pack proteins, visited in ``order``, into batches of at most ``budget`` residues."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order.tolist():
        if sizes[i] > budget:
            raise ValueError(
                f"protein {names[i]} has {sizes[i]} residues, more than train.residue_budget={budget}; "
                "raise the budget (or crop the protein in preprocessing)"
            )
        if current and used + sizes[i] > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        batches.append(current)
    return batches


def _evaluate(model: ProteinModel, task: Any, graphs: list[Data], budget: int, device: torch.device) -> dict[str, float]:
    model.eval()
    sizes = [g.num_nodes for g in graphs]
    parts = []
    with torch.no_grad():
        for batch_ids in residue_budget_batches(sizes, [str(i) for i in range(len(graphs))], budget, np.arange(len(graphs))):
            batch = collate([graphs[i] for i in batch_ids], device)
            parts.append(task.predictions(model(batch), batch, model.head))
    return task.evaluate(parts)


TEST_PREDICTIONS = "test_predictions.parquet"


def predictions_by_protein(
    model: ProteinModel, task: Any, records: list[ProteinRecord], graphs: list[Data], device: torch.device
) -> pa.Table:
    """The task's evaluation rows for every test protein, tagged with protein id and subset.

    The report bootstraps test metrics over proteins for single-seed runs, so each row must be
    attributable to its protein: proteins go through the model one at a time (the task's
    ``predictions`` drop unlabelled residues, so rows of a batch cannot be split afterwards).
    """
    model.eval()
    ids: list[str] = []
    subsets: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for record, graph in zip(records, graphs):
            if record.split != "test":
                continue
            batch = collate([graph], device)
            part = task.predictions(model(batch), batch, model.head)
            rows = len(next(iter(part.values())))
            ids.extend([record.protein_id] * rows)
            subsets.extend([record.subset] * rows)
            for key, values in part.items():
                parts.setdefault(key, []).append(np.asarray(values))
    columns = {"protein_id": ids, "subset": subsets, **{k: np.concatenate(v) for k, v in parts.items()}}
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


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        log.info("device: cuda (%s)", torch.cuda.get_device_name(0))
        return torch.device("cuda")
    log.info("device: cpu (no CUDA device visible; training on CPU)")
    return torch.device("cpu")


def _split_graphs(records: list[ProteinRecord], graphs: list[Data]) -> dict[str, list[Data]]:
    """Graphs per evaluation split: 'train', 'val', 'test' and 'test_<subset>' for each test subset."""
    splits: dict[str, list[Data]] = {}
    for record, graph in zip(records, graphs):
        splits.setdefault(record.split, []).append(graph)
        if record.split == "test" and record.subset:
            splits.setdefault(f"test_{record.subset}", []).append(graph)
    missing = {"train", "val", "test"} - set(splits)
    if missing:
        raise ValueError(f"dataset has no proteins in split(s) {sorted(missing)}")
    return splits


def _curve_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


LAST_CHECKPOINT = "last.pt"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warmup over the first ``warmup`` fraction of training, then cosine decay to 0."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-12, 1.0 - warmup))))


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


def _save_last(out_dir: Path, run_hash: str, model: ProteinModel, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, order_rng: np.random.Generator, progress: TrainProgress) -> None:
    state = {
        "run_hash": run_hash,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "order_rng": order_rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "progress": asdict(progress),
    }
    with atomic_output(out_dir / LAST_CHECKPOINT) as tmp:
        torch.save(state, tmp)


def _load_last(out_dir: Path, run_hash: str) -> dict[str, Any] | None:
    """The last epoch checkpoint of this very run, or None (absent, or from another config)."""
    path = out_dir / LAST_CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["run_hash"] != run_hash:
        log.warning("%s belongs to another configuration; starting afresh", path)
        return None
    return state


def _run_hash(spec: RunSpec, model_cfg: dict[str, Any], train_cfg: dict[str, Any], data_sha: str, cache_sha: str) -> str:
    """Identity of a run for resuming; thread count excluded (it does not change the recipe)."""
    recipe = {k: v for k, v in train_cfg.items() if k not in {"threads", "mem_mb", "runtime_min"}}
    return config_hash({"spec": asdict(spec), "model": model_cfg, "train": recipe, "data": data_sha, "cache": cache_sha})


def train_run(
    spec: RunSpec,
    proteins_path: Path,
    cache_path: Path,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    out_dir: Path,
) -> dict[str, Any]:
    """Train one run and write ``metrics.json``, ``model.pt`` (best epoch) and ``curve.csv``.

    After every epoch the full training state goes to ``last.pt``; a rerun of a killed job
    continues from it and ends with the same metrics as an uninterrupted run.
    """
    started = time.time()
    torch.manual_seed(spec.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(train_cfg["threads"])
    device = pick_device()
    task = TASKS[spec.task]

    cache = EmbeddingCache(cache_path)
    context = FusionContext(
        esm_dim=int(cache.metadata["embed_dim"]),
        cache_layers=tuple(cache.layers),
        esm_depth=int(cache.metadata["esm_depth"]),
        explicit_layers=model_cfg["esm_layers"],
    )
    model = build_model(spec.encoder, spec.fusion, spec.task, model_cfg, context, spec.task_options).to(device)
    with_esm = reads_esm(spec.fusion, context, model_cfg["num_layers"])
    records = read_proteins(proteins_path)
    graphs = [protein_graph(r, cache.protein(r) if with_esm else None, spec.graph_residues) for r in records]
    splits = _split_graphs(records, graphs)
    train_graphs = splits["train"]
    train_names = [r.protein_id for r in records if r.split == "train"]
    task.prepare(model.head, np.array([r.target for r in records if r.split == "train"]))
    budget = train_cfg["residue_budget"]
    data_sha = file_digest(proteins_path, "sha256")
    run_hash = _run_hash(spec, model_cfg, train_cfg, data_sha, cache.metadata["checkpoint_sha256"])

    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    autocast, scaler = _amp(device)
    order_rng = np.random.default_rng(spec.seed)
    progress = TrainProgress(best_state=copy.deepcopy(model.state_dict()))
    resumed = _load_last(out_dir, run_hash)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        if scaler is not None and resumed["scaler"]:
            scaler.load_state_dict(resumed["scaler"])
        order_rng.bit_generator.state = resumed["order_rng"]
        torch.set_rng_state(resumed["torch_rng"])
        if resumed["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resumed["cuda_rng"])
        progress = TrainProgress(**resumed["progress"])
        log.info("resuming after epoch %d from %s", progress.epoch, out_dir / LAST_CHECKPOINT)

    epochs = train_cfg["epochs"]
    stopped = progress.best_epoch >= 0 and progress.epoch - progress.best_epoch >= train_cfg["patience"]
    while progress.epoch < epochs and not stopped:
        epoch = progress.epoch + 1
        model.train()
        epoch_start = time.time()
        order = order_rng.permutation(len(train_graphs))
        batches = residue_budget_batches([g.num_nodes for g in train_graphs], train_names, budget, order)
        losses, residues = [], 0
        for step, batch_ids in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = train_cfg["lr"] * lr_factor((epoch - 1 + step / len(batches)) / epochs, train_cfg["warmup_fraction"])
            batch = collate([train_graphs[i] for i in batch_ids], device)
            optimizer.zero_grad()
            with autocast:
                loss = task.loss(model(batch), batch, model.head)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"epoch {epoch}: loss is {loss.item()} on proteins {[train_names[i] for i in batch_ids]}; "
                    f"the last good state (epoch {progress.epoch}) stays in {out_dir / LAST_CHECKPOINT}"
                )
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg["grad_clip"])
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            losses.append(loss.item())
            residues += batch.num_nodes
        val = _evaluate(model, task, splits["val"], budget, device)
        seconds = time.time() - epoch_start
        progress.curve.append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in val.items()}, "seconds": seconds}
        )
        log.info(
            "epoch %d/%d loss %.4f val %s | %.1f proteins/s %.0f residues/s",
            epoch, epochs, progress.curve[-1]["train_loss"], json.dumps({k: _rounded(v) for k, v in val.items()}),
            len(train_graphs) / seconds, residues / seconds,
        )
        progress.epoch = epoch
        score = val[task.SELECTION_METRIC]
        if score is None:  # undefined this epoch (constant predictions): counts as no gain
            score = -math.inf
        if score > progress.best_score or progress.best_epoch < 0:
            progress.best_score, progress.best_epoch = score, epoch
            progress.best_state = copy.deepcopy(model.state_dict())
        elif epoch - progress.best_epoch >= train_cfg["patience"]:
            log.info("early stop: no val %s gain for %d epochs", task.SELECTION_METRIC, train_cfg["patience"])
            stopped = True
        progress.elapsed_s += seconds
        _save_last(out_dir, run_hash, model, optimizer, scaler, order_rng, progress)

    best_state, best_epoch, curve = progress.best_state, progress.best_epoch, progress.curve
    model.load_state_dict(best_state)
    metrics = {
        name: _evaluate(model, task, graph_list, budget, device)
        for name, graph_list in splits.items()
        if name != "train"
    }
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "dataset": spec.dataset,
        "encoder": spec.encoder,
        "fusion": spec.fusion,
        "seed": spec.seed,
        "task": spec.task,
        "metrics": metrics,
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "provenance": {
            "git_commit": _git_commit(),
            "config_hash": run_hash,
            "model_config": model_cfg,
            "train_config": train_cfg,
            "dataset_sha256": data_sha,
            "esm_checkpoint_sha256": cache.metadata["checkpoint_sha256"],
            "esm_layers_cached": cache.layers,
            # what `bihmf predict` needs to embed new sequences exactly like the cache, and find it
            "esm_cache": {**cache.metadata, "index": os.path.relpath(cache_path, out_dir)},
            "ligand_atoms": any(len(r.ligand_elems) for r in records),
            "packages": _package_versions(),
            "device": str(device),
            "wall_seconds": time.time() - started,
            "train_seconds": progress.elapsed_s,
            "resumed": resumed is not None,
            "peak_rss_mb": peak_mb,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    }
    with atomic_output(out_dir / "model.pt") as tmp:
        torch.save({"state_dict": best_state, "spec": asdict(spec), "model_config": model_cfg, "epoch": best_epoch}, tmp)
    write_text_atomic(out_dir / "curve.csv", _curve_csv(curve))
    with atomic_output(out_dir / TEST_PREDICTIONS) as tmp:
        pq.write_table(predictions_by_protein(model, task, records, graphs, device), tmp)
    write_json_atomic(out_dir / "metrics.json", result)
    selection = _rounded(metrics["val"][task.SELECTION_METRIC])
    test = {k: _rounded(v) for k, v in metrics["test"].items()}
    log.info(
        "summary %s/%s/%s/seed%d: %d epochs (best %d), val %s %s, test %s, %.0f s on %s",
        spec.dataset, spec.encoder, spec.fusion, spec.seed, len(curve), best_epoch,
        task.SELECTION_METRIC, selection, json.dumps(test), progress.elapsed_s, device,
    )
    return result
