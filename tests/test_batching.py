"""The training data path: batched edges equal the per-protein ones, batches keep float16 rows
until the device, and the background producer keeps order and names failing proteins."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from bench.old_path import per_protein_knn_edges, per_protein_radius_edges
from bihmf.batching import assemble, to_device
from bihmf.loader import BatchError, device_batches, prefetched
from bihmf.models import graph as graph_module
from bihmf.models.graph import PADDING_SLACK, knn_edges, length_groups, radius_edges


def _random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Residues of a few proteins of random lengths, then ligand atoms of random proteins
    (unsorted, as the encoders pass them), at coordinates of ~100 Å."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 300, (int(torch.randint(1, 10, (1,), generator=g)),), generator=g)
    residues = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    ligands = torch.randint(0, len(sizes), (int(torch.randint(0, 30, (1,), generator=g)),), generator=g).sort().values
    batch = torch.cat([residues, ligands])
    return torch.randn(len(batch), 3, generator=g) * 15 + torch.randn(3, generator=g) * 100, batch


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block", [1024, 40])
def test_batched_radius_edges_equal_the_per_protein_loop(seed, block):
    pos, batch = _random_batch(seed)
    assert torch.equal(radius_edges(pos, batch, 8.0, block), per_protein_radius_edges(pos, batch, 8.0, block))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block", [1024, 40])
def test_batched_knn_edges_equal_the_per_protein_loop(seed, block):
    """Same targets in the same order and the same neighbour sets; the order within one
    target's neighbours may differ only where two distances tie to float precision."""
    pos, batch = _random_batch(seed)
    new, old = knn_edges(pos, batch, 16, block), per_protein_knn_edges(pos, batch, 16, block)
    assert torch.equal(new[1], old[1])
    assert sorted(map(tuple, new.T.tolist())) == sorted(map(tuple, old.T.tolist()))


def test_small_proteins_connect_to_all_others_and_singletons_to_none():
    pos = torch.randn(6, 3)
    batch = torch.tensor([0, 0, 0, 1, 2, 2])
    edges = knn_edges(pos, batch, 16)
    assert sorted(map(tuple, edges.T.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (4, 5), (5, 4)]
    assert knn_edges(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 4).shape == (2, 0)


def test_a_long_protein_is_cut_into_row_blocks(monkeypatch):
    sizes = []
    real = torch.cdist
    monkeypatch.setattr(graph_module.torch, "cdist", lambda a, b, **kw: sizes.append(a.shape[:2] + b.shape[1:2]) or real(a, b, **kw))
    pos = torch.randn(2000, 3) * 30
    knn_edges(pos, torch.zeros(2000, dtype=torch.long), 8, block=128)
    assert len(sizes) == 16 and all(p * rows * cols <= 128 * 2000 for p, rows, cols in sizes)


def test_length_groups_bound_the_padding():
    counts = [300, 20, 280, 150, 0, 140, 5, 299]
    groups = length_groups(counts)
    assert sorted(p for g in groups for p in g) == [0, 1, 2, 3, 5, 6, 7]  # the empty protein 4 is left out
    for group in groups:
        longest = max(counts[p] for p in group)
        assert len(group) * longest**2 <= PADDING_SLACK * sum(counts[p] ** 2 for p in group)
    assert len(groups) < len(counts) - 1


def _graph(n: int, esm_dtype: torch.dtype) -> Data:
    return Data(
        residue_type=torch.zeros(n, dtype=torch.long), coords=torch.randn(n, 5, 3), chain=torch.zeros(n, dtype=torch.long),
        ligand_pos=torch.zeros(0, 3), esm=torch.randn(n, 2, 4).to(esm_dtype), num_nodes=n,
    )


def test_rows_stay_float16_until_the_device():
    graphs = [_graph(3, torch.float16), _graph(4, torch.float16)]
    batch = assemble(graphs)
    assert batch.esm.dtype == torch.float16 and batch.chain_index.tolist() == [0, 0, 0, 1 << 16, 1 << 16, 1 << 16, 1 << 16]
    moved = to_device(batch, torch.device("cpu"))
    assert moved.esm.dtype == torch.float32
    assert torch.equal(moved.esm, torch.cat([g.esm for g in graphs]).float())


def test_producer_keeps_the_order_and_prepares_ahead():
    graphs = [_graph(n, torch.float16) for n in (2, 3, 4, 5)]
    batches = [[0, 1], [2], [3]]
    got = list(device_batches(batches, lambda ids: [graphs[i] for i in ids], lambda ids: [str(i) for i in ids], torch.device("cpu")))
    assert [ids for ids, _ in got] == batches
    assert [b.num_nodes for _, b in got] == [5, 4, 5] and all(b.esm.dtype == torch.float32 for _, b in got)


def test_producer_failure_names_the_proteins():
    def prepare(ids: list[int]) -> list[int]:
        if 7 in ids:
            raise ValueError("broken rows")
        return ids

    items = prefetched([[1, 2], [7, 8]], prepare, lambda ids: [f"p{i}" for i in ids], depth=2)
    assert next(items) == ([1, 2], [1, 2])
    with pytest.raises(BatchError, match=r"proteins \['p7', 'p8'\] failed: broken rows"):
        next(items)


def test_a_consumer_that_stops_early_stops_the_producer():
    before = threading.active_count()
    items = prefetched([[i] for i in range(100)], lambda ids: np.zeros(10), lambda ids: [], depth=1)
    next(items)
    items.close()
    assert threading.active_count() == before


def test_the_producer_prepares_the_next_epoch_before_the_consumer_reaches_it():
    """A lazy item list spanning epochs: while the consumer holds the last batch of epoch 1
    (its step, then validation), the first batches of epoch 2 are already prepared."""
    epochs = {1: [[0], [1]], 2: [[2], [3]]}
    prepared: list[int] = []
    done = threading.Event()

    def prepare(ids: list[int]) -> list[int]:
        prepared.extend(ids)
        if len(prepared) == 4:
            done.set()
        return ids

    items = prefetched((ids for epoch in (1, 2) for ids in epochs[epoch]), prepare, lambda ids: [], depth=2)
    assert [next(items)[0], next(items)[0]] == epochs[1]
    assert done.wait(timeout=10)
    assert prepared == [0, 1, 2, 3]
    assert list(ids for ids, _ in items) == epochs[2]


def test_a_failing_item_list_is_raised_as_itself():
    def plans():
        yield [0]
        raise ValueError("protein p9 has 900 residues, more than train.residue_budget=500")

    items = prefetched(plans(), lambda ids: ids, lambda ids: [], depth=2)
    assert next(items) == ([0], [0])
    with pytest.raises(ValueError, match="p9 has 900 residues"):
        next(items)
