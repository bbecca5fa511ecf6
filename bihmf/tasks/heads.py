"""Protein-level readouts: how a graph task turns the final residue states into its outputs.

``mean_attention`` is ours (docs/paper.md choice 4) and the default. The others are the
readouts the encoders' authors trained on the benchmarks their papers report, so that a
``struct_only`` row can be trained as its source trained it. ``recipe: published`` selects them
through ``model.readout`` per (benchmark, encoder) in ``bihmf/data/recipes.yaml``
(docs/encoders.md, "Heads"); every fusion of that encoder then uses the same readout, so
fusions stay comparable with each other.

Each entry builds ``(pool, mlp)``: ``pool`` maps residue states [N, width] to one vector per
protein, ``mlp`` that vector to ``out_dim`` values; the last module of ``mlp`` is a Linear.

* ``atom3d_gvp``: drorlab/gvp-pytorch ``gvp/atom3d.py`` ``BaseModel`` (the model of every ATOM3D
  task, PSR and LBA included): mean over nodes, then Linear(w, 2w), ReLU, Dropout(0.1),
  Linear(2w, out). Its nodes are atoms, ligand atoms included; ours are the residues a fusion
  returns, so ligand atoms reach the pool only through the residues they message.
* ``pronet``: the release's readout (DIG ``ProNet.forward``, ``out_layers=2``): sum over nodes,
  then Linear(w, w), ReLU, Dropout(the model's dropout), Linear(w, out).
* ``gearnet_psr`` / ``gearnet_fold``: torchdrug's ``PropertyPrediction`` head as GearNet's
  configs set it: ``readout: sum``, then ``layers.MLP(w, [w, w, out])`` (Linear, [BatchNorm],
  ReLU, [Dropout] per hidden layer): without batch norm or dropout for PSR (ESM-GearNet
  ``config/PSR/gearnet.yaml``), with batch norm and dropout 0.5 for fold / reaction
  classification (GearNet ``config/downstream/Fold3D``). GearNet's configs also concatenate
  every layer's states (``concat_hidden``) before the sum; fusions return the last layer's, so
  that is not reproduced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

DEFAULT_READOUT = "mean_attention"
READOUT_OPTION = "readout"  # the key under which build_model hands a graph head its readout
ATOM3D_DROPOUT = 0.1  # gvp-pytorch atom3d.py BaseModel.dense: nn.Dropout(p=0.1)
GEARNET_FOLD_DROPOUT = 0.5  # GearNet Fold3D configs: mlp_dropout 0.5


class MeanAttentionPool(nn.Module):
    """Mean and learned attention pooling over residues, concatenated: [N, w] -> [proteins, 2w]."""

    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        batch, size = graph.batch, graph.num_graphs
        mean = scatter(residues, batch, dim=0, dim_size=size, reduce="mean")
        weights = softmax(self.score(residues).squeeze(-1), batch, num_nodes=residues.shape[0])
        attended = scatter(weights.unsqueeze(-1) * residues, batch, dim=0, dim_size=size, reduce="sum")
        return torch.cat([mean, attended], dim=-1)


class NodePool(nn.Module):
    """Sum or mean of the residue states of each protein: [N, w] -> [proteins, w]."""

    def __init__(self, reduce: str):
        super().__init__()
        self.reduce = reduce

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        return scatter(residues, graph.batch, dim=0, dim_size=graph.num_graphs, reduce=self.reduce)

    def extra_repr(self) -> str:
        return f"reduce={self.reduce}"


def mlp(width: int, hidden: list[int], out_dim: int, dropout: float, batch_norm: bool = False) -> nn.Sequential:
    """Linear, [BatchNorm], ReLU, [Dropout] per hidden layer, then a Linear to ``out_dim``
    (the order of torchdrug's layers.MLP, and of the other references' two-layer heads)."""
    modules: list[nn.Module] = []
    for fan_in, fan_out in zip([width, *hidden], hidden):
        modules += [nn.Linear(fan_in, fan_out), *([nn.BatchNorm1d(fan_out)] if batch_norm else []), nn.ReLU()]
        modules += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*modules, nn.Linear(([width, *hidden])[-1], out_dim))


Readout = Callable[[int, int, float], tuple[nn.Module, nn.Sequential]]


def _mean_attention(width: int, out_dim: int, dropout: float) -> tuple[nn.Module, nn.Sequential]:
    pool = MeanAttentionPool(width)
    return pool, nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, out_dim))


def _atom3d_gvp(width: int, out_dim: int, dropout: float) -> tuple[nn.Module, nn.Sequential]:
    return NodePool("mean"), mlp(width, [2 * width], out_dim, ATOM3D_DROPOUT)


def _pronet(width: int, out_dim: int, dropout: float) -> tuple[nn.Module, nn.Sequential]:
    return NodePool("sum"), mlp(width, [width], out_dim, dropout)


def _gearnet_psr(width: int, out_dim: int, dropout: float) -> tuple[nn.Module, nn.Sequential]:
    return NodePool("sum"), mlp(width, [width, width], out_dim, 0.0)


def _gearnet_fold(width: int, out_dim: int, dropout: float) -> tuple[nn.Module, nn.Sequential]:
    return NodePool("sum"), mlp(width, [width, width], out_dim, GEARNET_FOLD_DROPOUT, batch_norm=True)


READOUTS: dict[str, Readout] = {
    DEFAULT_READOUT: _mean_attention,
    "atom3d_gvp": _atom3d_gvp,
    "pronet": _pronet,
    "gearnet_psr": _gearnet_psr,
    "gearnet_fold": _gearnet_fold,
}
