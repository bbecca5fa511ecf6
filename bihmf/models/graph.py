"""Residue graphs and geometric features in pure torch.

PyG 2.8's ``knn_graph`` / ``radius_graph`` need pyg-lib, which has no wheel here, so the
k-nearest-neighbour and radius graphs over CA atoms are built with blocked distance
computations over groups of similar-length proteins of a batch at once (padded to the
group's longest, a few kernels per group, not a Python loop per protein): memory is about
``block x N``, never ``N x N``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

N_IDX, CA_IDX, C_IDX, O_IDX, CB_IDX = range(5)


PADDING_SLACK = 1.25  # most padded distance entries a group may compute per real one


def _padded_by_protein(pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Positions as [proteins, longest, 3] (zeros past each protein's end) and the node index
    of each slot (-1 past the end).

    Encoders append ligand atoms after all residues, so ``batch`` is not sorted; a stable sort
    keeps each protein's nodes in their order, so edges come out in the per-protein order.
    """
    order = torch.argsort(batch, stable=True)
    grouped = batch[order]
    counts = torch.bincount(grouped)
    local = torch.arange(order.shape[0], device=pos.device) - (torch.cumsum(counts, 0) - counts)[grouped]
    longest = int(counts.max())
    padded = pos.new_zeros(counts.shape[0], longest, pos.shape[-1])
    padded[grouped, local] = pos[order]
    index = torch.full((counts.shape[0], longest), -1, dtype=torch.long, device=pos.device)
    index[grouped, local] = order
    return padded, index


def length_groups(counts: list[int], slack: float = PADDING_SLACK) -> list[list[int]]:
    """Proteins in groups of similar length, longest first: padding a group to its longest
    member computes at most ``slack`` times the distances a loop per protein would (on a CPU
    the padded entries cost as much as real ones), while a batch still needs only a few groups."""
    groups: list[list[int]] = []
    area = 0
    for protein in sorted((p for p, n in enumerate(counts) if n > 0), key=lambda p: -counts[p]):
        if groups and (len(groups[-1]) + 1) * counts[groups[-1][0]] ** 2 <= slack * (area + counts[protein] ** 2):
            groups[-1].append(protein)
            area += counts[protein] ** 2
        else:
            groups.append([protein])
            area = counts[protein] ** 2
    return groups


