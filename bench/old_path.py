"""The training data path as it was before batched edges and the batch producer, for
side-by-side benchmarks and equality tests only (bihmf itself never imports this module).

``old_path()`` swaps it into the encoders for a ``with`` block: the per-protein kNN / radius
loops below (the edges are the same as bihmf.models.graph's, built with a Python loop per
protein) and a synchronous collate of float32 rows of every cached layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

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

