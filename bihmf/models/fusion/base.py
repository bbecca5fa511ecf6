"""The fusion interface: how the cached ESM layers and the structure encoder are combined.

A fusion owns its encoder (built by the factory it is given, with the node-input width it
needs) and maps a batch to per-residue states [N, width]. It also declares which ESM layers
it reads, so the embed stage caches exactly what the configured fusions need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from bihmf.models.encoders import StructureEncoder

NUM_RESIDUE_TYPES = 21  # 20 standard amino acids + X

EncoderFactory = Callable[[int], StructureEncoder]  # node-input width -> encoder


def paired_layers(num_gnn_layers: int, esm_depth: int, explicit: list[int] | None = None) -> list[int]:
    """ESM layer k_l read at GNN depth l (paper.md choice 2): round(l * D / L), or the explicit list."""
    if explicit is not None:
        if len(explicit) != num_gnn_layers or max(explicit) > esm_depth:
            raise ValueError(
                f"model.esm_layers={explicit} must list {num_gnn_layers} layers, each <= the ESM depth {esm_depth}"
            )
        return list(explicit)
    return [int(l * esm_depth / num_gnn_layers + 0.5) for l in range(1, num_gnn_layers + 1)]


@dataclass(frozen=True)
class FusionContext:
    """What a fusion needs to know about the embedding cache it will read."""

    esm_dim: int
    cache_layers: tuple[int, ...]  # layer number of each slot of graph.esm [N, slots, D]
    esm_depth: int
    explicit_layers: list[int] | None = None

    def slot(self, layer: int) -> int:
        if layer not in self.cache_layers:
            raise ValueError(f"ESM layer {layer} is not in the embedding cache (cached: {list(self.cache_layers)})")
        return self.cache_layers.index(layer)


def residue_one_hot(graph: Any) -> Tensor:
    return F.one_hot(graph.residue_type, NUM_RESIDUE_TYPES).float()


class Fusion(nn.Module):
    """Base class; subclasses implement ``forward(graph) -> [N, width]`` and ``esm_layers``."""

    width: int

    @staticmethod
    def esm_layers(num_gnn_layers: int, esm_depth: int, explicit: list[int] | None = None) -> list[int]:
        raise NotImplementedError
