"""ProNet (Wang et al., ICLR 2023, "Learning hierarchical protein representations via complete
3D graph networks") at the amino-acid level; :mod:`pronet_backbone` adds the backbone level.

The maths is that of the authors' release (DIG, ``dig.threedgraph.method.pronet``), written
anew here and checked against it by ``tests/oracles/test_pronet_oracle.py``. Nodes are the
residues' CA atoms; an edge j -> i joins residues of one protein closer than 10 Å, at most
the 32 nearest per residue. Residue i's reference points are its sequence neighbours i - 1
and i + 1 (by node order, wrapping round the protein, as in the release). Per edge:

* feature0 = sbf(d, theta, phi): theta is the angle between CA_j - CA_i and CA_(i-1) - CA_i,
  phi the rotation of CA_j about that axis away from the plane of (i-1, i, i+1); expanded in
  spherical Bessel radial functions times real spherical harmonics Y_lm(theta, phi);
* feature1 = sbf(d, tau): tau is the torsion about CA_i -> CA_j between residue i's and
  residue j's reference neighbours (the other sequence neighbour when the first is the
  partner itself), expanded in the radial functions times zonal harmonics Y_l0(tau);
* pos_emb: a sinusoidal encoding of the node-index offset j - i.

All are measured in local frames, so residue states are invariant to rigid motions. Each
interaction block filters three edge convolutions of the node states with these features
(feature0, feature1, pos_emb) and merges them with a residual path (:class:`InteractionBlock`).

The constructor's ``width``, ``num_layers`` and ``dropout`` are ProNet's hidden_channels,
num_blocks and dropout; the other hyperparameters are the paper's and the release's defaults
(module constants). ``knn`` and ``vector_dim`` are unused: ProNet has a radius graph and
scalar features only. Node input is the fusion's per-residue input through a linear layer
(the release embeds the residue type, a one-hot input through the same layer).

Ligand atoms (LBA), which the release does not have, are extra nodes after the residues,
typed by an element embedding and joined by the same radius graph. An angle that a ligand
end leaves undefined (theta and phi into an atom, the torsion of any edge with an atom, the
sequence offset) contributes only the angle-free l = 0 part of its basis; the position
encoding of such an edge is zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import spherical_jn
from torch import Tensor, nn
from torch_geometric.utils import scatter

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.graph import OTHER_ELEMENT, positional_encoding, radius_edges, residue_and_ligand_nodes

CUTOFF = 10.0  # Å, the paper's radius
MAX_NEIGHBOURS = 32  # per residue, the release's max_num_neighbors
NUM_RADIAL = 6  # radial functions per order (num_radial)
NUM_SPHERICAL = 2  # harmonic degrees l = 0, 1 (num_spherical)
MID_EMB = 64  # width of the feature filters (mid_emb)
INT_EMB_LAYERS = 3  # depth of the merge after the three convolutions (int_emb_layers)
NUM_POS_EMB = 16  # sinusoidal position channels (num_pos_emb)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.cross(a, b, dim=-1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=-1)


# Bases ------------------------------------------------------------------------------------


def spherical_bessel(order: int, x: Tensor) -> Tensor:
    """j_order(x) by upward recurrence: stable for the small orders and x > 0 used here."""
    previous, current = torch.sin(x) / x, torch.sin(x) / (x * x) - torch.cos(x) / x
    if order == 0:
        return previous
    for n in range(1, order):
        previous, current = current, (2 * n + 1) / x * current - previous
    return current


def bessel_roots(orders: int, count: int) -> np.ndarray:
    """First ``count`` positive roots of j_l for l < ``orders`` [orders, count].

    Roots of j_l interlace those of j_(l-1), so each order is bracketed by the previous one's
    roots, starting from j_0's k * pi. They are returned in single precision because the
    release keeps them so; its trained filters expect those exact frequencies.
    """
    brackets = np.arange(1, count + orders) * np.pi
    roots = [brackets[:count]]
    for order in range(1, orders):
        brackets = np.array([brentq(lambda r: spherical_jn(order, r), a, b) for a, b in zip(brackets[:-1], brackets[1:])])
        roots.append(brackets[:count])
    return np.stack(roots).astype(np.float32)


def legendre_without_phase(degrees: int, cos: Tensor, sin: Tensor) -> dict[tuple[int, int], Tensor]:
    """Associated Legendre P_l^m(cos) for 0 <= m <= l < degrees, without the Condon-Shortley sign."""
    p: dict[tuple[int, int], Tensor] = {(0, 0): torch.ones_like(cos)}
    for m in range(degrees):
        if m > 0:
            p[m, m] = (2 * m - 1) * sin * p[m - 1, m - 1]
        if m + 1 < degrees:
            p[m + 1, m] = (2 * m + 1) * cos * p[m, m]
        for l in range(m + 2, degrees):
            p[l, m] = ((2 * l - 1) * cos * p[l - 1, m] - (l + m - 1) * p[l - 2, m]) / (l - m)
    return p


def _harmonic_norm(l: int, m: int) -> float:
    return math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))


def real_spherical_harmonics(degrees: int, theta: Tensor, phi: Tensor) -> list[list[Tensor]]:
    """Real Y_lm(theta, phi) per degree l, ordered m = 0, 1..l, -l..-1 (the release's order):
    cos(m phi) for m > 0, sin(|m| phi) for m < 0."""
    p = legendre_without_phase(degrees, torch.cos(theta), torch.sin(theta).abs())
    harmonics = []
    for l in range(degrees):
        row = [_harmonic_norm(l, 0) * p[l, 0]]
        row += [math.sqrt(2) * _harmonic_norm(l, m) * p[l, m] * torch.cos(m * phi) for m in range(1, l + 1)]
        row += [math.sqrt(2) * _harmonic_norm(l, m) * p[l, m] * torch.sin(m * phi) for m in range(l, 0, -1)]
        harmonics.append(row)
    return harmonics


class SphericalBasis(nn.Module):
    """Spherical Bessel radial functions sqrt(2) / |j_(l+1)(z_ln)| * j_l(z_ln * d / cutoff)
    (z_ln the n-th root of j_l), combined with real spherical harmonics. No envelope: the
    release has none, edges simply end at the cutoff."""

    def __init__(self, num_radial: int = NUM_RADIAL, num_spherical: int = NUM_SPHERICAL, cutoff: float = CUTOFF):
        super().__init__()
        roots = bessel_roots(num_spherical, num_radial)
        # scipy evaluates j_(l+1) at the roots' single precision, as it does in the release
        norms = np.sqrt(2.0) / np.abs(np.stack([spherical_jn(l + 1, roots[l]) for l in range(num_spherical)]))
        self.register_buffer("roots", torch.from_numpy(roots.astype(np.float64)), persistent=False)
        self.register_buffer("norms", torch.from_numpy(norms), persistent=False)
        self.num_spherical, self.cutoff = num_spherical, cutoff

    def radial(self, distance: Tensor) -> list[Tensor]:
        """[E, num_radial] per order l."""
        x = (distance / self.cutoff).unsqueeze(-1)
        roots, norms = self.roots.to(distance.dtype), self.norms.to(distance.dtype)
        return [norms[l] * spherical_bessel(l, roots[l] * x) for l in range(self.num_spherical)]

    def distance_theta_phi(self, distance: Tensor, theta: Tensor, phi: Tensor, defined: Tensor) -> Tensor:
        """[E, num_spherical^2 * num_radial]: radial_l * Y_lm, blocks ordered by (l, m)."""
        radial = self.radial(distance)
        harmonics = real_spherical_harmonics(self.num_spherical, theta, phi)
        return torch.cat(
            [_angular(l, y, defined).unsqueeze(-1) * radial[l] for l in range(self.num_spherical) for y in harmonics[l]],
            dim=-1,
        )

    def distance_angle(self, distance: Tensor, angle: Tensor, defined: Tensor) -> Tensor:
        """[E, num_spherical * num_radial]: radial_l * Y_l0(angle), the zonal harmonics."""
        radial = self.radial(distance)
        p = legendre_without_phase(self.num_spherical, torch.cos(angle), torch.sin(angle).abs())
        return torch.cat(
            [_angular(l, _harmonic_norm(l, 0) * p[l, 0], defined).unsqueeze(-1) * radial[l] for l in range(self.num_spherical)],
            dim=-1,
        )


def _angular(l: int, y: Tensor, defined: Tensor) -> Tensor:
    """A harmonic where its angle is defined; only the angle-free l = 0 term where not."""
    return y if l == 0 else torch.where(defined, y, torch.zeros_like(y))


# Geometry ----------------------------------------------------------------------------------


def sequence_neighbours(batch: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """Previous and next residue node of each residue, wrapping round its protein; nodes past
    the residues (ligand atoms) point at themselves. Residues of a protein are contiguous."""
    counts = torch.bincount(batch)
    starts = (torch.cumsum(counts, 0) - counts)[batch]
    size = counts[batch]
    local = torch.arange(batch.shape[0], device=batch.device) - starts
    own = torch.arange(total, device=batch.device)
    previous, following = own.clone(), own.clone()
    previous[: batch.shape[0]] = starts + (local - 1) % size
    following[: batch.shape[0]] = starts + (local + 1) % size
    return previous, following


def nearest_edges(pos: Tensor, batch: Tensor, cutoff: float, limit: int) -> Tensor:
    """Radius edges j -> i, keeping each target's ``limit`` nearest sources (the release caps
    neighbours too; nearest-first makes the choice independent of storage order)."""
    edges = radius_edges(pos, batch, cutoff)
    distance = (pos[edges[0]] - pos[edges[1]]).norm(dim=-1)
    by_distance = torch.argsort(distance, stable=True)
    order = by_distance[torch.argsort(edges[1, by_distance], stable=True)]
    target = edges[1, order]
    first = torch.searchsorted(target, target, side="left")
    rank = torch.arange(target.shape[0], device=pos.device) - first
    return edges[:, order[rank < limit]]


def theta_phi(pos: Tensor, edge_index: Tensor, previous: Tensor, following: Tensor) -> tuple[Tensor, Tensor]:
    """Polar and azimuthal angle of CA_j around residue i's reference axis CA_(i-1) - CA_i."""
    j, i = edge_index
    to_j, to_prev, to_next = pos[j] - pos[i], pos[previous[i]] - pos[i], pos[following[i]] - pos[i]
    theta = torch.atan2(_cross(to_j, to_prev).norm(dim=-1), _dot(to_j, to_prev))
    plane_ref, plane_j = _cross(to_prev, to_next), _cross(to_prev, to_j)
    # floored for targets that are their own reference (ligand atoms, a one-residue protein): 0 / 0 -> 0
    phi = torch.atan2(_dot(_cross(plane_ref, plane_j), to_prev) / to_prev.norm(dim=-1).clamp_min(1e-12), _dot(plane_ref, plane_j))
    return theta, phi


