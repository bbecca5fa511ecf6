"""EGNN (Satorras, Hoogeboom & Welling, ICML 2021): E(n)-equivariant message passing on CA atoms.

Layer l, the paper's Eqs. (3)-(6), over the edges j -> i of the graph:

    m_ij    = phi_e(h_i, h_j, ||x_i - x_j||^2, a_ij)                  (3)
    x_i    <- x_i + C * sum_{j != i} (x_i - x_j) * phi_x(m_ij)        (4)
    m_i     = sum_{j != i} m_ij                                      (5)
    h_i    <- phi_h(h_i, m_i)                                        (6)

with the MLPs of the paper's appendix: phi_e = Linear-SiLU-Linear-SiLU, phi_x = Linear-SiLU-
Linear to one scalar, phi_h = Linear-SiLU-Linear plus the residual h_i. As in the authors' code
(vgsatorras/egnn), phi_x's last layer has no bias and starts near zero (Xavier, gain 0.001), so
the first steps keep the input geometry, and a linear map of h (their ``embedding_out``) follows
the last layer. ``h`` only ever sees
distances, so it is invariant and is the ``state.s`` fusion reads; the coordinates ``x``
(residue CA rows, then ligand atoms) rotate and reflect with the input and live in
``state.extra["x"]``.

Graph and M: the paper connects all M nodes and sets C = 1/(M - 1), one over the number of
terms j != i of the sum. A protein's complete graph is O(N^2), so the graph here is the CA (+
ligand atom) kNN graph built once from the input coordinates (k = ``knn``); the sums run over
a node's k neighbours, never over the node itself, and M - 1 is that neighbour count (k, or
every other node of a protein smaller than k + 1). Squared distances are recomputed from the
updated coordinates in every layer, in Å^2 as the coordinates are in Å.

Edge attributes a_ij: a sinusoidal encoding of the sequence offset (0 when a ligand atom is an
endpoint), as in the GVP encoder; node inputs: fusion's features plus sin/cos of the backbone
dihedrals (all invariant), embedded linearly, ligand atoms by element type. Two additions the
paper does not have and that leave its function unchanged in evaluation: dropout (the encoders'
``dropout`` setting) on phi_h's output before the residual, and no coordinate update in the last
layer, whose coordinates nothing reads (its phi_x would be a parameter without gradient).
``vector_dim`` is unused (EGNN carries one coordinate per node, no vector channels).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.graph import (
    OTHER_ELEMENT,
    backbone_dihedrals,
    chain_breaks,
    knn_edges,
    positional_encoding,
    residue_and_ligand_nodes,
)

OFFSET_FEATURES = 16


def _small_linear(width: int) -> nn.Linear:
    """phi_x's output layer as the authors initialise it: coordinate steps start near zero."""
    layer = nn.Linear(width, 1, bias=False)
    nn.init.xavier_uniform_(layer.weight, gain=0.001)
    return layer


class EGNNLayer(nn.Module):
    """One equivariant graph convolutional layer (EGCL), Eqs. (3)-(6)."""

    def __init__(self, width: int, edge_features: int, dropout: float, update_coords: bool):
        super().__init__()
        self.phi_e = nn.Sequential(
            nn.Linear(2 * width + 1 + edge_features, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
        )
        self.phi_x = nn.Sequential(nn.Linear(width, width), nn.SiLU(), _small_linear(width)) if update_coords else None
        self.phi_h = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        """``edge_index`` row 0 = source j, row 1 = target i; self-pairs must not be listed."""
        src, dst = edge_index
        diff = x[dst] - x[src]  # x_i - x_j
        squared = (diff * diff).sum(-1, keepdim=True)
        m = self.phi_e(torch.cat([h[dst], h[src], squared, edge_attr], dim=-1))
        if self.phi_x is not None:
            terms = scatter(diff * self.phi_x(m), dst, dim=0, dim_size=x.shape[0], reduce="sum")
            others = scatter(torch.ones_like(squared), dst, dim=0, dim_size=x.shape[0], reduce="sum")
            x = x + terms / others.clamp(min=1.0)  # C = 1 / (M - 1)
        m_i = scatter(m, dst, dim=0, dim_size=h.shape[0], reduce="sum")
        return h + self.dropout(self.phi_h(torch.cat([h, m_i], dim=-1))), x


class EGNNEncoder(StructureEncoder):
    """EGNN over the CA (+ ligand atom) kNN graph, stepped layer by layer for fusion; the last
    layer ends with the linear readout."""

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers, self.knn = width, num_layers, knn
        self.node_in = nn.Linear(input_dim + 6, width)
        self.ligand_in = nn.Embedding(OTHER_ELEMENT + 1, width)
        self.layers = nn.ModuleList(
            [EGNNLayer(width, OFFSET_FEATURES, dropout, update_coords=depth < num_layers - 1) for depth in range(num_layers)]
        )
        self.readout = nn.Linear(width, width)

    def prepare(self, graph: Any, node_input: Tensor) -> EncoderState:
        residues = graph.coords.shape[0]
        x, node_batch = residue_and_ligand_nodes(graph)
        edge_index = knn_edges(x, node_batch, self.knn)
        src, dst = edge_index
        both_residues = (src < residues) & (dst < residues)
        offset = torch.where(both_residues, src - dst, torch.zeros_like(src))
        dihedrals = backbone_dihedrals(graph.coords, chain_breaks(graph.coords, graph.chain_index))
        s = self.node_in(torch.cat([node_input, dihedrals.to(node_input.dtype)], dim=-1))
        extra = {
            "x": x,
            "ligand_h": self.ligand_in(graph.ligand_type),
            "edge_index": edge_index,
            "edge_attr": positional_encoding(offset, OFFSET_FEATURES).to(s.dtype),
        }
        return EncoderState(s=s, extra=extra)

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        extra = state.extra
        residues = state.s.shape[0]
        h = torch.cat([state.s, extra["ligand_h"]])
        h, x = self.layers[depth](h, extra["x"], extra["edge_index"], extra["edge_attr"])
        if depth == self.num_layers - 1:
            h = self.readout(h)
        return EncoderState(s=h[:residues], extra={**extra, "x": x, "ligand_h": h[residues:]})
