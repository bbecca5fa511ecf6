"""Training-step pieces shared by the benchmarks that train (train_step, data_path, model_cost).

They build what ``bihmf.training.train_run`` builds (``build_model``, ``protein_graph``,
``collate``) and step through its :class:`bihmf.engine.Engine` (the task's loss under the
device's mixed precision, backward, gradient clipping, the fused AdamW), so a benchmark step
is the training step; kept apart from ``bench.common`` because importing the models pulls in torch_geometric,
which the embed benchmark's child processes do not need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch

from bench.common import schema_defaults
from bihmf.data.schema import ProteinRecord, write_proteins
from bihmf.esm_cache import EmbedSettings, read_chains, shard_name, write_index
from bihmf.esm_writer import embed_shard
from bihmf.models.fusion import FusionContext
from bihmf.engine import Engine, precision_name
from bihmf.models.model import build_model
from bihmf.tasks import TASKS
from bihmf.batching import collate, protein_graph

TASK = "residue_binary"  # PPBS's task: a loss on every residue, the heaviest head per protein


def trainable(encoder: str, fusion: str, context: FusionContext, device: torch.device) -> Engine:
    """A seeded model with the schema's default sizes (the full benchmark's) in the engine that
    trains it: ``engine.step(batch)`` is one training step."""
    defaults = schema_defaults()
    torch.manual_seed(0)
    model = build_model(encoder, fusion, TASK, defaults["model"], context).to(device).train()
    return Engine.build(model, TASKS[TASK], defaults["train"], device)


def batch_of(records: list[ProteinRecord], embeddings: list[np.ndarray | None], device: torch.device) -> Batch:
    """Graphs of ``records`` with their ESM rows, collated onto ``device``."""
    return collate([protein_graph(r, e) for r, e in zip(records, embeddings, strict=True)], device)


def step_setup(device: torch.device) -> dict[str, Any]:
    """How a step's numbers are produced, for the result files."""
    defaults = schema_defaults()
    return {"task": TASK, "model": defaults["model"], "lr": defaults["train"]["lr"], "autocast": precision_name(device)}


def build_cache(checkpoint: Path, records: list[ProteinRecord], layers: list[int], folder: Path) -> Path:
    """The embed stage's output for ``records`` (untimed: it runs once per dataset, not per step)."""
    esm = schema_defaults()["esm"]
    proteins, shard = folder / "proteins.parquet", folder / shard_name(0, 1)
    write_proteins(records, proteins)
    embed_shard(checkpoint, proteins, layers, 0, 1, shard, EmbedSettings.from_config(esm), device=torch.device("cpu"))
    write_index(folder / "index.parquet", [shard], read_chains(proteins))
    return folder / "index.parquet"