def residue_torsion(pos: Tensor, edge_index: Tensor, previous: Tensor, following: Tensor) -> Tensor:
    """Torsion about CA_i -> CA_j between the two residues' reference neighbours."""
    j, i = edge_index
    ref_i = torch.where(previous[i] == j, following[i], previous[i])
    ref_j = torch.where(previous[j] == i, following[j], previous[j])
    axis = pos[j] - pos[i]
    plane_i, plane_j = _cross(axis, pos[ref_i] - pos[i]), _cross(axis, pos[ref_j] - pos[j])
    return torch.atan2(_dot(_cross(plane_i, plane_j), axis) / axis.norm(dim=-1), _dot(plane_i, plane_j))


# Network -----------------------------------------------------------------------------------


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    """Glorot-uniform weights and zero bias, the release's initialisation."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class FeatureFilter(nn.Module):
    """Two bias-free linear maps without activation: edge features -> per-channel weights."""

    def __init__(self, fan_in: int, width: int):
        super().__init__()
        self.lin1, self.lin2 = _linear(fan_in, MID_EMB, bias=False), _linear(MID_EMB, width, bias=False)

    def forward(self, features: Tensor) -> Tensor:
        return self.lin2(self.lin1(features))


class EdgeConv(nn.Module):
    """h_i = W_l sum_j (w_ij * x_j) + b + W_r x_i: a graph convolution whose messages are
    weighted channel-wise by the filtered edge features."""

    def __init__(self, width: int):
        super().__init__()
        self.lin_l, self.lin_r = _linear(width, width), _linear(width, width, bias=False)

    def forward(self, x: Tensor, edge_index: Tensor, weight: Tensor) -> Tensor:
        j, i = edge_index
        summed = scatter(weight * x[j], i, dim=0, dim_size=x.shape[0], reduce="sum")
        return self.lin_l(summed) + self.lin_r(x)


class InteractionBlock(nn.Module):
    """One ProNet block: three edge convolutions of swish(W_1 x), filtered by feature0,
    feature1 and the position encoding, each through linear + swish + dropout; their
    concatenation through INT_EMB_LAYERS linear + swish layers, plus the residual swish(W_2 x),
    then INT_EMB_LAYERS - 1 more, and a final linear map. Parameter names are the release's,
    so its trained blocks load with ``load_state_dict``."""

    def __init__(self, width: int, orientation_features: int, dropout: float):
        super().__init__()
        position_features = NUM_RADIAL * NUM_SPHERICAL**2
        self.conv0, self.conv1, self.conv2 = EdgeConv(width), EdgeConv(width), EdgeConv(width)
        self.lin_feature0 = FeatureFilter(position_features, width)
        self.lin_feature1 = FeatureFilter(orientation_features, width)
        self.lin_feature2 = FeatureFilter(NUM_POS_EMB, width)
        self.lin_1, self.lin_2 = _linear(width, width), _linear(width, width)
        self.lin0, self.lin1, self.lin2 = _linear(width, width), _linear(width, width), _linear(width, width)
        self.lins_cat = nn.ModuleList([_linear(3 * width, width)] + [_linear(width, width) for _ in range(INT_EMB_LAYERS - 1)])
        self.lins = nn.ModuleList([_linear(width, width) for _ in range(INT_EMB_LAYERS - 1)])
        self.final = _linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, feature0: Tensor, feature1: Tensor, pos_emb: Tensor, edge_index: Tensor) -> Tensor:
        x_in, x_skip = swish(self.lin_1(x)), swish(self.lin_2(x))
        branches = [
            self.dropout(swish(lin(conv(x_in, edge_index, filt(feature)))))
            for conv, filt, lin, feature in (
                (self.conv0, self.lin_feature0, self.lin0, feature0),
                (self.conv1, self.lin_feature1, self.lin1, feature1),
                (self.conv2, self.lin_feature2, self.lin2, pos_emb),
            )
        ]
        h = torch.cat(branches, dim=-1)
        for lin in self.lins_cat:
            h = swish(lin(h))
        h = h + x_skip
        for lin in self.lins:
            h = swish(lin(h))
        return self.final(h)


class ProNetEncoder(StructureEncoder):
    """Amino-acid-level ProNet over the 10 Å CA (+ ligand atom) graph, stepped for fusion.

    Subclasses for other levels override :meth:`residue_input` (extra per-residue input) and
    :meth:`orientation` (feature1), declaring their widths in the two class attributes.
    """

    extra_input = 0
    orientation_features = NUM_RADIAL * NUM_SPHERICAL

    def __init__(self, input_dim: int, width: int, vector_dim: int, num_layers: int, knn: int, dropout: float):
        super().__init__()
        self.width, self.num_layers = width, num_layers
        self.basis = SphericalBasis()
        self.node_in = nn.Linear(input_dim + self.extra_input, width)
        self.ligand_in = nn.Embedding(OTHER_ELEMENT + 1, width)
        self.layers = nn.ModuleList([InteractionBlock(width, self.orientation_features, dropout) for _ in range(num_layers)])

    def residue_input(self, graph: Any, node_input: Tensor) -> Tensor:
        return node_input

    def orientation(self, graph: Any, pos: Tensor, edge_index: Tensor, references: tuple[Tensor, Tensor], both_residues: Tensor) -> Tensor:
        """feature1 of the amino-acid level: the inter-residue torsion tau."""
        tau = residue_torsion(pos, edge_index, *references)
        return self.basis.distance_angle((pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1), tau, both_residues)

    def edge_features(self, graph: Any, pos: Tensor, node_batch: Tensor) -> dict[str, Tensor]:
        """Edges and their feature0, feature1 and position encoding (see the module docstring)."""
        residues = graph.coords.shape[0]
        edge_index = nearest_edges(pos, node_batch, CUTOFF, MAX_NEIGHBOURS)
        references = sequence_neighbours(graph.batch, pos.shape[0])
        into_residue = edge_index[1] < residues
        both_residues = into_residue & (edge_index[0] < residues)
        distance = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
        theta, phi = theta_phi(pos, edge_index, *references)
        offset = positional_encoding(edge_index[0] - edge_index[1], NUM_POS_EMB).to(pos.dtype)
        return {
            "edge_index": edge_index,
            "feature0": self.basis.distance_theta_phi(distance, theta, phi, into_residue),
            "feature1": self.orientation(graph, pos, edge_index, references, both_residues),
            "pos_emb": torch.where(both_residues.unsqueeze(-1), offset, torch.zeros_like(offset)),
        }

    def prepare(self, graph: Any, node_input: Tensor) -> EncoderState:
        pos, node_batch = residue_and_ligand_nodes(graph)
        extra = {"ligand_h": self.ligand_in(graph.ligand_type), **self.edge_features(graph, pos, node_batch)}
        return EncoderState(s=self.node_in(self.residue_input(graph, node_input)), extra=extra)

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        extra = state.extra
        residues = state.s.shape[0]
        h = self.layers[depth](
            torch.cat([state.s, extra["ligand_h"]]), extra["feature0"], extra["feature1"], extra["pos_emb"], extra["edge_index"]
        )
        return EncoderState(s=h[:residues], extra={**extra, "ligand_h": h[residues:]})
