"""The torch_scatter stand-in reduces as the extension does (checked against PyG's scatter)."""

import pytest
import torch
from torch_geometric.utils import scatter as pyg_scatter

import oracle_shims as shims


def test_scatter_reductions_match_pyg():
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    index = torch.tensor([0, 2, 2, 1, 0, 4, 4, 4, 1, 0, 2, 4])
    for reduce in ("sum", "mean", "max", "min"):
        ours = shims.scatter(src, index, dim=0, dim_size=6, reduce=reduce)
        theirs = pyg_scatter(src, index, dim=0, dim_size=6, reduce=reduce)
        assert torch.equal(ours, theirs), reduce


def test_softmax_sums_to_one_per_group():
    src = torch.randn(9, 3, dtype=torch.float64)
    index = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3])
    weights = shims.scatter_softmax(src, index, dim=0)
    totals = shims.scatter(weights, index, dim=0, reduce="sum")
    assert torch.allclose(totals, torch.ones_like(totals))


def test_log_softmax_is_the_log_of_softmax():
    src = torch.randn(9, 3, dtype=torch.float64) * 30
    index = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3])
    torch.testing.assert_close(shims.scatter_log_softmax(src, index, dim=0), shims.scatter_softmax(src, index, dim=0).log())


def test_knn_and_radius_stand_ins_follow_torch_cluster_layout():
    """Row 0 the neighbour, row 1 the centre; no self pairs; no pairs across graphs."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(14, 3, generator=generator, dtype=torch.float64) * 10
    batch = torch.tensor([0] * 8 + [1] * 6)
    knn = shims.knn_graph(x, 3, batch)
    for centre in range(14):
        mine = (batch == batch[centre]).nonzero().flatten().tolist()
        expected = sorted((m for m in mine if m != centre), key=lambda m: float((x[m] - x[centre]).norm()))[:3]
        assert sorted(knn[0, knn[1] == centre].tolist()) == sorted(expected)
    radius = shims.radius_graph(x, 4.0, batch)
    pairs = {(a, b) for a in range(14) for b in range(14)
             if a != b and batch[a] == batch[b] and float((x[a] - x[b]).norm()) < 4.0}
    assert set(zip(radius[0].tolist(), radius[1].tolist())) == pairs


def test_radius_stand_in_refuses_to_choose_among_too_many_neighbours():
    x = torch.zeros(5, 3, dtype=torch.float64) + torch.arange(5, dtype=torch.float64)[:, None] * 0.1
    with pytest.raises(ValueError, match="above max_num_neighbors=2"):
        shims.radius_graph(x, 1.0, max_num_neighbors=2)
