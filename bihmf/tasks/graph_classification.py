"""Protein-level classification (react: 384 EC classes): cross-entropy, top-1 accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bihmf.tasks.metrics import accuracy
from bihmf.tasks.pooling import GraphHead, one_row_per_graph

SELECTION_METRIC = "accuracy"
OPTIONS = ("num_classes",)
PER_RESIDUE = False
prediction_owners = one_row_per_graph


class Head(GraphHead):
    def __init__(self, width: int, dropout: float, options: dict[str, Any]):
        if not options.get("num_classes"):
            raise ValueError("graph_classification needs the dataset's num_classes in the config")
        super().__init__(width, int(options["num_classes"]), dropout, options)


def prepare(head: nn.Module, train_targets: np.ndarray) -> None:
    """Class indices must fit the head: a label outside it would only fail later, obscurely."""
    classes = head.mlp[-1].out_features
    bad = train_targets[(train_targets < 0) | (train_targets >= classes) | (train_targets != np.round(train_targets))]
    if bad.size:
        raise ValueError(f"class labels {sorted(set(bad.tolist()))[:10]} are not integers in [0, {classes})")


def loss(logits: Tensor, graph: Any, head: nn.Module) -> Tensor:
    return F.cross_entropy(logits, graph.target.long())


def predictions(logits: Tensor, graph: Any, head: nn.Module) -> dict[str, np.ndarray]:
    return {"pred": logits.argmax(-1).cpu().numpy(), "label": graph.target.cpu().numpy()}


def evaluate(parts: list[dict[str, np.ndarray]]) -> dict[str, float]:
    return {"accuracy": accuracy(np.concatenate([p["label"] for p in parts]), np.concatenate([p["pred"] for p in parts]))}


def outputs(logits: Tensor, graph: Any, head: nn.Module) -> list[np.ndarray]:
    """Class probabilities, one row per protein."""
    return list(torch.softmax(logits.float(), dim=-1).cpu().numpy())


def output_columns(probabilities: np.ndarray) -> dict[str, Any]:
    return {
        "predicted_class": int(probabilities.argmax()),
        "probability": float(probabilities.max()),
        **{f"p_{k}": float(p) for k, p in enumerate(probabilities)},
    }
