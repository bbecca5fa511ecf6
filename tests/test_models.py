"""Encoders and fusions: invariance, gradients into both modalities, graph construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bihmf.benchmark import validate_config
from bihmf.data.ppbs import parse
from bihmf.models.fusion import FUSIONS, FusionContext, LayerChoice, cached_layers, paired_layers
from bihmf.models.graph import knn_edges
from bihmf.models.model import build_model
from bihmf.batching import collate, protein_graph

ESM_DIM, ESM_DEPTH = 16, 6
CONTEXT = FusionContext(ESM_DIM, (2, 4, 6), LayerChoice(3, ESM_DEPTH))


@pytest.fixture(scope="module")
def model_cfg():
    cfg = validate_config({"datasets": {"x": {"kind": "ppbs", "task": "residue_binary", "download": {}, "label_files": [{"file": "f", "split": "train"}]}}})
    return {**cfg["model"], "hidden_dim": 16, "vector_dim": 4, "num_layers": 3, "knn": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def graphs(demo_raw, demo_spec):
    records, _ = parse(demo_raw, demo_spec)
    rng = np.random.default_rng(0)
    chosen = [r for r in records if r.protein_id in ("1hvr_0-A", "4e43_0-B", "1bd2_0-B")]
    return [protein_graph(r, rng.standard_normal((len(r.sequence), 3, ESM_DIM)).astype(np.float32)) for r in chosen]


def _random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (q * torch.sign(torch.linalg.det(q))).float()


def _moved(graphs, rotation, shift):
    moved = []
    for g in graphs:
        h = g.clone()
        h.coords = g.coords @ rotation.T + shift
        moved.append(h)
    return moved


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_outputs_invariant_to_rotation_and_translation(fusion, graphs, model_cfg):
    torch.manual_seed(0)
    model = build_model("gvp", fusion, "residue_binary", model_cfg, CONTEXT).eval()
    rotation, shift = _random_rotation(1), torch.tensor([30.0, -12.0, 7.5])
    with torch.no_grad():
        before = model(collate(graphs, torch.device("cpu")))
        after = model(collate(_moved(graphs, rotation, shift), torch.device("cpu")))
    assert torch.isfinite(before).all()
    torch.testing.assert_close(before, after, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("fusion", ["serial", "bihmf_local"])
def test_gradients_reach_both_modalities(fusion, graphs, model_cfg):
    torch.manual_seed(0)
    model = build_model("gvp", fusion, "residue_binary", model_cfg, CONTEXT)
    batch = collate(graphs, torch.device("cpu"))
    batch.esm.requires_grad_(True)
    batch.coords.requires_grad_(True)
    model(batch).sum().backward()
    assert batch.esm.grad.abs().sum() > 0, "no gradient reaches the sequence (ESM) input"
    assert batch.coords.grad.abs().sum() > 0, "no gradient reaches the structure input"
    for depth in range(model_cfg["num_layers"]):
        grads = [p.grad for n, p in model.named_parameters() if f".encoder.layers.{depth}." in n and p.grad is not None]
        assert sum(g.abs().sum() for g in grads) > 0, f"GNN layer {depth} gets no gradient"


def test_bihmf_local_uses_every_paired_layer(graphs, model_cfg):
    """Perturbing any one paired ESM layer changes the output (each depth reads its own layer)."""
    torch.manual_seed(0)
    model = build_model("gvp", "bihmf_local", "residue_binary", model_cfg, CONTEXT).eval()
    batch = collate(graphs, torch.device("cpu"))
    with torch.no_grad():
        base = model(batch)
        for slot in range(3):
            batch2 = batch.clone()
            batch2.esm = batch.esm.clone()
            batch2.esm[:, slot] += 1.0
            assert not torch.allclose(model(batch2), base)


def test_struct_only_ignores_esm(graphs, model_cfg):
    torch.manual_seed(0)
    model = build_model("gvp", "struct_only", "residue_binary", model_cfg, CONTEXT).eval()
    batch = collate(graphs, torch.device("cpu"))
    with torch.no_grad():
        base = model(batch)
        batch.esm = batch.esm + 5.0
        torch.testing.assert_close(model(batch), base)


def test_layer_pairing_and_cache_selection():
    assert paired_layers(3, 33) == [11, 22, 33]
    assert paired_layers(4, 6) == [2, 3, 5, 6]
    assert paired_layers(2, 6, [1, 6]) == [1, 6]
    with pytest.raises(ValueError, match="must list 2 layers"):
        paired_layers(2, 6, [1, 2, 3])
    assert cached_layers(["struct_only"], LayerChoice(3, 6)) == [6]
    assert cached_layers(["struct_only", "serial", "bihmf_local"], LayerChoice(3, 6)) == [2, 4, 6]


def test_missing_cache_layer_is_a_clear_error(model_cfg):
    context = FusionContext(ESM_DIM, (6,), LayerChoice(3, ESM_DEPTH))
    with pytest.raises(ValueError, match="ESM layer 2 is not in the embedding cache"):
        build_model("gvp", "bihmf_local", "residue_binary", model_cfg, context)


def test_knn_edges_match_brute_force_and_stay_within_proteins():
    gen = torch.Generator().manual_seed(0)
    ca = torch.randn(70, 3, generator=gen) * 10
    batch = torch.cat([torch.zeros(40, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    edges = knn_edges(ca, batch, k=5, block=7)
    assert (batch[edges[0]] == batch[edges[1]]).all()
    for i in range(70):
        same = torch.nonzero(batch == batch[i]).flatten()
        dist = (ca[same] - ca[i]).norm(dim=-1)
        dist[same == i] = math.inf
        expected = set(same[dist.topk(5, largest=False).indices].tolist())
        assert set(edges[0][edges[1] == i].tolist()) == expected


@pytest.fixture(scope="module")
def ligand_graphs(lba_records):
    rng = np.random.default_rng(1)
    return [
        protein_graph(r, rng.standard_normal((len(r.sequence), 3, ESM_DIM)).astype(np.float32), "pocket")
        for r in lba_records[:2]
    ]


def test_pocket_graph_keeps_marked_residues_with_their_full_chain_embedding_rows(lba_records):
    record = lba_records[0]
    esm = np.arange(len(record.sequence) * 3 * ESM_DIM, dtype=np.float32).reshape(len(record.sequence), 3, ESM_DIM)
    graph = protein_graph(record, esm, "pocket")
    pocket = np.flatnonzero(record.labels == 1)
    assert 0 < graph.num_nodes == len(pocket) < len(record.sequence)
    np.testing.assert_array_equal(graph.esm.numpy(), esm[pocket])
    np.testing.assert_array_equal(graph.coords.numpy(), record.coords[pocket])
    assert graph.ligand_pos.shape == (len(record.ligand_elems), 3) and len(record.ligand_elems) > 0


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_ligand_graph_is_invariant_and_the_ligand_matters(fusion, ligand_graphs, model_cfg):
    torch.manual_seed(0)
    model = build_model("gvp", fusion, "graph_regression", model_cfg, CONTEXT).eval()
    rotation, shift = _random_rotation(2), torch.tensor([-4.0, 9.0, 1.5])
    moved = []
    for g in ligand_graphs:
        h = g.clone()
        h.coords = g.coords @ rotation.T + shift
        h.ligand_pos = g.ligand_pos @ rotation.T + shift
        moved.append(h)
    shifted_ligand = []
    for g in ligand_graphs:
        h = g.clone()
        h.ligand_pos = g.ligand_pos + torch.tensor([3.0, 0.0, 0.0])
        shifted_ligand.append(h)
    cpu = torch.device("cpu")
    with torch.no_grad():
        base = model(collate(ligand_graphs, cpu))
        torch.testing.assert_close(model(collate(moved, cpu)), base, atol=2e-4, rtol=1e-4)
        if fusion != "seq_only":  # the one fusion that must ignore structure
            assert not torch.allclose(model(collate(shifted_ligand, cpu)), base)
