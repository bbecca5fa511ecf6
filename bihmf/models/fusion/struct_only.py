"""Structure-only control: the GNN on one-hot residue types, no language model."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from bihmf.models.fusion.base import NUM_RESIDUE_TYPES, EncoderFactory, Fusion, FusionContext, residue_one_hot
from bihmf.models.fusion.layers import LayerChoice


class StructOnly(Fusion):
    is_reference = True

    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext):
        super().__init__()
        self.encoder = encoder_factory(NUM_RESIDUE_TYPES)
        self.width = self.encoder.width

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        return []

    def forward(self, graph: Any) -> Tensor:
        state = self.encoder.prepare(graph, residue_one_hot(graph))
        for depth in range(self.encoder.num_layers):
            state = self.encoder.layer(depth, state)
        return state.s
