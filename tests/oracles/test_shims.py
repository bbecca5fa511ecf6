"""The torch_scatter stand-in reduces as the extension does (checked against PyG's scatter)."""

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
