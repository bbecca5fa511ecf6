"""The training data path as it was before batched edges and the batch producer, for
side-by-side benchmarks and equality tests only (bihmf itself never imports this module).

``old_edges()`` swaps, for a ``with`` block, into the encoders the per-protein kNN / radius
loops below (the edges are the same as bihmf.models.graph's, built with a Python loop per
protein); ``old_collate``, the batch assembled inside the step with float32 rows of every
cached layer and copied synchronously; and ``old_adamw``, the unfused optimiser.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from bench.common import schema_defaults
from bihmf.batching import CHAIN_STRIDE

ENCODER_MODULES = ("gvp", "egnn", "gearnet", "pronet")


def per_protein_knn_edges(ca: Tensor, batch: Tensor, k: int, block: int = 1024) -> Tensor:
    """kNN edges as bihmf built them before batching: one loop iteration per protein."""
    sources, targets = [], []
    for protein in torch.unique(batch):
        idx = torch.nonzero(batch == protein).flatten()
        pos = ca[idx]
        kk = min(k, len(idx) - 1)
        if kk <= 0:
            continue
        for start in range(0, len(idx), block):
            dist = torch.cdist(pos[start : start + block], pos)
            rows = torch.arange(dist.shape[0], device=ca.device)
            dist[rows, rows + start] = math.inf
            nearest = dist.topk(kk, dim=1, largest=False).indices
            targets.append(idx[start : start + block].repeat_interleave(kk))
            sources.append(idx[nearest.flatten()])
    if not sources:
        return torch.zeros(2, 0, dtype=torch.long, device=ca.device)
    return torch.stack([torch.cat(sources), torch.cat(targets)])


def per_protein_radius_edges(pos: Tensor, batch: Tensor, cutoff: float, block: int = 1024) -> Tensor:
    """Radius edges as bihmf built them before batching: one loop iteration per protein."""
    sources, targets = [], []
    for protein in torch.unique(batch):
        idx = torch.nonzero(batch == protein).flatten()
        nodes = pos[idx]
        for start in range(0, len(idx), block):
            dist = torch.cdist(nodes[start : start + block], nodes, compute_mode="donot_use_mm_for_euclid_dist")
            rows = torch.arange(dist.shape[0], device=pos.device)
            dist[rows, rows + start] = math.inf
            row, col = torch.nonzero(dist < cutoff, as_tuple=True)
            targets.append(idx[row + start])
            sources.append(idx[col])
    if not sources:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    return torch.stack([torch.cat(sources), torch.cat(targets)])



@contextmanager
def old_edges() -> Iterator[None]:
    """The per-protein edge loops in place of the batched ones, in every encoder, for a block."""
    modules = [importlib.import_module(f"bihmf.models.encoders.{name}") for name in ENCODER_MODULES]
    swaps = {"knn_edges": per_protein_knn_edges, "radius_edges": per_protein_radius_edges}
    saved = [(m, name, getattr(m, name)) for m in modules for name in swaps if hasattr(m, name)]
    try:
        for m, name, _ in saved:
            setattr(m, name, swaps[name])
        yield
    finally:
        for m, name, original in saved:
            setattr(m, name, original)


def old_collate(graphs: list[Data], device: torch.device) -> Batch:
    """The batch as the step built it before: assembled in the step, float32 rows, a blocking copy."""
    batch = Batch.from_data_list(graphs, follow_batch=["ligand_pos"]).to(device)
    batch.chain_index = batch.batch * CHAIN_STRIDE + batch.chain
    return batch


def old_adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    """The optimiser as built before: AdamW's default implementation (per-parameter on a CPU,
    foreach on a GPU) instead of the fused kernel."""
    defaults = schema_defaults()["train"]
    return torch.optim.AdamW(model.parameters(), lr=defaults["lr"], weight_decay=defaults["weight_decay"])
