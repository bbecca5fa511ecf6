"""EGNN against the paper's Eqs. (3)-(6) (Satorras et al., ICML 2021): a hand-computed 4-node
example, E(3) equivariance (rotations, reflections, translations) on a real complex, permutation
equivariance and the kNN graph without self-pairs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bihmf.models.encoders.egnn import OFFSET_FEATURES, EGNNEncoder, EGNNLayer
from bihmf.models.fusion.base import NUM_RESIDUE_TYPES
from bihmf.models.graph import knn_edges
from bihmf.batching import collate, protein_graph

WIDTH = 8
pytestmark = pytest.mark.usefixtures("single_thread")


def _layer(seed: int = 0) -> EGNNLayer:
    """Coordinate steps of trained size (the authors start phi_x near zero)."""
    torch.manual_seed(seed)
    layer = EGNNLayer(WIDTH, OFFSET_FEATURES, dropout=0.0, update_coords=True).double().eval()
    nn.init.normal_(layer.phi_x[-1].weight, std=0.1)
    return layer


def _orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.linalg.det(q))
    return q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)) if reflect else q


def test_layer_is_equations_3_to_6_on_a_hand_computed_graph():
    """Four nodes at integer offsets, so the squared distances are exact integers written out
    below; node i sums over its listed neighbours only, with C = 1 / (number of them)."""
    layer = _layer()
    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 2.0, 2.0]], dtype=torch.float64)
    squared = {(0, 1): 25.0, (0, 2): 4.0, (0, 3): 9.0, (1, 2): 29.0, (1, 3): 12.0, (2, 3): 5.0}
    neighbours = {0: [1, 2, 3], 1: [0, 2], 2: [3], 3: [0, 1, 2]}
    edges = [(j, i) for i, js in neighbours.items() for j in js]
    edge_index = torch.tensor(edges).T
    generator = torch.Generator().manual_seed(1)
    h = torch.randn(4, WIDTH, generator=generator, dtype=torch.float64)
    attr = torch.randn(len(edges), OFFSET_FEATURES, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        h_out, x_out = layer(h, x, edge_index, attr)
        for i, js in neighbours.items():
            shift = torch.zeros(3, dtype=torch.float64)
            m_i = torch.zeros(WIDTH, dtype=torch.float64)
            for j in js:
                d2 = torch.tensor([squared[min(i, j), max(i, j)]], dtype=torch.float64)
                m_ij = layer.phi_e(torch.cat([h[i], h[j], d2, attr[edges.index((j, i))]]))
                shift += (x[i] - x[j]) * layer.phi_x(m_ij)
                m_i += m_ij
            torch.testing.assert_close(x_out[i], x[i] + shift / len(js), atol=1e-12, rtol=0)
            torch.testing.assert_close(h_out[i], h[i] + layer.phi_h(torch.cat([h[i], m_i])), atol=1e-12, rtol=0)


def _random_graph(nodes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, 3, generator=generator, dtype=torch.float64) * 5.0
    h = torch.randn(nodes, WIDTH, generator=generator, dtype=torch.float64)
    edge_index = knn_edges(x, torch.zeros(nodes, dtype=torch.long), k=4)
    attr = torch.randn(edge_index.shape[1], OFFSET_FEATURES, generator=generator, dtype=torch.float64)
    return h, x, edge_index, attr


def test_layer_is_permutation_equivariant():
    layer = _layer()
    h, x, edge_index, attr = _random_graph(12, seed=2)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    inverse = torch.argsort(perm)  # node k of the permuted graph is node perm[k]
    with torch.no_grad():
        h_out, x_out = layer(h, x, edge_index, attr)
        h_perm, x_perm = layer(h[perm], x[perm], inverse[edge_index], attr)
    torch.testing.assert_close(h_perm, h_out[perm], atol=1e-12, rtol=0)
    torch.testing.assert_close(x_perm, x_out[perm], atol=1e-12, rtol=0)


@pytest.fixture(scope="module")
def complex_graph(lba_records):
    graph = protein_graph(lba_records[0], None, "pocket")
    assert graph.ligand_pos.shape[0] > 0
    return graph


def _prepare(encoder: EGNNEncoder, graph, rotation: torch.Tensor, shift: torch.Tensor):
    moved = graph.clone()
    moved.coords = graph.coords.double() @ rotation.T + shift
    moved.ligand_pos = graph.ligand_pos.double() @ rotation.T + shift
    batch = collate([moved], torch.device("cpu"))
    return encoder.prepare(batch, F.one_hot(batch.residue_type, NUM_RESIDUE_TYPES).double())


def _layers(encoder: EGNNEncoder, state) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(residue + ligand features, coordinates) after every layer."""
    out = []
    for depth in range(encoder.num_layers):
        state = encoder.layer(depth, state)
        out.append((torch.cat([state.s, state.extra["ligand_h"]]), state.extra["x"]))
    return out


@pytest.mark.parametrize("reflect", [False, True])
def test_features_invariant_and_coordinates_equivariant_on_a_real_complex(complex_graph, reflect):
    """The layers are E(3)-equivariant (rotations, reflections, translations). The encoder's
    input features include backbone dihedrals, which a reflection negates (proteins are chiral),
    so from the structure on it is invariant to rotations and translations only; with a
    reflection the layers are run on the prepared state with reflected coordinates."""
    torch.manual_seed(0)
    encoder = EGNNEncoder(NUM_RESIDUE_TYPES, WIDTH, 0, num_layers=3, knn=8, dropout=0.0).double().eval()
    for layer in encoder.layers[:-1]:
        nn.init.normal_(layer.phi_x[-1].weight, std=0.1)  # trained-size steps: the coordinates really move
    transform = _orthogonal(5, reflect)
    shift = torch.tensor([25.0, -40.0, 7.5], dtype=torch.float64)
    eye, origin = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        state = _prepare(encoder, complex_graph, eye, origin)
        base = _layers(encoder, state)
        if reflect:
            moved_state = dataclasses.replace(state, extra={**state.extra, "x": state.extra["x"] @ transform.T + shift})
        else:
            moved_state = _prepare(encoder, complex_graph, transform, shift)
        moved = _layers(encoder, moved_state)
    assert (base[0][1] - state.extra["x"]).abs().max() > 1e-3, "the first layer must move the coordinates"
    for (h, x), (h_moved, x_moved) in zip(base, moved):
        torch.testing.assert_close(h_moved, h, atol=1e-8, rtol=0)
        torch.testing.assert_close(x_moved, x @ transform.T + shift, atol=1e-8, rtol=0)


def test_graph_has_no_self_pairs_and_k_neighbours_per_node(complex_graph):
    """M - 1 of Eq. (4) is the neighbour count: k for every node, self never among them."""
    encoder = EGNNEncoder(NUM_RESIDUE_TYPES, WIDTH, 0, num_layers=2, knn=8, dropout=0.0).double()
    batch = collate([complex_graph, complex_graph], torch.device("cpu"))
    with torch.no_grad():
        state = encoder.prepare(batch, F.one_hot(batch.residue_type, NUM_RESIDUE_TYPES).double())
    src, dst = state.extra["edge_index"]
    assert not (src == dst).any()
    nodes = state.extra["x"].shape[0]
    assert torch.equal(torch.bincount(dst, minlength=nodes), torch.full((nodes,), 8))
