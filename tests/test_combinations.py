"""Every encoder x fusion x task the benchmark can train, on real fixture proteins: it builds,
gradients reach exactly the declared ESM layers and the structure, and it memorises 8 proteins.

Graph regression runs on LBA pocket graphs with their real ligands, so ligand nodes are part of
every combination's check; the other tasks run on PPBS demo chains.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bihmf.data.ppbs import parse
from bihmf.models.encoders import ENCODERS, StructureEncoder
from bihmf.models.fusion import FUSIONS, FusionContext, LayerChoice, layers_read
from bihmf.models.model import build_model
from bihmf.tasks import TASKS
from bihmf.batching import collate, protein_graph

ESM_DIM, ESM_DEPTH = 16, 6
# Layer 3 is cached but unpaired for 3 GNN layers ([2, 4, 6]), so a fusion reading a layer it
# does not declare is caught.
SLOTS = (2, 3, 4, 6)  # the cached layers: slots of graph.esm
NUM_CLASSES = 5
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_thread")
CROP = 48  # residues kept per protein in the memorisation runs


def _combinations() -> list[tuple[str, str]]:
    """seq_only has no structure encoder, so it is one combination, not one per encoder."""
    first = sorted(ENCODERS)[0]
    return [(e, f) for f in sorted(FUSIONS) for e in sorted(ENCODERS) if f != "seq_only" or e == first]


COMBINATIONS = _combinations()


def _with_esm(records, crop: int | None) -> list:
    rng = np.random.default_rng(0)
    graphs = []
    for r in records:
        if crop is not None:
            r = dataclasses.replace(
                r, sequence=r.sequence[:crop], chain_ids=r.chain_ids[:crop], resnums=r.resnums[:crop],
                icodes=r.icodes[:crop], coords=r.coords[:crop], labels=r.labels[:crop],
            )
        esm = rng.standard_normal((len(r.sequence), len(SLOTS), ESM_DIM)).astype(np.float32)
        residues = "pocket" if r.ligand_xyz.size else "all"
        graphs.append(protein_graph(r, esm, residues))
    return graphs


@pytest.fixture(scope="module")
def chains(demo_raw, demo_spec):
    """The 8 smallest demo chains (99 to 190 residues)."""
    records, _ = parse(demo_raw, demo_spec)
    return sorted(records, key=lambda r: (len(r.sequence), r.protein_id))[:8]


@pytest.fixture(scope="module")
def full_graphs(chains, lba_records):
    return {"chains": _with_esm(chains[:3], None), "complexes": _with_esm(lba_records[:3], None)}


@pytest.fixture(scope="module")
def cropped_graphs(chains, lba_records):
    return {"chains": _with_esm(chains, CROP), "complexes": _with_esm(lba_records[:8], None)}


def _batch(graphs: dict, task: str):
    """Graph-level targets are set per protein so 8 proteins carry distinct labels."""
    batch = collate(graphs["complexes" if task == "graph_regression" else "chains"], CPU)
    n = batch.num_graphs
    if task == "graph_classification":
        batch.target = (torch.arange(n) % NUM_CLASSES).float()
    return batch


def _build(encoder: str, fusion: str, task: str, batch, **sizes):
    torch.manual_seed(0)
    cfg = {"hidden_dim": 16, "vector_dim": 4, "num_layers": 3, "knn": 8, "dropout": 0.0, "esm_layers": None, **sizes}
    options = {"num_classes": NUM_CLASSES} if task == "graph_classification" else None
    model = build_model(encoder, fusion, task, cfg, FusionContext.of(cfg, ESM_DIM, ESM_DEPTH, SLOTS), options)
    TASKS[task].prepare(model.head, batch.target.numpy().astype(float))
    return model


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize(("encoder", "fusion"), COMBINATIONS)
def test_forward_backward_reaches_declared_inputs(encoder, fusion, task, full_graphs):
    batch = _batch(full_graphs, task)
    model = _build(encoder, fusion, task, batch)
    batch.esm.requires_grad_(True)
    batch.coords.requires_grad_(True)
    TASKS[task].loss(model(batch), batch, model.head).backward()

    declared = {SLOTS.index(layer) for layer in layers_read(fusion, LayerChoice(3, ESM_DEPTH))}
    for slot in range(len(SLOTS)):
        reached = batch.esm.grad is not None and bool(batch.esm.grad[:, slot].abs().sum() > 0)
        assert reached == (slot in declared), f"ESM slot {slot}: gradient {reached}, declared {slot in declared}"
    encoders = [m for m in model.modules() if isinstance(m, StructureEncoder)]
    if fusion == "seq_only":
        assert not encoders and batch.coords.grad is None, "seq_only must not read the structure"
    else:
        # GearNet sees geometry only through its graph's topology, so coordinates may get no
        # gradient; every encoder's own weights must.
        assert sum(float(p.grad.abs().sum()) for e in encoders for p in e.parameters() if p.grad is not None) > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize(("encoder", "fusion"), COMBINATIONS)
def test_overfits_eight_proteins(encoder, fusion, task, cropped_graphs):
    """The training loss on 8 real proteins falls by >= 90 % within 200 full-batch Adam steps
    (the train stage's gradient clipping at 1.0); the loop stops once the target is reached."""
    batch = _batch(cropped_graphs, task)
    model = _build(encoder, fusion, task, batch, hidden_dim=32, num_layers=2, knn=6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses: list[float] = []
    while len(losses) < 200 and (not losses or losses[-1] > 0.1 * losses[0]):
        optimizer.zero_grad()
        loss = TASKS[task].loss(model(batch), batch, model.head)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], f"loss only fell from {losses[0]:.3f} to {losses[-1]:.3f} in {len(losses)} steps"
