"""Protein-level readout shared by graph tasks: mean + attention pooling over residues.

docs/paper.md choice 4: protein tasks pool the final fused residue states with both a mean (robust
for small proteins) and a learned attention pooling (lets a few residues, e.g. an active
site, dominate); the two are concatenated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax


class MeanAttentionPool(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        """[N, width] residue states -> [num proteins, 2 * width]."""
        batch, size = graph.batch, graph.num_graphs
        mean = scatter(residues, batch, dim=0, dim_size=size, reduce="mean")
        weights = softmax(self.score(residues).squeeze(-1), batch, num_nodes=residues.shape[0])
        attended = scatter(weights.unsqueeze(-1) * residues, batch, dim=0, dim_size=size, reduce="sum")
        return torch.cat([mean, attended], dim=-1)


class GraphHead(nn.Module):
    """Pooling followed by an MLP to ``out_dim`` values per protein."""

    def __init__(self, width: int, out_dim: int, dropout: float):
        super().__init__()
        self.pool = MeanAttentionPool(width)
        self.mlp = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, out_dim))

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        return self.mlp(self.pool(residues, graph))


def one_row_per_graph(graph: Any) -> np.ndarray:
    """Prediction owners of a protein-level task: row k belongs to graph k of the batch."""
    return np.arange(graph.num_graphs)
