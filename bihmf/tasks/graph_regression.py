"""Protein-level regression (PSR: GDT_TS per decoy; LBA: -log affinity).

The head predicts a standardised value (train-set mean/std kept as buffers, so a saved
model predicts in the original units). Metrics: RMSE, Pearson, Spearman, Kendall over the
pooled split, and, when proteins carry a group (PSR target), the unweighted per-group means
(ATOM3D's "mean per-target" correlations) with the number of groups that counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bihmf.tasks.metrics import GROUP_MEAN_PREFIX, METRICS, group_mean
from bihmf.tasks.pooling import GraphHead, one_row_per_graph

log = logging.getLogger(__name__)

SELECTION_METRIC = "spearman"
POOLED = ("rmse", "pearson", "spearman", "kendall")
PER_GROUP = ("pearson", "spearman", "kendall")
OPTIONS: tuple[str, ...] = ()
PER_RESIDUE = False
prediction_owners = one_row_per_graph


class Head(GraphHead):
    def __init__(self, width: int, dropout: float, options: dict[str, Any]):
        super().__init__(width, 1, dropout, options)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        return super().forward(residues, graph).squeeze(-1)


def prepare(head: nn.Module, train_targets: np.ndarray) -> None:
    """Fit the standardisation on the training targets only."""
    if not np.isfinite(train_targets).all():
        raise ValueError("graph_regression: non-finite training targets")
    head.target_mean.fill_(float(train_targets.mean()))
    head.target_std.fill_(float(train_targets.std()) or 1.0)


def loss(output: Tensor, graph: Any, head: nn.Module) -> Tensor:
    """MSE in standardised units, so the loss scale does not depend on the target's units."""
    return F.mse_loss(output, (graph.target - head.target_mean) / head.target_std)


def predictions(output: Tensor, graph: Any, head: nn.Module) -> dict[str, Any]:
    return {
        "pred": (output * head.target_std + head.target_mean).float().cpu().numpy(),
        "label": graph.target.cpu().numpy(),
        "group": list(graph.group),
    }


def outputs(output: Tensor, graph: Any, head: nn.Module) -> list[float]:
    """Values in the target's units (the head's training standardisation undone), one per protein."""
    return predictions(output, graph, head)["pred"].tolist()


def output_columns(value: float) -> dict[str, Any]:
    return {"prediction": float(value)}


def _defined(compute: Callable[[], Any]) -> Any:
    """A metric's value, or None where it is undefined.

    Correlations are undefined for constant predictions, which is a legitimate outcome: a
    sequence-only model gives every decoy of a PSR target the same score. That is reported as
    a missing value (null in metrics.json, "—" in tables), never as a crash or a made-up 0.
    """
    try:
        return compute()
    except ValueError as err:
        log.warning("metric undefined: %s", err)
        return None


def evaluate(parts: list[dict[str, Any]]) -> dict[str, float | None]:
    label = np.concatenate([p["label"] for p in parts])
    pred = np.concatenate([p["pred"] for p in parts])
    groups = [g for p in parts for g in p["group"]]
    result = {name: _defined(lambda name=name: METRICS[name].fn(label, pred)) for name in POOLED}
    if any(groups):
        for name in PER_GROUP:
            mean_and_count = _defined(lambda name=name: group_mean(name, label, pred, groups))
            result[f"{GROUP_MEAN_PREFIX}{name}"], result["n_groups"] = mean_and_count or (None, 0)
    return result
