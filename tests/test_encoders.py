"""Every registered structure encoder on real structures: invariance, batch independence,
missing atoms, ligand nodes and gradients per layer (combinations with fusions and tasks are
in test_combinations.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bihmf.data.ppbs import parse
from bihmf.models.encoders import ENCODERS, StructureEncoder
from bihmf.models.encoders.gearnet import SEQUENTIAL_OFFSETS, sequential_edges
from bihmf.models.encoders.pronet import nearest_edges
from bihmf.models.fusion.base import NUM_RESIDUE_TYPES
from bihmf.models.graph import C_IDX, N_IDX, O_IDX, radius_edges
from bihmf.batching import collate, protein_graph

SIZES = {"width": 16, "vector_dim": 4, "num_layers": 3, "knn": 8, "dropout": 0.0}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def records(demo_raw, demo_spec):
    return {r.protein_id: r for r in parse(demo_raw, demo_spec)[0]}


def _graphs(records, ids):
    return [protein_graph(records[protein_id], None) for protein_id in ids]


@pytest.fixture(scope="module")
def graphs(records):
    return _graphs(records, ("1hvr_0-A", "4e43_0-B", "1bd2_0-B"))


@pytest.fixture(scope="module")
def ligand_graphs(lba_records):
    return [protein_graph(r, None, "pocket") for r in lba_records[:2]]


def _encoder(name: str, dtype: torch.dtype = torch.float32) -> StructureEncoder:
    torch.manual_seed(0)
    return ENCODERS[name](NUM_RESIDUE_TYPES, **SIZES).to(dtype).eval()


def _encode(encoder: StructureEncoder, graphs) -> torch.Tensor:
    """Residue states after every layer (what fusion reads last), residue-type one-hot input."""
    batch = collate(graphs, CPU)
    dtype = next(encoder.parameters()).dtype
    state = encoder.prepare(batch, F.one_hot(batch.residue_type, NUM_RESIDUE_TYPES).to(dtype))
    for depth in range(encoder.num_layers):
        state = encoder.layer(depth, state)
    return state.s


def _transformed(graphs, rotation: torch.Tensor, shift: torch.Tensor):
    """float64 copies of the graphs with protein and ligand moved by x -> R x + t."""
    out = []
    for g in graphs:
        h = g.clone()
        h.coords = g.coords.double() @ rotation.T + shift
        h.ligand_pos = g.ligand_pos.double() @ rotation.T + shift
        out.append(h)
    return out


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.linalg.det(q))


IDENTITY, ORIGIN = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_residue_states_are_invariant_to_rotation_and_translation(name, graphs):
    encoder = _encoder(name, torch.float64)
    with torch.no_grad():
        before = _encode(encoder, _transformed(graphs, IDENTITY, ORIGIN))
        after = _encode(encoder, _transformed(graphs, _rotation(1), torch.tensor([30.0, -12.0, 7.5], dtype=torch.float64)))
    assert before.shape == (sum(g.num_nodes for g in graphs), SIZES["width"])
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_batch_order_does_not_change_a_proteins_states(name, graphs):
    encoder = _encoder(name, torch.float64)
    order = [2, 0, 1]
    with torch.no_grad():
        straight = _encode(encoder, _transformed(graphs, IDENTITY, ORIGIN))
        permuted = _encode(encoder, _transformed([graphs[i] for i in order], IDENTITY, ORIGIN))
    sizes = [g.num_nodes for g in graphs]
    by_protein = dict(zip(order, permuted.split([sizes[i] for i in order])))
    for i, part in enumerate(straight.split(sizes)):
        torch.testing.assert_close(by_protein[i], part, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_missing_backbone_atoms_give_finite_states_and_gradients(name, graphs):
    encoder = _encoder(name).train()
    damaged = []
    for g in graphs:
        h = g.clone()
        h.coords = g.coords.clone()
        h.coords[::5, N_IDX] = math.nan
        h.coords[1::7, C_IDX] = math.nan
        h.coords[::3, O_IDX] = math.nan
        damaged.append(h)
    s = _encode(encoder, damaged)
    assert torch.isfinite(s).all()
    s.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_ligand_atoms_change_residue_states_and_stay_invariant(name, ligand_graphs):
    encoder = _encoder(name, torch.float64)
    assert all(g.ligand_pos.shape[0] > 0 for g in ligand_graphs)
    moved_ligand = []
    for g in _transformed(ligand_graphs, IDENTITY, ORIGIN):
        g.ligand_pos = g.ligand_pos + torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
        moved_ligand.append(g)
    with torch.no_grad():
        base = _encode(encoder, _transformed(ligand_graphs, IDENTITY, ORIGIN))
        moved = _encode(encoder, _transformed(ligand_graphs, _rotation(2), torch.tensor([-4.0, 9.0, 1.5], dtype=torch.float64)))
        shifted = _encode(encoder, moved_ligand)
    assert base.shape[0] == sum(g.num_nodes for g in ligand_graphs), "ligand rows must not reach state.s"
    torch.testing.assert_close(moved, base, atol=1e-4, rtol=0)
    assert (shifted - base).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_gradients_reach_every_layer(name, graphs):
    encoder = _encoder(name).train()
    _encode(encoder, graphs).square().sum().backward()
    for depth in range(SIZES["num_layers"]):
        grads = [p.grad for n, p in encoder.named_parameters() if n.startswith(f"layers.{depth}.") and p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, f"{name} layer {depth} gets no gradient"


def test_radius_edges_match_brute_force_and_stay_within_proteins():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(70, 3, generator=gen) * 8
    batch = torch.cat([torch.zeros(40, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    edges = radius_edges(pos, batch, cutoff=6.0, block=7)
    found = set(zip(edges[0].tolist(), edges[1].tolist()))
    expected = {
        (j, i) for i in range(70) for j in range(70)
        if i != j and batch[i] == batch[j] and (pos[i] - pos[j]).norm() < 6.0
    }
    assert found == expected and edges.shape[1] == len(found)


def test_pronet_edges_keep_each_targets_nearest_sources_within_the_cutoff():
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(60, 3, generator=gen) * 4
    batch = torch.cat([torch.zeros(35, dtype=torch.long), torch.ones(25, dtype=torch.long)])
    edges = nearest_edges(pos, batch, cutoff=6.0, limit=5)
    found = set(zip(edges[0].tolist(), edges[1].tolist()))
    expected, most = set(), 0
    for i in range(60):
        near = [j for j in range(60) if j != i and batch[i] == batch[j] and (pos[i] - pos[j]).norm() < 6.0]
        expected |= {(j, i) for j in sorted(near, key=lambda j: float((pos[i] - pos[j]).norm()))[:5]}
        most = max(most, len(near))
    assert most > 5, "the limit must bind somewhere"
    assert found == expected and edges.shape[1] == len(found)


def test_gearnet_sequential_edges_follow_peptide_bonds():
    # residues 0-1-2-3 bonded, a gap after 3, then 4-5 bonded, 5 ends the chain
    chain_break = torch.tensor([False, False, False, True, False, True])
    edges, relation = sequential_edges(chain_break)
    found = {(j, i, SEQUENTIAL_OFFSETS[r]) for j, i, r in zip(edges[0].tolist(), edges[1].tolist(), relation.tolist())}
    bonded = [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (4, 5)]
    expected = {(a, b, b - a) for a, b in bonded} | {(b, a, a - b) for a, b in bonded} | {(i, i, 0) for i in range(6)}
    assert found == expected and edges.shape[1] == len(expected)
