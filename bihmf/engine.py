"""The training step, the epoch and evaluation, shared by everything that trains a model.

`train_run` (bihmf/training.py) runs its epochs through an :class:`Engine`, `bihmf plan`
times steps with :func:`time_training_steps`, and the benchmarks in bench/ take their steps
with :meth:`Engine.step`: a calibrated or benchmarked step is the training step (forward
under mixed precision, the task's loss, the finiteness check, backward, gradient clipping,
the fused AdamW update), never a copy of it.

What an :class:`Engine` does not know is the run folder: saving, resuming and early
stopping belong to the train stage.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Batch, Data

from bihmf.batching import in_order_batches, residue_budget_batches
from bihmf.data.schema import ProteinRecord
from bihmf.esm_cache import EmbeddingCache
from bihmf.loader import EsmRows, RowsPlacement, device_batches, with_rows
from bihmf.models.model import ProteinModel
from bihmf.run import RunSpec
from bihmf.tasks import TASKS


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the update of that step is not applied."""


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warmup over the first ``warmup`` fraction of training, then cosine decay to 0."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-12, 1.0 - warmup))))


def make_optimizer(model: torch.nn.Module, train_cfg: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW with the fused kernel: one operator per step for all parameters instead of about
    thirty per parameter tensor (on a GPU, where the step is launch-bound, that decides)."""
    return torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"], fused=True)


def mixed_precision(device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    """Mixed precision on CUDA: bf16 where supported (no scaler needed), else fp16 + GradScaler."""
    if device.type != "cuda":
        return nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def precision_name(device: torch.device) -> str:
    """What :func:`mixed_precision` picks on ``device``, for result files and logs."""
    if device.type != "cuda":
        return "none"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16 + GradScaler"


@dataclass
class RunData:
    """The proteins of a run as graphs (positions into ``records`` per split), with the cache they read.

    ``stream`` is set when the graphs carry no ESM rows (they did not fit the job's memory):
    each batch then reads its proteins' rows from the cache; ``placement`` says which and why.
    """

    records: list[ProteinRecord]
    graphs: list[Data]
    splits: dict[str, list[int]]
    cache: EmbeddingCache | None  # None when the graphs carry their ESM rows already (calibration)
    cache_path: Path
    data_sha: str
    stream: EsmRows | None = None
    placement: RowsPlacement | None = None

    @property
    def train_targets(self) -> np.ndarray:
        return np.array([self.records[i].target for i in self.splits["train"]])

    def names(self, ids: list[int]) -> list[str]:
        return [self.records[i].protein_id for i in ids]

    def batch_graphs(self, ids: list[int]) -> list[Data]:
        if self.stream is None:
            return [self.graphs[i] for i in ids]
        return [with_rows(self.graphs[i], self.stream.of(self.records[i])) for i in ids]

    def in_order(self, ids: list[int], budget: int) -> list[list[int]]:
        """Batches of the proteins ``ids`` in their order (evaluation and test predictions: no shuffling)."""
        return [[ids[j] for j in batch] for batch in in_order_batches([self.graphs[i] for i in ids], budget)]


def epoch_batches(data: RunData, budget: int, seed: int, epoch: int) -> list[list[int]]:
    """The training batches of ``epoch``, packed by residue budget in an order drawn from the
    run's seed and the epoch alone: the batches of the next epoch are known, and prepared,
    while this one and its validation run, and a resumed run draws the same ones."""
    train = data.splits["train"]
    order = np.random.default_rng([seed, epoch]).permutation(len(train))
    sizes = [data.graphs[i].num_nodes for i in train]
    return [[train[j] for j in ids] for ids in residue_budget_batches(sizes, data.names(train), budget, order)]


Batches = Iterator[tuple[list[int], Batch]]  # (protein positions, batch on the device), as device_batches yields them


@dataclass
class Engine:
    """A model with its task, optimiser and mixed precision: the step, the epoch and evaluation.

    ``cfg`` is the train config: ``lr``, ``weight_decay``, ``grad_clip``, ``residue_budget``,
    ``epochs`` and ``warmup_fraction`` (the learning-rate schedule of :meth:`epoch`).
    """

    model: ProteinModel
    task: ModuleType
    cfg: dict[str, Any]
    device: torch.device
    optimizer: torch.optim.Optimizer
    autocast: Any
    scaler: torch.amp.GradScaler | None

    @classmethod
    def build(cls, model: ProteinModel, task: ModuleType, cfg: dict[str, Any], device: torch.device) -> Engine:
        """The engine training uses: fused AdamW and the device's mixed precision."""
        return cls(model, task, cfg, device, make_optimizer(model, cfg), *mixed_precision(device))

    def step(self, batch: Batch) -> float:
        """One training step on ``batch``; its loss. A non-finite loss raises
        :class:`NonFiniteLossError` before any update."""
        self.optimizer.zero_grad()
        with self.autocast:
            loss = self.task.loss(self.model(batch), batch, self.model.head)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()}")
        scaler = self.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["grad_clip"])
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        return loss.item()

    def batches(self, data: RunData, seed: int, epochs: Iterable[int]) -> Batches:
        """Every training batch of ``epochs`` in turn, on the device, through one background
        producer, so an epoch boundary (and the validation pass at it) never empties the queue."""
        plans = (ids for epoch in epochs for ids in epoch_batches(data, self.cfg["residue_budget"], seed, epoch))
        return device_batches(plans, data.batch_graphs, data.names, self.device)

    def epoch(self, data: RunData, seed: int, epoch: int, batches: Batches) -> tuple[list[float], int]:
        """One pass over the training proteins under the warmup-cosine schedule, taking this
        epoch's batches from ``batches`` (:meth:`batches`); the losses and residues seen."""
        cfg = self.cfg
        self.model.train()
        steps = len(epoch_batches(data, cfg["residue_budget"], seed, epoch))
        losses, residues = [], 0
        for step in range(steps):
            batch_ids, batch = next(batches)
            for group in self.optimizer.param_groups:
                group["lr"] = cfg["lr"] * lr_factor((epoch - 1 + step / steps) / cfg["epochs"], cfg["warmup_fraction"])
            try:
                losses.append(self.step(batch))
            except NonFiniteLossError as error:
                raise NonFiniteLossError(f"epoch {epoch}: {error} on proteins {data.names(batch_ids)}") from None
            residues += batch.num_nodes
        return losses, residues

    def evaluate(self, data: RunData, split: str) -> dict[str, float]:
        """The task's metrics of the model on ``split``."""
        self.model.eval()
        batches = data.in_order(data.splits[split], self.cfg["residue_budget"])
        parts = []
        with torch.no_grad():
            for _, batch in device_batches(batches, data.batch_graphs, data.names, self.device):
                parts.append(self.task.predictions(self.model(batch), batch, self.model.head))
        return self.task.evaluate(parts)

    def test_predictions(self, data: RunData) -> pa.Table:
        """The task's evaluation rows for every test protein, tagged with protein id and subset.

        The report bootstraps test metrics over proteins for single-seed runs, so each row must be
        attributable to its protein: the test proteins go through the model in batches of the
        residue budget, and the task names the protein of each row (``prediction_owners``).
        """
        self.model.eval()
        tested = [i for i, record in enumerate(data.records) if record.split == "test"]
        owners: list[np.ndarray] = []
        parts: dict[str, list[np.ndarray]] = {}
        with torch.no_grad():
            for ids, batch in device_batches(data.in_order(tested, self.cfg["residue_budget"]), data.batch_graphs, data.names, self.device):
                for key, values in self.task.predictions(self.model(batch), batch, self.model.head).items():
                    parts.setdefault(key, []).append(np.asarray(values))
                owners.append(np.asarray(ids)[self.task.prediction_owners(batch)])
        records = [data.records[i] for i in np.concatenate(owners).tolist()] if owners else []
        columns = {
            "protein_id": [r.protein_id for r in records], "subset": [r.subset for r in records],
            **{k: np.concatenate(v) for k, v in parts.items()},
        }
        return pa.table(columns)

    def state_dict(self) -> dict[str, Any]:
        """What resuming the engine needs: model, optimiser and scaler states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])


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

    `bihmf plan` prices a benchmark with this: it runs :meth:`Engine.epoch`, the epoch of
    ``train_run`` (one untimed epoch first, for first-call costs), so a calibration cannot
    drift from training. ``records`` are the proteins of ``graphs``, all in the train split;
    the caller prepares the model's head (``task.prepare``).
    """
    engine = Engine.build(model, TASKS[spec.task], train_cfg, device)
    data = RunData(records, graphs, {"train": list(range(len(graphs)))}, None, Path(), "")
    done, residues, seconds = 0, 0, 0.0
    with closing(engine.batches(data, spec.seed, itertools.count(1))) as batches:
        engine.epoch(data, spec.seed, 1, batches)
        for epoch in itertools.count(2):
            if done >= steps:
                break
            _synchronize(device)
            started = time.perf_counter()
            losses, seen = engine.epoch(data, spec.seed, epoch, batches)
            _synchronize(device)
            seconds += time.perf_counter() - started
            done, residues = done + len(losses), residues + seen
    return StepTiming(done, residues, seconds)
