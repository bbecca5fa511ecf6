"""GVP-GNN (Jing et al., ICLR 2021): geometric vector perceptrons over a residue kNN graph.

Scalar channels are rotation-invariant and vector channels rotate with the input, so the
``s`` state that fusion reads is invariant to rotations and translations of the structure.

The network is the one drorlab's ATOM3D GVP-GNN models compose (activations ReLU for scalars
and none for vectors, vector gating on): every node and edge input goes through LayerNorm and
then a linear GVP (no activations), then ``num_layers`` GVP convolution layers (three message
GVPs, mean aggregation, dropout, residual + LayerNorm, two-GVP feed-forward, dropout, residual +
LayerNorm), and after the last layer the readout LayerNorm + GVP to scalars only (ReLU) that
the reference applies before pooling. The vector gate is ``sigmoid(W_sv s)`` on the scalar
output *before* the scalar activation, and vector dropout drops whole vector channels.
``tests/oracles/test_gvp_oracle.py`` checks all of this against the reference code.

Node features: sin/cos of backbone dihedrals plus fusion's input (scalars), forward/backward
CA directions and the ideal side-chain direction (vectors). Edge features: RBF of the CA
distance and a sinusoidal encoding of the sequence offset (scalars, offset 0 on edges that
touch a ligand atom), the unit direction between the two nodes (vector).

Ligand atoms (LBA) are extra nodes placed at their coordinates and typed by element, embedded
as the ATOM3D models embed atoms (type embedding, LayerNorm, linear GVP; zero vectors); they
join the kNN graph with the residues' CA atoms. Fusion only sees the residue rows of the
state: the ligand rows travel in ``extra`` and rejoin at every layer.
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
LIGAND_TYPES = OTHER_ELEMENT + 1

Dims = tuple[int, int]


def _norm(v: Tensor, eps: float = 1e-8) -> Tensor:
    """Vector-channel norms [..., C] from [..., C, 3], with a floor so gradients stay finite."""
    return torch.sqrt(torch.clamp((v * v).sum(-1), min=eps))


def _channels(linear: nn.Linear, v: Tensor) -> Tensor:
    """A bias-free linear map across the vector channels of [N, C, 3]: it mixes channels, never
    the xyz axes, so it commutes with rotations."""
    return linear(v.transpose(-1, -2)).transpose(-1, -2)


class GVP(nn.Module):
    """One geometric vector perceptron (s, V) -> (s', V'), ReLU on s' when ``activate``.

    Without vector inputs it is a linear map of the scalars that emits zero vectors; without
    vector outputs it returns ``None`` for them.
    """

    def __init__(self, in_dims: Dims, out_dims: Dims, activate: bool = True):
        super().__init__()
        (si, vi), (so, vo) = in_dims, out_dims
        hidden = max(vi, vo) if vi else 0
        self.vo, self.activate = vo, activate
        self.wh = nn.Linear(vi, hidden, bias=False) if vi else None
        self.ws = nn.Linear(si + hidden, so)
        self.wv = nn.Linear(hidden, vo, bias=False) if vo and vi else None
        self.wsv = nn.Linear(so, vo) if vo and vi else None

    def forward(self, s: Tensor, v: Tensor | None) -> tuple[Tensor, Tensor | None]:
        out_v = None
        if self.wh is None:
            out_s = self.ws(s)
            if self.vo:
                out_v = s.new_zeros(s.shape[0], self.vo, 3)
        else:
            vh = _channels(self.wh, v)
            out_s = self.ws(torch.cat([s, _norm(vh)], dim=-1))
            if self.wv is not None:
                gate = torch.sigmoid(self.wsv(out_s)).unsqueeze(-1)
                out_v = _channels(self.wv, vh) * gate
        return (torch.relu(out_s) if self.activate else out_s), out_v


class GVPLayerNorm(nn.Module):
    """LayerNorm on scalars; vectors divided by their root-mean-square channel norm, a scale that
    rotations leave unchanged."""

    def __init__(self, scalars: int):
        super().__init__()
        self.scalar_norm = nn.LayerNorm(scalars)

    def forward(self, s: Tensor, v: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if v is None or v.shape[-2] == 0:
            return self.scalar_norm(s), v
        scale = torch.sqrt(torch.clamp((v * v).sum(-1), min=1e-8).mean(-1, keepdim=True)).unsqueeze(-1)
        return self.scalar_norm(s), v / scale


class GVPDropout(nn.Module):
    """Dropout on scalars and on whole vector channels (the three components of a channel are
    kept or dropped together, so a kept vector keeps its direction)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate
        self.scalar = nn.Dropout(rate)

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        s = self.scalar(s)
        if not self.training or self.rate == 0.0:
            return s, v
        keep = torch.bernoulli(torch.full(v.shape[:-1], 1.0 - self.rate, dtype=v.dtype, device=v.device))
        return s, v * keep.unsqueeze(-1) / (1.0 - self.rate)


