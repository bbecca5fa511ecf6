"""Serial fusion (ESM-GearNet): the final ESM layer, normalised, is the GNN's node input."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bihmf.models.fusion.base import NUM_RESIDUE_TYPES, EncoderFactory, Fusion, FusionContext, residue_one_hot
from bihmf.models.fusion.layers import LayerChoice


class Serial(Fusion):
    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext):
        super().__init__()
        self.slot = context.slot(context.layers.esm_depth)
        self.esm_norm = nn.LayerNorm(context.esm_dim)
        self.encoder = encoder_factory(NUM_RESIDUE_TYPES + context.esm_dim)
        self.width = self.encoder.width

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        return [choice.esm_depth]

    def forward(self, graph: Any) -> Tensor:
        node_input = torch.cat([residue_one_hot(graph), self.esm_norm(graph.esm[:, self.slot])], dim=-1)
        state = self.encoder.prepare(graph, node_input)
        for depth in range(self.encoder.num_layers):
            state = self.encoder.layer(depth, state)
        return state.s
