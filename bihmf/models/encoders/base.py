"""The interface every structure encoder offers to the fusion strategies.

Fusion needs to step through the GNN one layer at a time and read / replace the per-residue
scalar state in between, so an encoder is not a single ``forward`` but:

``prepare(graph, node_input)``  -> state before the first layer (node_input: [N, F] scalars)
``layer(depth, state)``          -> state after GNN layer ``depth`` (0-based)
``state.s``                      -> per-residue invariant features [N, width]
``state.with_scalar(s)``         -> the same state with its scalar channels replaced
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class EncoderState:
    """Residue states plus whatever graph tensors the encoder carries between layers."""

    s: Tensor  # [N, width] rotation-invariant scalars: the channels fusion reads and writes
    extra: dict[str, Any]  # encoder-specific (vector channels, edges, edge features)

    def with_scalar(self, s: Tensor) -> "EncoderState":
        return replace(self, s=s)


class StructureEncoder(nn.Module):
    """Base class: subclasses set ``width`` and ``num_layers`` and implement the two steps."""

    width: int
    num_layers: int

    def prepare(self, graph: Any, node_input: Tensor) -> EncoderState:
        raise NotImplementedError

    def layer(self, depth: int, state: EncoderState) -> EncoderState:
        raise NotImplementedError