class NormThenGVP(nn.Module):
    """LayerNorm followed by one GVP: the reference's input embeddings (linear) and readout."""

    def __init__(self, in_dims: Dims, out_dims: Dims, activate: bool):
        super().__init__()
        self.norm = GVPLayerNorm(in_dims[0])
        self.gvp = GVP(in_dims, out_dims, activate)

    def forward(self, s: Tensor, v: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.gvp(*self.norm(s, v))


class GVPConvLayer(nn.Module):
    """Message passing (3 GVPs on [s_j, e_ji, s_i]), mean aggregation, residual + feed-forward."""

    def __init__(self, node_dims: Dims, edge_dims: Dims, dropout: float):
        super().__init__()
        ns, nv = node_dims
        es, ev = edge_dims
        hidden = (4 * ns, 2 * nv)
        self.message_func = nn.ModuleList(
            [GVP((2 * ns + es, 2 * nv + ev), node_dims), GVP(node_dims, node_dims), GVP(node_dims, node_dims, activate=False)]
        )
        self.ff_func = nn.ModuleList([GVP(node_dims, hidden), GVP(hidden, node_dims, activate=False)])
        self.norm = nn.ModuleList([GVPLayerNorm(ns), GVPLayerNorm(ns)])
        self.dropout = nn.ModuleList([GVPDropout(dropout), GVPDropout(dropout)])

    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, edge_s: Tensor, edge_v: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        ms = torch.cat([s[src], edge_s, s[dst]], dim=-1)
        mv = torch.cat([v[src], edge_v, v[dst]], dim=-2)
        for gvp in self.message_func:
            ms, mv = gvp(ms, mv)
        agg_s = scatter(ms, dst, dim=0, dim_size=s.shape[0], reduce="mean")
        agg_v = scatter(mv, dst, dim=0, dim_size=s.shape[0], reduce="mean")
        ds, dv = self.dropout[0](agg_s, agg_v)
        s, v = self.norm[0](s + ds, v + dv)
        fs, fv = s, v
        for gvp in self.ff_func:
            fs, fv = gvp(fs, fv)
        fs, fv = self.dropout[1](fs, fv)
        return self.norm[1](s + fs, v + fv)


class GVPEncoder(StructureEncoder):
    """GVP-GNN over the CA kNN graph, stepped layer by layer for fusion; the last layer ends with
    the readout GVP, so the final ``s`` is the per-node output the reference pools."""

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers, self.knn, self.vector_dim = width, num_layers, knn, vector_dim
        node_dims = (width, vector_dim)
        self.node_in = NormThenGVP((input_dim + 6, NODE_VECTORS), node_dims, activate=False)
        self.ligand_embed = nn.Embedding(LIGAND_TYPES, LIGAND_TYPES)
        self.ligand_in = NormThenGVP((LIGAND_TYPES, 0), node_dims, activate=False)
        self.edge_in = NormThenGVP((EDGE_SCALARS, 1), (EDGE_SCALARS, 1), activate=False)
        self.layers = nn.ModuleList([GVPConvLayer(node_dims, (EDGE_SCALARS, 1), dropout) for _ in range(num_layers)])
        self.readout = NormThenGVP(node_dims, (width, 0), activate=True)

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
        scalars = torch.cat([node_input, backbone_dihedrals(coords, breaks)], dim=-1)
        s, v = self.node_in(scalars, orientation_vectors(coords, breaks))
        ligand_s, ligand_v = self.ligand_in(self.ligand_embed(graph.ligand_type), None)
        extra = {"v": v, "ligand_s": ligand_s, "ligand_v": ligand_v, "edge_index": edge_index, "edge_s": edge_s, "edge_v": edge_v}
        return EncoderState(s=s, extra=extra)

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        x = state.extra
        residues = state.s.shape[0]
        s_all = torch.cat([state.s, x["ligand_s"]])
        v_all = torch.cat([x["v"], x["ligand_v"]])
        s_all, v_all = self.layers[depth](s_all, v_all, x["edge_index"], x["edge_s"], x["edge_v"])
        if depth == self.num_layers - 1:
            s_all, _ = self.readout(s_all, v_all)
        extra = {**x, "v": v_all[:residues], "ligand_s": s_all[residues:], "ligand_v": v_all[residues:]}
        return EncoderState(s=s_all[:residues], extra=extra)
