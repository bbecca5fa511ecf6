"""Per-residue binary classification (PPBS binding sites, BCE epitopes).

Loss: binary cross-entropy over labelled residues (label >= 0), each residue weighted by its
protein's sample weight, as ScanNet weights chains. Metrics: ScanNet's weighted AUPRC and
ROC-AUC on the pooled residues of a split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bihmf.tasks.metrics import METRICS

OPTIONS: tuple[str, ...] = ()
PER_RESIDUE = True


class Head(nn.Module):
    """MLP on each residue's final state -> one logit."""

    def __init__(self, width: int, dropout: float, options: dict[str, Any]):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1))

    def forward(self, residues: Tensor, graph: Any) -> Tensor:
        return self.mlp(residues).squeeze(-1)


def loss(logits: Tensor, graph: Any, head: nn.Module) -> Tensor:
    """Sample-weighted BCE over labelled residues (label -1 is ignored)."""
    mask = graph.y >= 0
    weights = graph.residue_weight[mask]
    per_residue = F.binary_cross_entropy_with_logits(logits[mask], graph.y[mask].float(), reduction="none")
    return (per_residue * weights).sum() / weights.sum().clamp_min(1e-12)


def predictions(logits: Tensor, graph: Any, head: nn.Module) -> dict[str, np.ndarray]:
    """What evaluation keeps of a batch: scores, labels and weights of labelled residues."""
    mask = graph.y >= 0
    return {
        "score": torch.sigmoid(logits[mask].float()).cpu().numpy(),
        "label": graph.y[mask].cpu().numpy(),
        "weight": graph.residue_weight[mask].cpu().numpy(),
    }


def prediction_owners(graph: Any) -> np.ndarray:
    """The graph of the batch each row of :func:`predictions` belongs to (its labelled residues)."""
    return graph.batch[graph.y >= 0].cpu().numpy()


def prepare(head: nn.Module, train_targets: np.ndarray) -> None:
    """Residue labels need no fitting (protein-level targets are unused here)."""


def evaluate(parts: list[dict[str, np.ndarray]], metric_names: tuple[str, ...] = ("auprc", "roc_auc")) -> dict[str, float]:
    """Pooled metrics over every residue of the given batches."""
    score = np.concatenate([p["score"] for p in parts])
    label = np.concatenate([p["label"] for p in parts])
    weight = np.concatenate([p["weight"] for p in parts])
    return {name: float(METRICS[name].fn(label, score, sample_weight=weight)) for name in metric_names}


def outputs(logits: Tensor, graph: Any, head: nn.Module) -> list[np.ndarray]:
    """Binding/epitope probability of every residue (labelled or not), one array per protein."""
    scores = torch.sigmoid(logits.float()).cpu().numpy()
    return np.split(scores, graph.ptr[1:-1].cpu().numpy())


def output_columns(score: float) -> dict[str, Any]:
    return {"score": float(score)}


SELECTION_METRIC = "auprc"