def _distance_blocks(pos: Tensor, batch: Tensor, block: int, direct: bool) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Per length group and block of rows: distances [proteins, rows, longest] from those rows
    of each protein to all its nodes (inf to padding and to self), the node index of every
    slot of the group [proteins, longest] (-1: padding) and of the block's rows.

    Rows per block are sized so that a block holds about ``block x N`` entries (N = nodes of
    the group): a group of similar lengths in one go, one long protein ``block`` rows at a time.
    """
    mode = "donot_use_mm_for_euclid_dist" if direct else "use_mm_for_euclid_dist_if_necessary"
    padded, index = _padded_by_protein(pos, batch)
    counts = (index >= 0).sum(dim=1)
    for group in length_groups(counts.tolist()):
        chosen = torch.tensor(group, device=pos.device)
        longest = int(max(counts[group].tolist()))
        nodes, slots = padded[chosen, :longest], index[chosen, :longest]
        present = slots >= 0
        rows = max(1, min(longest, block * int(present.sum()) // (len(group) * longest)))
        for start in range(0, longest, rows):
            stop = min(start + rows, longest)
            dist = torch.cdist(nodes[:, start:stop], nodes, compute_mode=mode)
            dist = dist.masked_fill(~(present[:, start:stop, None] & present[:, None, :]), math.inf)
            own = torch.arange(stop - start, device=pos.device)
            dist[:, own, own + start] = math.inf
            yield dist, slots, slots[:, start:stop]


def _in_node_order(sources: list[Tensor], targets: list[Tensor], batch: Tensor) -> Tensor:
    """Edges of all blocks ordered by protein, then target node (stable: a target keeps its
    edges' order), as one loop over proteins emits them."""
    if not sources:
        return torch.zeros(2, 0, dtype=torch.long, device=batch.device)
    source, target = torch.cat(sources), torch.cat(targets)
    rank = torch.empty_like(batch)
    rank[torch.argsort(batch, stable=True)] = torch.arange(batch.shape[0], device=batch.device)
    order = torch.argsort(rank[target], stable=True)
    return torch.stack([source[order], target[order]])


def knn_edges(ca: Tensor, batch: Tensor, k: int, block: int = 1024) -> Tensor:
    """Edges j -> i from each residue's k nearest residues of the same protein (self excluded).

    Returns ``edge_index`` [2, E] with row 0 = source j, row 1 = target i (PyG convention),
    ordered by protein, then target, then distance. Residues of a protein with fewer than
    k+1 residues connect to all others. Proteins of similar length go through each kernel
    together (:func:`length_groups`), so a step launches a few kernels per group instead of a
    dozen per protein.
    """
    sources, targets = [], []
    if ca.shape[0]:
        for dist, slots, rows in _distance_blocks(ca, batch, block, direct=False):
            kk = min(k, slots.shape[1] - 1)
            if kk <= 0:
                continue
            nearest = dist.topk(kk, dim=2, largest=False).indices
            wanted = torch.clamp((slots >= 0).sum(dim=1) - 1, max=k)
            keep = (rows[:, :, None] >= 0) & (torch.arange(kk, device=ca.device) < wanted[:, None, None])
            targets.append(rows[:, :, None].expand_as(nearest)[keep])
            sources.append(torch.gather(slots, 1, nearest.flatten(1)).view_as(nearest)[keep])
    return _in_node_order(sources, targets, batch)


def normalize(x: Tensor, dim: int = -1) -> Tensor:
    """Unit vectors; zero (not NaN) where the input is zero or NaN."""
    x = torch.nan_to_num(x)
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-8)


def rbf(distance: Tensor, count: int = 16, d_max: float = 20.0) -> Tensor:
    """Gaussian radial basis expansion of distances."""
    centers = torch.linspace(0.0, d_max, count, device=distance.device)
    width = d_max / count
    return torch.exp(-(((distance.unsqueeze(-1) - centers) / width) ** 2))


def positional_encoding(offset: Tensor, count: int = 16) -> Tensor:
    """Sinusoidal encoding of the sequence offset j - i between connected residues."""
    freq = torch.exp(torch.arange(0, count, 2, device=offset.device, dtype=torch.float32) * -(math.log(10000.0) / count))
    angles = offset.float().unsqueeze(-1) * freq
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> Tensor:
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.cross(b0, b1, dim=-1), torch.cross(b1, b2, dim=-1)
    m1 = torch.cross(n1, normalize(b1), dim=-1)
    return torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))


def backbone_dihedrals(coords: Tensor, chain_break: Tensor) -> Tensor:
    """sin/cos of phi, psi, omega per residue [N, 6]; zero where undefined.

    ``chain_break[i]`` is True when residue i+1 does not continue residue i's chain
    (new chain, new protein in the batch, or a gap), so no angle spans a break.
    """
    n, ca, c = coords[:, N_IDX], coords[:, CA_IDX], coords[:, C_IDX]
    angles = torch.zeros(coords.shape[0], 3, device=coords.device)
    valid = torch.zeros(coords.shape[0], 3, dtype=torch.bool, device=coords.device)
    if coords.shape[0] > 1:
        linked = ~chain_break[:-1]
        phi = _dihedral(c[:-1], n[1:], ca[1:], c[1:])
        psi = _dihedral(n[:-1], ca[:-1], c[:-1], n[1:])
        omega = _dihedral(ca[:-1], c[:-1], n[1:], ca[1:])
        angles[1:, 0], valid[1:, 0] = phi, linked
        angles[:-1, 1], valid[:-1, 1] = psi, linked
        angles[:-1, 2], valid[:-1, 2] = omega, linked
    valid &= torch.isfinite(angles)
    angles = torch.nan_to_num(angles)
    feats = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return feats * valid.repeat(1, 2)


