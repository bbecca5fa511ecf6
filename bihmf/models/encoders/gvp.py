"""GVP-GNN (Jing et al., ICLR 2021): geometric vector perceptrons over a residue kNN graph.

Scalar channels are rotation-invariant and vector channels rotate with the input, so the
``s`` state that fusion reads is invariant to rotations and translations of the structure.
Node features: sin/cos of backbone dihedrals (scalars), forward/backward CA directions and the
ideal side-chain direction (vectors). Edge features: RBF of the CA distance and a sinusoidal
encoding of the sequence offset (scalars, offset 0 on edges that touch a ligand atom), the unit
direction between the two nodes (vector).

Ligand atoms (LBA) are extra nodes placed at their coordinates, typed by element, with zero
vector features; they join the kNN graph with the residues' CA atoms. Fusion only sees the
residue rows of the state: the ligand rows travel in ``extra`` and rejoin at every layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.graph import (
    CA_IDX,
    OTHER_ELEMENT,
    backbone_dihedrals,
    chain_breaks,
    knn_edges,
    normalize,
    orientation_vectors,
    positional_encoding,
    rbf,
)

NODE_VECTORS = 3
EDGE_SCALARS = 32


def _norm(v: Tensor, eps: float = 1e-8) -> Tensor:
    """Vector-channel norms [..., C] from [..., C, 3], with a floor so gradients stay finite."""
    return torch.sqrt(torch.clamp((v * v).sum(-1), min=eps))


class GVP(nn.Module):
    """One geometric vector perceptron with vector gating: (s, V) -> (s', V')."""

    def __init__(self, in_dims: tuple[int, int], out_dims: tuple[int, int], activate: bool = True):
        super().__init__()
        (si, vi), (so, vo) = in_dims, out_dims
        hidden = max(vi, vo) if vi else 0
        self.vi, self.vo, self.activate = vi, vo, activate
        self.wh = nn.Linear(vi, hidden, bias=False) if vi else None
        self.ws = nn.Linear(si + hidden, so)
        self.wv = nn.Linear(hidden, vo, bias=False) if vo and vi else None
        self.gate = nn.Linear(so, vo) if vo and vi else None

    def forward(self, s: Tensor, v: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.wh is None:
            out_s = self.ws(s)
            out_v = None
        else:
            vh = self.wh(v.transpose(-1, -2)).transpose(-1, -2)  # [N, hidden, 3]
            out_s = self.ws(torch.cat([s, _norm(vh)], dim=-1))
            out_v = None
            if self.wv is not None:
                out_v = self.wv(vh.transpose(-1, -2)).transpose(-1, -2)
                gate_in = torch.relu(out_s) if self.activate else out_s
                out_v = out_v * torch.sigmoid(self.gate(gate_in)).unsqueeze(-1)
        if self.activate:
            out_s = torch.relu(out_s)
        return out_s, out_v


class GVPLayerNorm(nn.Module):
    """LayerNorm on scalars; vectors scaled to unit mean squared norm (rotation-safe)."""

    def __init__(self, scalars: int):
        super().__init__()
        self.norm = nn.LayerNorm(scalars)

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        scale = torch.sqrt(torch.clamp((v * v).sum(-1), min=1e-8).mean(-1, keepdim=True)).unsqueeze(-1)
        return self.norm(s), v / scale


class GVPConvLayer(nn.Module):
    """Message passing (3 GVPs on [s_j, e, s_i]), mean aggregation, residual + feed-forward."""

    def __init__(self, node_dims: tuple[int, int], edge_dims: tuple[int, int], dropout: float):
        super().__init__()
        ns, nv = node_dims
        es, ev = edge_dims
        self.message = nn.ModuleList(
            [GVP((2 * ns + es, 2 * nv + ev), node_dims), GVP(node_dims, node_dims), GVP(node_dims, node_dims, activate=False)]
        )
        self.feed_forward = nn.ModuleList([GVP(node_dims, (4 * ns, 2 * nv)), GVP((4 * ns, 2 * nv), node_dims, activate=False)])
        self.norms = nn.ModuleList([GVPLayerNorm(ns), GVPLayerNorm(ns)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, edge_s: Tensor, edge_v: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        ms = torch.cat([s[src], edge_s, s[dst]], dim=-1)
        mv = torch.cat([v[src], edge_v, v[dst]], dim=-2)
        for gvp in self.message:
            ms, mv = gvp(ms, mv)
        agg_s = scatter(ms, dst, dim=0, dim_size=s.shape[0], reduce="mean")
        agg_v = scatter(mv, dst, dim=0, dim_size=s.shape[0], reduce="mean")
        s, v = self.norms[0](s + self.dropout(agg_s), v + self.dropout(agg_v))
        fs, fv = s, v
        for gvp in self.feed_forward:
            fs, fv = gvp(fs, fv)
        return self.norms[1](s + self.dropout(fs), v + self.dropout(fv))


class GVPEncoder(StructureEncoder):
    """GVP-GNN over the CA kNN graph, stepped layer by layer for fusion."""

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers, self.knn = width, num_layers, knn
        self.node_in = GVP((input_dim + 6, NODE_VECTORS), (width, vector_dim), activate=False)
        self.ligand_in = nn.Embedding(OTHER_ELEMENT + 1, width)
        self.vector_dim = vector_dim
        self.node_norm = GVPLayerNorm(width)
        self.edge_in = GVP((EDGE_SCALARS, 1), (EDGE_SCALARS, 1), activate=False)
        self.layers = nn.ModuleList(
            [GVPConvLayer((width, vector_dim), (EDGE_SCALARS, 1), dropout) for _ in range(num_layers)]
        )

    def prepare(self, graph: Any, node_input: Tensor) -> EncoderState:
        coords = graph.coords
        residues = coords.shape[0]
        breaks = chain_breaks(coords, graph.chain_index)
        pos = torch.cat([torch.nan_to_num(coords[:, CA_IDX]), graph.ligand_pos])
        edge_index = knn_edges(pos, torch.cat([graph.batch, graph.ligand_pos_batch]), self.knn)
        src, dst = edge_index
        vec = pos[src] - pos[dst]
        both_residues = (src < residues) & (dst < residues)
        offset = torch.where(both_residues, src - dst, torch.zeros_like(src))
        edge_s = torch.cat([rbf(vec.norm(dim=-1)), positional_encoding(offset)], dim=-1)
        edge_s, edge_v = self.edge_in(edge_s, normalize(vec).unsqueeze(-2))
        s, v = self.node_in(torch.cat([node_input, backbone_dihedrals(coords, breaks)], dim=-1), orientation_vectors(coords, breaks))
        s, v = self.node_norm(s, v)
        ligand_s = self.ligand_in(graph.ligand_type)
        ligand_v = ligand_s.new_zeros(ligand_s.shape[0], self.vector_dim, 3)
        extra = {"v": v, "ligand_s": ligand_s, "ligand_v": ligand_v, "edge_index": edge_index, "edge_s": edge_s, "edge_v": edge_v}
        return EncoderState(s=s, extra=extra)

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        x = state.extra
        residues = state.s.shape[0]
        s_all = torch.cat([state.s, x["ligand_s"]])
        v_all = torch.cat([x["v"], x["ligand_v"]])
        s_all, v_all = self.layers[depth](s_all, v_all, x["edge_index"], x["edge_s"], x["edge_v"])
        extra = {**x, "v": v_all[:residues], "ligand_s": s_all[residues:], "ligand_v": v_all[residues:]}
        return EncoderState(s=s_all[:residues], extra=extra)
