"""Fusion-specific behaviour on real demo proteins: no leakage between the proteins of a batch,
seq_only's independence from structure, attention width checks. Every encoder x fusion x task
is built, differentiated and overfitted in test_combinations.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bihmf.data.ppbs import parse
from bihmf.models.encoders import StructureEncoder
from bihmf.models.fusion import FUSIONS, FusionContext
from bihmf.models.model import build_model
from bihmf.batching import collate, protein_graph

ESM_DIM, ESM_DEPTH = 16, 6
# Layer 3 is cached but unpaired for 3 GNN layers ([2, 4, 6]), so a fusion reading a layer it
# does not declare is caught; with 2 GNN layers the pairing is [3, 6].
SLOTS = (2, 3, 4, 6)  # the cached layers: slots of graph.esm
TASK_OPTIONS = {"graph_classification": {"num_classes": 5}}
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def graphs(demo_raw, demo_spec):
    """The 8 smallest demo proteins (99 to 190 residues) with random ESM layers [N, 4, D]."""
    records, _ = parse(demo_raw, demo_spec)
    records = sorted(records, key=lambda r: (len(r.sequence), r.protein_id))[:8]
    rng = np.random.default_rng(0)
    return [protein_graph(r, rng.standard_normal((len(r.sequence), len(SLOTS), ESM_DIM)).astype(np.float32)) for r in records]


def _cfg(**overrides) -> dict:
    return {"hidden_dim": 16, "vector_dim": 4, "num_layers": 3, "knn": 8, "dropout": 0.0, "esm_layers": None, **overrides}


def _build(fusion: str, task: str = "residue_binary", **overrides):
    torch.manual_seed(0)
    cfg = _cfg(**overrides)
    return build_model("gvp", fusion, task, cfg, FusionContext.of(cfg, ESM_DIM, ESM_DEPTH, SLOTS), TASK_OPTIONS.get(task))


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_batch_order_and_company_do_not_change_a_proteins_output(fusion, graphs):
    """No information crosses between proteins (attention masks, token pooling, kNN edges)."""
    fusion_module = _build(fusion).fusion.eval()
    order = [5, 7, 0, 3, 6, 1, 4, 2]
    with torch.no_grad():
        forward = collate(graphs, CPU)
        shuffled = collate([graphs[i] for i in order], CPU)
        by_protein = fusion_module(forward).split(forward.ptr.diff().tolist())
        shuffled_parts = fusion_module(shuffled).split(shuffled.ptr.diff().tolist())
        alone = fusion_module(collate(graphs[2:3], CPU))
    for position, i in enumerate(order):
        torch.testing.assert_close(shuffled_parts[position], by_protein[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, by_protein[2], atol=1e-5, rtol=1e-5)


def test_seq_only_has_no_encoder_and_ignores_coordinates(graphs):
    fusion_module = _build("seq_only").fusion.eval()
    assert not any(isinstance(m, StructureEncoder) for m in fusion_module.modules())
    batch = collate(graphs[:3], CPU)
    with torch.no_grad():
        base = fusion_module(batch)
        batch.coords = torch.randn_like(batch.coords) * 50
        batch.ligand_pos = torch.randn(4, 3)
        torch.testing.assert_close(fusion_module(batch), base)


@pytest.mark.parametrize("fusion", ["cross", "bihmf_global"])
def test_attention_width_not_divisible_by_heads_is_a_clear_error(fusion):
    with pytest.raises(ValueError, match="divisible by its 4 heads"):
        _build(fusion, hidden_dim=18)