def orientation_vectors(coords: Tensor, chain_break: Tensor) -> Tensor:
    """Forward / backward CA directions and the side-chain direction [N, 3, 3].

    The side-chain direction is GVP-GNN's (Jing et al.): the tetrahedral direction opposite the
    bisector of CA->N and CA->C, tilted along their plane normal.
    """
    ca = coords[:, CA_IDX]
    forward = torch.zeros_like(ca)
    backward = torch.zeros_like(ca)
    if ca.shape[0] > 1:
        step = normalize(ca[1:] - ca[:-1]) * (~chain_break[:-1]).unsqueeze(-1)
        forward[:-1], backward[1:] = step, -step
    to_c, to_n = normalize(coords[:, C_IDX] - ca), normalize(coords[:, N_IDX] - ca)
    bisector = normalize(to_c + to_n)
    normal = normalize(torch.cross(to_c, to_n, dim=-1))
    side = -bisector * math.sqrt(1.0 / 3.0) - normal * math.sqrt(2.0 / 3.0)
    return torch.stack([forward, backward, side], dim=1)


def chain_breaks(coords: Tensor, chain_index: Tensor, max_peptide_bond: float = 2.0) -> Tensor:
    """True where the next residue is in another chain/protein or not peptide-bonded (C-N gap)."""
    breaks = torch.ones(coords.shape[0], dtype=torch.bool, device=coords.device)
    if coords.shape[0] > 1:
        gap = (coords[1:, N_IDX] - coords[:-1, C_IDX]).norm(dim=-1)
        same_chain = chain_index[1:] == chain_index[:-1]
        breaks[:-1] = ~(same_chain & (gap < max_peptide_bond))
    return breaks


LIGAND_ELEMENTS = ("C", "N", "O", "S", "P", "F", "CL", "BR", "I", "B", "SE", "FE", "ZN", "MG", "CA", "MN", "CU", "NA", "K")
OTHER_ELEMENT = len(LIGAND_ELEMENTS)  # index of every element not listed


def element_index(elements: tuple[str, ...] | list[str]) -> list[int]:
    """Ligand atom types for the structure graph (ATOM3D writes elements in upper case)."""
    lookup = {name: i for i, name in enumerate(LIGAND_ELEMENTS)}
    return [lookup.get(e.strip().upper(), OTHER_ELEMENT) for e in elements]


def radius_edges(pos: Tensor, batch: Tensor, cutoff: float, block: int = 1024) -> Tensor:
    """Edges j -> i between nodes of the same protein closer than ``cutoff`` (self excluded).

    Same contract, order, grouping and memory bound as :func:`knn_edges`. Distances are
    computed directly rather than through the ``|x|^2 - 2 x.y + |y|^2`` matrix product, whose
    float32 cancellation at coordinates of ~100 Å would let a rigid motion flip edges near
    the cutoff.
    """
    sources, targets = [], []
    if pos.shape[0]:
        for dist, slots, rows in _distance_blocks(pos, batch, block, direct=True):
            protein, row, col = torch.nonzero(dist < cutoff, as_tuple=True)
            targets.append(rows[protein, row])
            sources.append(slots[protein, col])
    return _in_node_order(sources, targets, batch)


def residue_and_ligand_nodes(graph: Any) -> tuple[Tensor, Tensor]:
    """Node positions and protein index: residues' CA atoms first, then the ligand atoms (LBA).

    Encoders place ligand atoms after the residue rows so that ``state.s`` is the first N
    rows; CA is always present (residues without one are dropped in parsing), ``nan_to_num``
    only guards hand-built inputs.
    """
    pos = torch.cat([torch.nan_to_num(graph.coords[:, CA_IDX]), graph.ligand_pos.to(graph.coords.dtype)])
    return pos, torch.cat([graph.batch, graph.ligand_pos_batch])
