"""Protein-level head shared by graph tasks: a readout of bihmf.tasks.heads (pooling + MLP).

docs/paper.md choice 4: by default protein tasks pool the final fused residue states with both a
mean (robust for small proteins) and a learned attention pooling (lets a few residues, e.g. an
active site, dominate), concatenated; ``model.readout`` may choose an encoder's published
readout instead (bihmf.tasks.heads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor, nn

from bihmf.tasks.heads import DEFAULT_READOUT, READOUT_OPTION, READOUTS


class GraphHead(nn.Module):
    """Pooling followed by an MLP to ``out_dim`` values per protein."""

    def __init__(self, width: int, out_dim: int, dropout: float, options: dict[str, Any]):
        super().__init__()
        self.pool, self.mlp = READOUTS[options.get(READOUT_OPTION, DEFAULT_READOUT)](width, out_dim, dropout)

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        return self.mlp(self.pool(residues, graph))


def one_row_per_graph(graph: Any) -> np.ndarray:
    """Prediction owners of a protein-level task: row k belongs to graph k of the batch."""
    return np.arange(graph.num_graphs)
