"""GearNet (Zhang et al., ICLR 2023): relational graph convolution over a multi-relation residue graph.

This is the structure encoder ESM-GearNet fuses with, so our serial / parallel-style rows are
comparable with theirs. Layer l, paper Eq. (1):

    h_i <- h_i + ReLU(LN(sum_r W_r sum_{j in N_r(i)} h_j))

Relations r (GearNet's graph construction, paper Sec. 3.1):

* sequential, one relation per offset j - i in {-2, -1, 1, 2}: residues linked by peptide
  bonds (:func:`chain_breaks`), so no sequential edge crosses a chain, a protein of the
  batch or a gap in the model (pocket-only LBA graphs included). GearNet numbers these
  relations by offset -2..2; offset 0 (the residue itself) has no edges there and is not
  allocated here; the residual carries h_i;
* radius: CA-CA distance < 10 Å;
* kNN: the ``knn`` nearest CA atoms.

Radius and kNN edges between residues of one chain closer than 5 positions are dropped
(GearNet's ``min_distance=5``: spatial edges are for contacts the sequential edges do not
already cover); "positions" are row indices of the chain, as in GearNet.

Documented choices:

* LayerNorm instead of the paper's BatchNorm: our batches are packed by residue count and
  hold a few proteins, so batch statistics would make a protein's output depend on its
  batch mates (and differ between training and evaluation); LayerNorm normalises each
  residue on its own, so outputs are batch-independent;
* no GearNet-Edge (edge message passing) and no concatenation of all layers' outputs
  (``concat_hidden``): fusion reads and replaces one ``[N, width]`` state per layer;
* ligand atoms (LBA) are extra nodes typed by an element embedding, joined to residues and
  each other by the radius and kNN relations (no sequential edges).

``vector_dim`` is unused: GearNet has scalar features only; geometry enters through the
graph alone, which depends only on distances, so outputs are rotation/translation invariant.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.graph import OTHER_ELEMENT, chain_breaks, knn_edges, radius_edges, residue_and_ligand_nodes

SEQUENTIAL_OFFSETS = (-2, -1, 1, 2)
RADIUS = 10.0
MIN_SEQUENCE_DISTANCE = 5
RADIUS_RELATION = len(SEQUENTIAL_OFFSETS)
KNN_RELATION = RADIUS_RELATION + 1
NUM_RELATIONS = KNN_RELATION + 1


def sequential_edges(chain_break: Tensor) -> tuple[Tensor, Tensor]:
    """Edges j -> i with 0 < |j - i| <= 2 along peptide-bonded stretches, and their relation."""
    linked = ~chain_break[:-1]  # residue i is peptide-bonded to residue i + 1
    spans = {1: linked, 2: linked[:-1] & linked[1:]}  # i .. i + step unbroken
    edges, relations = [], []
    for relation, offset in enumerate(SEQUENTIAL_OFFSETS):
        lower = torch.nonzero(spans[abs(offset)]).flatten()
        upper = lower + abs(offset)
        edges.append(torch.stack([upper, lower] if offset > 0 else [lower, upper]))
        relations.append(torch.full_like(lower, relation))
    return torch.cat(edges, dim=1), torch.cat(relations)


def long_range(edge_index: Tensor, chain_index: Tensor, num_ligand: int) -> Tensor:
    """Mask of spatial edges to keep: all but pairs of one chain fewer than 5 rows apart.

    Ligand atoms get chain ids of their own, so their edges are always kept.
    """
    ligand_chain = -1 - torch.arange(num_ligand, device=chain_index.device)
    node_chain = torch.cat([chain_index, ligand_chain])
    src, dst = edge_index
    close = (node_chain[src] == node_chain[dst]) & ((src - dst).abs() < MIN_SEQUENCE_DISTANCE)
    return ~close


class RelationalConv(nn.Module):
    """sum_r W_r sum_{j in N_r(i)} h_j as one linear map of the per-relation neighbour sums."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(NUM_RELATIONS * width, width)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, relation: Tensor) -> Tensor:
        src, dst = edge_index
        nodes, width = h.shape
        per_relation = scatter(h[src], dst * NUM_RELATIONS + relation, dim=0, dim_size=nodes * NUM_RELATIONS, reduce="sum")
        update = self.linear(per_relation.view(nodes, NUM_RELATIONS * width))
        return h + self.dropout(torch.relu(self.norm(update)))


class GearNetEncoder(StructureEncoder):
    """GearNet over sequential, radius and kNN relations, stepped layer by layer for fusion."""

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers, self.knn = width, num_layers, knn
        self.node_in = nn.Linear(input_dim, width)
        self.ligand_in = nn.Embedding(OTHER_ELEMENT + 1, width)
        self.layers = nn.ModuleList([RelationalConv(width, dropout) for _ in range(num_layers)])

    def relational_graph(self, graph: Any) -> tuple[Tensor, Tensor]:
        """All edges j -> i of the batch and their relation index."""
        pos, node_batch = residue_and_ligand_nodes(graph)
        seq_edges, seq_relation = sequential_edges(chain_breaks(graph.coords, graph.chain_index))
        edges, relations = [seq_edges], [seq_relation]
        spatial = {RADIUS_RELATION: radius_edges(pos, node_batch, RADIUS), KNN_RELATION: knn_edges(pos, node_batch, self.knn)}
        for relation, found in spatial.items():
            kept = found[:, long_range(found, graph.chain_index, graph.ligand_type.shape[0])]
            edges.append(kept)
            relations.append(torch.full_like(kept[0], relation))
        return torch.cat(edges, dim=1), torch.cat(relations)

    def prepare(self, graph: Any, node_input: Tensor) -> EncoderState:
        edge_index, relation = self.relational_graph(graph)
        extra = {"ligand_h": self.ligand_in(graph.ligand_type), "edge_index": edge_index, "relation": relation}
        return EncoderState(s=self.node_in(node_input), extra=extra)

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        extra = state.extra
        residues = state.s.shape[0]
        h = self.layers[depth](torch.cat([state.s, extra["ligand_h"]]), extra["edge_index"], extra["relation"])
        return EncoderState(s=h[:residues], extra={**extra, "ligand_h": h[residues:]})
