"""ProNet at the amino-acid level (Wang et al., ICLR 2023, "Learning hierarchical protein
representations via complete 3D graph networks").

Each residue is a node at its CA atom with a local coordinate system (LCS) built from its
backbone N, CA, C (:func:`backbone_frames`). An edge j -> i of the 10 Å CA radius graph (the
paper's cutoff) is described by the relative pose of residue j seen from residue i:

* d_ij: the CA-CA distance;
* theta_ij, phi_ij: polar and azimuthal angles of CA_j in the LCS of i;
* tau_ij = (alpha, beta, gamma): the rotation taking the LCS of i to that of j, as ZYZ Euler
  angles (the torsions between the two frames).

(d, theta, phi) fix where j is and tau how it is oriented, so the six numbers determine the
pair up to a rigid motion: the paper's argument for a complete representation. All are
measured in local frames, hence invariant to rotations and translations of the input.

Layer l, a continuous-filter convolution (the paper's interaction block, simplified):

    m_i = sum_j  F_l(g_ij) * W_l h_j         g_ij: expanded (d, theta, phi, tau), * elementwise
    h_i <- LN(h_i + MLP_l([h_i, m_i]))

Documented simplifications against the paper:

* distances are expanded in Gaussian RBFs and each angle in a Fourier series
  (sin/cos of k * angle, k = 1..3) instead of spherical Bessel functions and spherical
  harmonics; one filter MLP reads all of them instead of separate filter branches;
* node features are the fusion's node input only (the amino-acid level has no backbone
  dihedrals or side-chain torsions: those are the paper's backbone / all-atom levels);
* residues missing N or C have no LCS: their angle features are zero and a per-edge flag
  says which angles are defined, so the network can tell "undefined" from "zero";
* ligand atoms (LBA) are extra nodes typed by an element embedding, with no LCS: an edge
  into a residue still gets (d, theta, phi) of the atom in the residue's frame; edges into
  an atom get the distance only.

``knn`` and ``vector_dim`` are unused: the graph is the paper's radius graph and ProNet has
scalar features only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.graph import OTHER_ELEMENT, backbone_frames, radius_edges, rbf, residue_and_ligand_nodes

RADIUS = 10.0
RBF_COUNT = 16
HARMONICS = 3
ANGLES = 5  # theta, phi, and the three Euler angles
GEOMETRY_FEATURES = RBF_COUNT + ANGLES * 2 * HARMONICS + 2


def safe_atan2(y: Tensor, x: Tensor) -> Tensor:
    """atan2 that is 0 with a finite gradient at (0, 0), where an undefined frame puts it."""
    origin = (x == 0) & (y == 0)
    return torch.atan2(y, torch.where(origin, torch.ones_like(x), x))


def _hypot(a: Tensor, b: Tensor) -> Tensor:
    """sqrt(a^2 + b^2) floored away from 0, so its gradient stays finite on the poles."""
    return torch.sqrt((a * a + b * b).clamp_min(1e-12))


def fourier(angles: Tensor) -> Tensor:
    """[..., A] angles -> [..., A * 2 * HARMONICS] sin/cos of k * angle, k = 1..HARMONICS."""
    k = torch.arange(1, HARMONICS + 1, device=angles.device, dtype=angles.dtype)
    scaled = (angles.unsqueeze(-1) * k).flatten(-2)
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)


def edge_geometry(pos: Tensor, frames: Tensor, valid: Tensor, edge_index: Tensor) -> Tensor:
    """Invariant features of edges j -> i: RBF(d), Fourier(theta, phi, alpha, beta, gamma), flags."""
    src, dst = edge_index
    rel = pos[src] - pos[dst]
    x, y, z = (frames[dst] @ rel.unsqueeze(-1)).squeeze(-1).unbind(-1)  # CA_j in the LCS of i
    theta, phi = safe_atan2(_hypot(x, y), z), safe_atan2(y, x)
    rot = frames[dst] @ frames[src].transpose(-1, -2)  # rot[a, b] = e_a(i) . e_b(j)
    beta = safe_atan2(_hypot(rot[:, 0, 2], rot[:, 1, 2]), rot[:, 2, 2])
    alpha = safe_atan2(rot[:, 1, 2], rot[:, 0, 2])
    gamma = safe_atan2(rot[:, 2, 1], -rot[:, 2, 0])
    pos_ok = valid[dst].unsqueeze(-1).to(pos.dtype)
    rot_ok = (valid[src] & valid[dst]).unsqueeze(-1).to(pos.dtype)
    return torch.cat(
        [
            rbf(rel.norm(dim=-1), RBF_COUNT),
            fourier(torch.stack([theta, phi], dim=-1)) * pos_ok,
            fourier(torch.stack([alpha, beta, gamma], dim=-1)) * rot_ok,
            pos_ok,
            rot_ok,
        ],
        dim=-1,
    )


class ProNetLayer(nn.Module):
    """One continuous-filter convolution with residual, feed-forward update and LayerNorm."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(GEOMETRY_FEATURES, width), nn.SiLU(), nn.Linear(width, width))
        self.source = nn.Linear(width, width)
        self.update = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, geometry: Tensor) -> Tensor:
        src, dst = edge_index
        messages = self.filter(geometry) * self.source(h)[src]
        m = scatter(messages, dst, dim=0, dim_size=h.shape[0], reduce="sum")
        return self.norm(h + self.dropout(self.update(torch.cat([h, m], dim=-1))))


class ProNetEncoder(StructureEncoder):
    """Amino-acid-level ProNet over the 10 Å CA (+ ligand atom) graph, stepped for fusion."""

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers = width, num_layers
        self.node_in = nn.Linear(input_dim, width)
        self.ligand_in = nn.Embedding(OTHER_ELEMENT + 1, width)
        self.layers = nn.ModuleList([ProNetLayer(width, dropout) for _ in range(num_layers)])

    def prepare(self, graph: Any, node_input: Tensor) -> EncoderState:
        pos, node_batch = residue_and_ligand_nodes(graph)
        edge_index = radius_edges(pos, node_batch, RADIUS)
        frames, valid = backbone_frames(graph.coords)
        ligands = graph.ligand_type.shape[0]
        frames = torch.cat([frames, frames.new_zeros(ligands, 3, 3)])
        valid = torch.cat([valid, valid.new_zeros(ligands)])
        extra = {
            "ligand_h": self.ligand_in(graph.ligand_type),
            "edge_index": edge_index,
            "geometry": edge_geometry(pos, frames, valid, edge_index),
        }
        return EncoderState(s=self.node_in(node_input), extra=extra)

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        extra = state.extra
        residues = state.s.shape[0]
        h = self.layers[depth](torch.cat([state.s, extra["ligand_h"]]), extra["edge_index"], extra["geometry"])
        return EncoderState(s=h[:residues], extra={**extra, "ligand_h": h[residues:]})
