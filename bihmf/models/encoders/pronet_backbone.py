"""ProNet at the backbone level (Wang et al., ICLR 2023): the amino-acid level
(:mod:`pronet`) with the backbone atoms N, CA, C added in two places, as in the release:

* node input: the fusion's per-residue input beside the sin/cos of the backbone dihedrals
  phi, psi, omega (:func:`backbone_dihedrals`; zero where a chain ends or breaks);
* feature1: instead of one torsion between CA neighbourhoods, the three Euler angles of the
  rotation from residue i's frame to residue j's, each expanded in the radial functions times
  zonal harmonics. A residue's frame has x = N - CA and z = x x (x x (C - CA)); the line of
  nodes is z_i x z_j, the angles are x_i's rotation onto it about z_i, the tilt between z_i
  and z_j, and the line's rotation onto x_j about z_j.

Together with (d, theta, phi) these fix residue j's backbone relative to residue i's up to a
rigid motion. A residue missing N or C takes CA in its place (the release's data
convention), which leaves its Euler angles undefined: like ligand ends, they then contribute
only the angle-free l = 0 term.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bihmf.models.encoders.pronet import NUM_RADIAL, NUM_SPHERICAL, ProNetEncoder, _cross, _dot
from bihmf.models.graph import C_IDX, CA_IDX, N_IDX, backbone_dihedrals, chain_breaks

EULER_EPS = 1e-7  # added to |z| before dividing, as in the release


def backbone_axes(coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per residue x = N - CA, z = x x (x x (C - CA)) and whether both are defined (N and C present)."""
    ca = torch.nan_to_num(coords[:, CA_IDX])
    n, c = (torch.where(torch.isfinite(coords[:, idx]), coords[:, idx], ca) for idx in (N_IDX, C_IDX))
    x = n - ca
    z = _cross(x, _cross(x, c - ca))
    defined = torch.isfinite(coords[:, [N_IDX, C_IDX]]).all(dim=-1).all(dim=-1) & (z.norm(dim=-1) > 0)
    return x, z, defined


def euler_angles(x: Tensor, z: Tensor, edge_index: Tensor) -> Tensor:
    """[E, 3] Euler angles of the rotation from residue i's frame to residue j's."""
    j, i = edge_index
    x_i, z_i, x_j, z_j = x[i], z[i], x[j], z[j]
    nodes = _cross(z_i, z_j)
    first = torch.atan2(_dot(_cross(x_i, nodes), z_i) / (z_i.norm(dim=-1) + EULER_EPS), _dot(x_i, nodes))
    tilt = torch.atan2(_cross(z_i, z_j).norm(dim=-1), _dot(z_i, z_j))
    last = torch.atan2(_dot(_cross(nodes, x_j), z_j) / (z_j.norm(dim=-1) + EULER_EPS), _dot(nodes, x_j))
    return torch.stack([first, tilt, last], dim=-1)


class ProNetBackboneEncoder(ProNetEncoder):
    """Backbone-level ProNet: dihedral node input and Euler-angle orientation features."""

    extra_input = 6
    orientation_features = 3 * NUM_RADIAL * NUM_SPHERICAL

    def residue_input(self, graph: Any, node_input: Tensor) -> Tensor:
        dihedrals = backbone_dihedrals(graph.coords, chain_breaks(graph.coords, graph.chain_index))
        return torch.cat([node_input, dihedrals.to(node_input.dtype)], dim=-1)

    def orientation(self, graph: Any, pos: Tensor, edge_index: Tensor, references: tuple[Tensor, Tensor], both_residues: Tensor) -> Tensor:
        """feature1 of the backbone level: the three Euler angles, each through the zonal basis."""
        x, z, defined = backbone_axes(graph.coords.to(pos.dtype))
        ligands = pos.shape[0] - x.shape[0]
        x, z = (torch.cat([v, v.new_zeros(ligands, 3)]) for v in (x, z))
        defined = torch.cat([defined, defined.new_zeros(ligands)])
        known = both_residues & defined[edge_index[0]] & defined[edge_index[1]]
        distance = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
        angles = euler_angles(x, z, edge_index)
        return torch.cat([self.basis.distance_angle(distance, angle, known) for angle in angles.unbind(-1)], dim=-1)
