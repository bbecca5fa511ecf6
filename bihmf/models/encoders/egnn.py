"""EGNN (Satorras, Hoogeboom & Welling, ICML 2021): E(n)-equivariant message passing on CA atoms.

Layer l, paper Eqs. (3)-(6), over the edges j -> i of a fixed CA kNN graph:

    m_ij    = phi_e(h_i, h_j, RBF(||x_i - x_j||), a_ij)                       (3)
    x_i    <- x_i + 1/|N(i)| * sum_j (x_i - x_j) / (||x_i - x_j|| + 1) * phi_x(m_ij)   (4)
    m_i     = sum_j m_ij                                                     (5)
    h_i    <- h_i + phi_h(h_i, m_i)                                          (6)

``h`` only ever sees distances, so it is invariant and is the ``state.s`` fusion reads; the
coordinates ``x`` rotate with the input and live in ``state.extra["x"]`` (residue CA rows,
then ligand atoms). Documented choices, where the paper leaves room or is unstable at protein
scale:

* graph: the paper's fully connected graph is O(N^2); we use the CA kNN graph (k = ``knn``)
  built once from the input coordinates, as ProteinWorkshop's EGNN does; distances are
  recomputed from the updated coordinates in every layer;
* the squared distance of Eq. (3) is fed as an RBF expansion of the distance: raw squared
  distances in Å^2 (up to a few hundred) saturate the MLP;
* Eq. (4) normalises the difference by ||x_i - x_j|| + 1 and averages over neighbours
  (C = 1/|N(i)|; the authors' code offers both normalisation and mean aggregation), so a
  step is bounded by |phi_x| whatever the distances and coordinates cannot blow up with depth;
* Eq. (6) is the residual form of the authors' code, without normalisation: a LayerNorm
  after the residual (LN(h_i + phi_h)) let the summed messages, which share a large common
  component, swamp each residue's own state; at lr 1e-2 every residue then collapsed to the
  same features and a memorisation run on 8 PPBS proteins sat at the base-rate loss;
* edge attributes a_ij: sinusoidal encoding of the sequence offset (0 when a ligand atom is
  an endpoint), as in the GVP encoder; node inputs: fusion's features plus sin/cos of the
  backbone dihedrals (all invariant);
* the last layer does not update coordinates: nothing reads them afterwards, and an unused
  phi_x would be a parameter without gradient.

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
    rbf,
    residue_and_ligand_nodes,
)

RBF_COUNT = 16
OFFSET_FEATURES = 16


def _mlp(inputs: int, width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.SiLU(), nn.Linear(width, outputs))


class EGNNLayer(nn.Module):
    """One E(n)-equivariant graph convolution, Eqs. (3)-(6)."""

    def __init__(self, width: int, dropout: float, update_coords: bool):
        super().__init__()
        self.edge_mlp = nn.Sequential(_mlp(2 * width + RBF_COUNT + OFFSET_FEATURES, width, width), nn.SiLU())
        self.coord_mlp = _mlp(width, width, 1) if update_coords else None
        self.node_mlp = _mlp(2 * width, width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        diff = x[dst] - x[src]  # x_i - x_j
        dist = diff.norm(dim=-1, keepdim=True)
        m = self.edge_mlp(torch.cat([h[dst], h[src], rbf(dist.squeeze(-1), RBF_COUNT), edge_attr], dim=-1))
        if self.coord_mlp is not None:
            shift = diff / (dist + 1.0) * self.coord_mlp(m)
            x = x + scatter(shift, dst, dim=0, dim_size=x.shape[0], reduce="mean")
        m_i = scatter(m, dst, dim=0, dim_size=h.shape[0], reduce="sum")
        h = h + self.dropout(self.node_mlp(torch.cat([h, m_i], dim=-1)))
        return h, x


class EGNNEncoder(StructureEncoder):
    """EGNN over the CA (+ ligand atom) kNN graph, stepped layer by layer for fusion."""

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers, self.knn = width, num_layers, knn
        self.node_in = nn.Linear(input_dim + 6, width)
        self.ligand_in = nn.Embedding(OTHER_ELEMENT + 1, width)
        self.layers = nn.ModuleList(
            [EGNNLayer(width, dropout, update_coords=depth < num_layers - 1) for depth in range(num_layers)]
        )

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
        return EncoderState(s=h[:residues], extra={**extra, "x": x, "ligand_h": h[residues:]})
