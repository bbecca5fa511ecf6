"""Parallel fusion (ESM-GearNet "parallel"): independent branches joined per residue at the end.

    h_i = GNN(one-hot residue types)_i          structure branch, all L layers
    m_i = MLP(LN(e_{D,i}))                      sequence branch, final ESM layer
    out_i = W [h_i ; m_i] + b                   concatenation, projected back to width C

ESM-GearNet keeps the concatenation (width = sum of the parts); here it is projected to C so
every fusion hands the task head the same width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bihmf.models.fusion.base import NUM_RESIDUE_TYPES, EncoderFactory, Fusion, FusionContext, esm_mlp, residue_one_hot
from bihmf.models.fusion.layers import LayerChoice


class Parallel(Fusion):
    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext):
        super().__init__()
        self.encoder = encoder_factory(NUM_RESIDUE_TYPES)
        self.width = width = self.encoder.width
        self.slot = context.slot(context.layers.esm_depth)
        self.sequence = esm_mlp(context.esm_dim, width)
        self.combine = nn.Linear(2 * width, width)

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        return [choice.esm_depth]

    def forward(self, graph: Any) -> Tensor:
        state = self.encoder.prepare(graph, residue_one_hot(graph))
        for depth in range(self.encoder.num_layers):
            state = self.encoder.layer(depth, state)
        return self.combine(torch.cat([state.s, self.sequence(graph.esm[:, self.slot])], dim=-1))
